"""Mesh extraction: activated density on a regular grid over [-1, 1]^3 -> marching cubes -> trimesh.

Grid vertex (a, b, c) of an n^3 grid sits at -1 + 2 * (a, b, c) / (n - 1); the surface is the
level set density = 1.0 (DESIGN.md). The grid is evaluated in slabs of x so memory stays bounded
(the grid itself is n^3 float32: 64 MiB at 256, 512 MiB at 512). Vertex colours are queried from
the same field at the mesh vertices. Coordinates stay in the project's z-up world frame.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import mcubes
import numpy as np
import torch
import trimesh

PointFn = Callable[[torch.Tensor], torch.Tensor]  # points [P, 3] -> values [P, K]
MESH_FORMATS = ("glb", "obj", "ply")


class EmptyMeshError(ValueError):
    """The density never crosses the iso level inside the box, so there is no surface."""


def grid_coordinates(resolution: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """[n] coordinates -1 + 2 i / (n - 1) shared by the three axes."""
    return torch.linspace(-1.0, 1.0, resolution, device=device)


@torch.no_grad()
def density_grid(density_fn: PointFn, resolution: int, chunk_points: int = 1 << 18,
                 device: torch.device | str = "cpu") -> np.ndarray:
    """Evaluate ``density_fn`` ([P, 3] -> [P, 1] or [P]) on the n^3 grid -> float32 [n, n, n] indexed [x, y, z]."""
    assert resolution >= 2, resolution
    coords = grid_coordinates(resolution, device)
    grid = np.empty((resolution, resolution, resolution), dtype=np.float32)
    slab = max(1, chunk_points // (resolution * resolution))
    yz = torch.stack(torch.meshgrid(coords, coords, indexing="ij"), -1).reshape(-1, 2)  # [n^2, 2]
    for start in range(0, resolution, slab):
        xs = coords[start:start + slab]
        points = torch.cat([xs.repeat_interleave(yz.shape[0])[:, None], yz.repeat(len(xs), 1)], dim=1)
        values = density_fn(points).reshape(len(xs), resolution, resolution)
        grid[start:start + len(xs)] = values.float().cpu().numpy()
    return grid


def marching_cubes(grid: np.ndarray, level: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Iso-surface of a [n, n, n] grid over [-1, 1]^3 -> (vertices [V, 3] world, faces [F, 3]).

    For density that is high inside, PyMCubes' winding already gives outward normals (positive volume).
    """
    n = grid.shape[0]
    assert grid.shape == (n, n, n), grid.shape
    if not (grid.min() < level < grid.max()):
        raise EmptyMeshError(f"density range [{grid.min():.4g}, {grid.max():.4g}] does not cross level {level}")
    vertices, faces = mcubes.marching_cubes(grid, level)
    vertices = -1.0 + 2.0 * vertices / (n - 1)
    return vertices.astype(np.float32), faces.astype(np.int64)


@torch.no_grad()
def vertex_colours(rgb_fn: PointFn, vertices: np.ndarray, chunk_points: int = 1 << 18,
                   device: torch.device | str = "cpu") -> np.ndarray:
    """RGBA uint8 [V, 4] from ``rgb_fn`` ([P, 3] -> [P, 3] in [0, 1]) at the vertices."""
    out = np.empty((len(vertices), 4), dtype=np.uint8)
    out[:, 3] = 255
    for start in range(0, len(vertices), chunk_points):
        pts = torch.from_numpy(vertices[start:start + chunk_points]).to(device)
        rgb = rgb_fn(pts).float().clamp(0, 1).cpu().numpy()
        out[start:start + len(pts), :3] = np.round(rgb * 255).astype(np.uint8)
    return out


def mesh_from_fields(density_fn: PointFn, rgb_fn: PointFn | None, resolution: int = 256, level: float = 1.0,
                     chunk_points: int = 1 << 18, device: torch.device | str = "cpu") -> trimesh.Trimesh:
    """Marching-cubes mesh of ``density_fn`` with optional vertex colours from ``rgb_fn``."""
    grid = density_grid(density_fn, resolution, chunk_points, device)
    vertices, faces = marching_cubes(grid, level)
    colours = vertex_colours(rgb_fn, vertices, chunk_points, device) if rgb_fn is not None else None
    return trimesh.Trimesh(vertices=vertices, faces=faces, vertex_colors=colours, process=False)


def extract_mesh(model, planes: torch.Tensor, resolution: int = 256, level: float = 1.0,
                 chunk_points: int = 1 << 18) -> trimesh.Trimesh:
    """Mesh of one object's planes [1, 3, C, H, W] through ``model.query_density``."""
    assert planes.dim() == 5 and planes.shape[:2] == (1, 3), f"planes must be [1, 3, C, H, W], got {planes.shape}"

    def density(points: torch.Tensor) -> torch.Tensor:
        return model.query_density(planes, points[None].to(planes.device))[0][0, :, 0]

    def colour(points: torch.Tensor) -> torch.Tensor:
        return model.query_density(planes, points[None].to(planes.device))[1][0]

    return mesh_from_fields(density, colour, resolution, level, chunk_points, planes.device)


def save_mesh(mesh: trimesh.Trimesh, path: str | Path) -> Path:
    """Write .glb / .obj / .ply (by suffix) with vertex colours."""
    out = Path(path)
    fmt = out.suffix.lstrip(".").lower()
    if fmt not in MESH_FORMATS:
        raise ValueError(f"unsupported mesh format {out.suffix!r}; use one of {MESH_FORMATS}")
    out.parent.mkdir(parents=True, exist_ok=True)
    mesh.export(out, file_type=fmt)
    return out
