"""Mesh extraction: activated density on a regular grid over [-1, 1]^3 -> marching cubes -> trimesh.

Grid vertex (a, b, c) of an n^3 grid sits at -1 + 2 * (a, b, c) / (n - 1); the surface is the
level set density = 1.0 (docs/lrm.md). The grid is evaluated in slabs of x so memory stays bounded
(the grid itself is n^3 float32: 64 MiB at 256, 512 MiB at 512). Vertex colours are queried from
the same field at the mesh vertices. Coordinates stay in the project's z-up world frame; writing
(and the y-up convention of the files) is ``mesh_export``.

Coarse-to-fine (``coarse_to_fine_grid``, the fast path): the density is evaluated on every
``stride``-th grid vertex first (plus the last one); coarse cells whose corner values straddle the
level, dilated by ``dilate`` cells, are evaluated at every fine vertex, and all other fine vertices
get the trilinear interpolation of the coarse corners. An interpolated cell lies entirely on one
side of the level, so it adds no surface; the surface comes from exactly evaluated vertices only.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import mcubes
import numpy as np
import torch
import torch.nn.functional as F
import trimesh

from .decoder import activate_density
from .inference import (
    BYTES_PER_POINT_EXACT,
    BYTES_PER_POINT_FUSED,
    CPU_FIELD_CHUNK,
    InferenceOptions,
    working_memory_bytes,
)
from .mesh_export import MESH_FORMATS, save_mesh  # noqa: F401  (re-exported: mesh.save_mesh is public API)

PointFn = Callable[[torch.Tensor], torch.Tensor]  # points [P, 3] -> values [P, K]


class EmptyMeshError(ValueError):
    """The density never crosses the iso level inside the box, so there is no surface."""


def grid_coordinates(resolution: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """[n] coordinates -1 + 2 i / (n - 1) shared by the three axes."""
    return torch.linspace(-1.0, 1.0, resolution, device=device)


@torch.no_grad()
def density_grid(density_fn: PointFn, resolution: int, chunk_points: int = 1 << 18,
                 device: torch.device | str = "cpu") -> np.ndarray:
    """Evaluate ``density_fn`` ([P, 3] -> [P, 1] or [P]) on the n^3 grid -> float32 [n, n, n] indexed [x, y, z]."""
    if resolution < 2:
        raise ValueError(f"grid resolution must be >= 2, got {resolution}")
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


def _coarse_indices(resolution: int, stride: int) -> np.ndarray:
    """Fine-grid indices of the coarse vertices: 0, stride, 2 stride, ... and always n - 1."""
    idx = np.arange(0, resolution, stride)
    return idx if idx[-1] == resolution - 1 else np.append(idx, resolution - 1)


def _cells_and_weights(resolution: int, coarse: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each fine index: the coarse cell it lies in (0 .. nc-2) and its position t in [0, 1] there."""
    fine = np.arange(resolution)
    cell = np.clip(np.searchsorted(coarse, fine, side="right") - 1, 0, len(coarse) - 2)
    t = (fine - coarse[cell]) / (coarse[cell + 1] - coarse[cell])
    return cell, t.astype(np.float32)


def _lerp_axis(values: torch.Tensor, axis: int, cell: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Linear interpolation along ``axis`` from coarse samples to fine indices."""
    shape = [1] * values.dim()
    shape[axis] = -1
    lo, hi = values.index_select(axis, cell), values.index_select(axis, cell + 1)
    return torch.lerp(lo, hi, t.view(shape))


@torch.no_grad()
def coarse_to_fine_grid(density_fn: PointFn, resolution: int, level: float = 1.0, stride: int = 4,
                        dilate: int = 1, chunk_points: int = 1 << 18, device: torch.device | str = "cpu",
                        stats: dict | None = None) -> np.ndarray:
    """Density on the n^3 grid (same layout as ``density_grid``), evaluated exactly only near the level.

    ``stats`` (optional) receives ``evaluated`` (density evaluations), ``vertices`` (n^3) and
    ``bounds``, the inclusive index box outside of which no grid cell crosses the level (None when
    no coarse cell straddles it).
    """
    n = resolution
    if n < 2 or stride < 1:
        raise ValueError(f"need resolution >= 2 and stride >= 1, got {n} and {stride}")
    coords = grid_coordinates(n, device)
    cidx = _coarse_indices(n, stride)
    ccoords = coords[torch.from_numpy(cidx).to(coords.device)]
    coarse = torch.from_numpy(density_grid_at(density_fn, ccoords, chunk_points))  # [nc, nc, nc]
    nc = len(cidx)
    if nc < 3:
        raise ValueError(f"stride {stride} too large for resolution {n}")
    # coarse cells whose corners straddle the level, dilated
    corners = torch.stack([coarse[a:nc - 1 + a, b:nc - 1 + b, c:nc - 1 + c]
                           for a in (0, 1) for b in (0, 1) for c in (0, 1)])
    marked = (corners.amin(0) <= level) & (corners.amax(0) >= level)
    if dilate:
        marked = F.max_pool3d(marked[None, None].float(), 2 * dilate + 1, 1, dilate)[0, 0] > 0
    # every fine cell that can cross the level lies in a marked coarse cell: their index box
    busy = marked.nonzero()
    bounds = None if not len(busy) else tuple(
        (int(cidx[int(lo)]), int(cidx[int(hi) + 1])) for lo, hi in zip(busy.amin(0), busy.amax(0), strict=True))
    cell_np, t_np = _cells_and_weights(n, cidx)
    cell, t = torch.from_numpy(cell_np), torch.from_numpy(t_np)
    # interpolate along z then y once ([nc, n, n]); along x slab by slab
    coarse_yz = _lerp_axis(_lerp_axis(coarse, 2, cell, t), 1, cell, t)
    marked_yz = marked[:, cell][:, :, cell]  # [nc-1, n, n]: is the cell of each fine (y, z) marked, per x cell
    grid = np.empty((n, n, n), dtype=np.float32)
    grid_t = torch.from_numpy(grid)
    cells_x, weights_x = cell.tolist(), t.tolist()
    slab = max(1, min(n, 4 * chunk_points // (n * n)))  # rows per batch of fine evaluations
    evaluated = nc ** 3
    for start in range(0, n, slab):
        stop = min(n, start + slab)
        for x in range(start, stop):  # one pass per row, straight into the grid
            torch.lerp(coarse_yz[cells_x[x]], coarse_yz[cells_x[x] + 1], weights_x[x], out=grid_t[x])
        need = marked_yz[cell[start:stop]]  # [rows, n, n]
        index = need.nonzero()  # [K, 3], C order like boolean-mask assignment
        if len(index):
            index[:, 0] += start
            points = coords[index.to(coords.device)]
            values = [density_fn(points[lo:lo + chunk_points]).reshape(-1).float().cpu()
                      for lo in range(0, len(points), chunk_points)]
            grid_t[start:stop][need] = torch.cat(values)
            evaluated += len(index)
    if stats is not None:
        stats.update(evaluated=evaluated, vertices=n ** 3, bounds=bounds)
    return grid


@torch.no_grad()
def density_grid_at(density_fn: PointFn, coords: torch.Tensor, chunk_points: int = 1 << 18) -> np.ndarray:
    """``density_fn`` on the tensor grid coords x coords x coords -> float32 [m, m, m] indexed [x, y, z]."""
    m = len(coords)
    yz = torch.stack(torch.meshgrid(coords, coords, indexing="ij"), -1).reshape(-1, 2)
    grid = np.empty((m, m, m), dtype=np.float32)
    slab = max(1, chunk_points // (m * m))
    for start in range(0, m, slab):
        xs = coords[start:start + slab]
        points = torch.cat([xs.repeat_interleave(yz.shape[0])[:, None], yz.repeat(len(xs), 1)], dim=1)
        grid[start:start + len(xs)] = density_fn(points).reshape(len(xs), m, m).float().cpu().numpy()
    return grid


def marching_cubes(grid: np.ndarray, level: float = 1.0, bounds: tuple[tuple[int, int], ...] | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Iso-surface of a [n, n, n] grid over [-1, 1]^3 -> (vertices [V, 3] world, faces [F, 3]).

    ``bounds`` ((x0, x1), (y0, y1), (z0, z1)), inclusive grid indices: only that box is scanned
    (the caller guarantees that no cell outside it crosses the level, as ``coarse_to_fine_grid``
    does). For density that is high inside, PyMCubes' winding already gives outward normals
    (positive volume).
    """
    n = grid.shape[0]
    if grid.shape != (n, n, n):
        raise ValueError(f"grid must be [n, n, n], got {grid.shape}")
    origin = np.zeros(3)
    if bounds is not None:
        (x0, x1), (y0, y1), (z0, z1) = bounds
        grid = np.ascontiguousarray(grid[x0:x1 + 1, y0:y1 + 1, z0:z1 + 1])
        origin = np.array([x0, y0, z0], dtype=np.float64)
    if grid.size == 0 or not (grid.min() < level < grid.max()):
        low, high = (grid.min(), grid.max()) if grid.size else (float("nan"), float("nan"))
        raise EmptyMeshError(f"density range [{low:.4g}, {high:.4g}] does not cross level {level}")
    vertices, faces = mcubes.marching_cubes(grid, level)
    vertices = -1.0 + 2.0 * (vertices + origin) / (n - 1)
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
                     chunk_points: int = 1 << 18, device: torch.device | str = "cpu",
                     coarse_stride: int = 0, dilate: int = 1, stats: dict | None = None) -> trimesh.Trimesh:
    """Marching-cubes mesh of ``density_fn`` with optional vertex colours from ``rgb_fn``.

    ``coarse_stride`` > 1 evaluates the grid coarse-to-fine (``coarse_to_fine_grid``). ``stats``
    receives ``evaluated`` / ``vertices`` (density evaluations / grid vertices) and the seconds of
    the grid, marching cubes and colour stages.
    """
    stats = {} if stats is None else stats
    start = time.perf_counter()
    if coarse_stride > 1:
        grid = coarse_to_fine_grid(density_fn, resolution, level, coarse_stride, dilate, chunk_points, device, stats)
        bounds = stats["bounds"]
        if bounds is None:  # no coarse cell straddles the level: let marching_cubes report the range
            bounds = ((0, resolution - 1),) * 3
    else:
        grid = density_grid(density_fn, resolution, chunk_points, device)
        stats.update(evaluated=resolution ** 3, vertices=resolution ** 3)
        bounds = None
    stats["grid_seconds"] = time.perf_counter() - start
    start = time.perf_counter()
    vertices, faces = marching_cubes(grid, level, bounds)
    del grid
    stats["marching_seconds"] = time.perf_counter() - start
    start = time.perf_counter()
    colours = vertex_colours(rgb_fn, vertices, chunk_points, device) if rgb_fn is not None else None
    stats["colour_seconds"] = time.perf_counter() - start
    return trimesh.Trimesh(vertices=vertices, faces=faces, vertex_colors=colours, process=False)


def mesh_fields(model, planes: torch.Tensor, options: InferenceOptions | None = None,
                chunk_points: int | None = None) -> tuple[PointFn, PointFn, int]:
    """(density [P, 3] -> [P], colour [P, 3] -> [P, 3] in [0, 1], chunk_points) of one object's planes
    [1, 3, C, H, W], the fields ``extract_mesh`` meshes (see there for ``options`` / ``chunk_points``)."""
    if planes.dim() != 5 or planes.shape[:2] != (1, 3):
        raise ValueError(f"planes must be [1, 3, C, H, W], got {tuple(planes.shape)}")
    if options is None or options.is_exact:
        if chunk_points is None:
            chunk_points = 1 << 18 if options is None else grid_chunk_points(planes.device, options, fused=False)

        def density(points: torch.Tensor) -> torch.Tensor:
            return model.query_density(planes, points[None].to(planes.device))[0][0, :, 0]

        def colour(points: torch.Tensor) -> torch.Tensor:
            return model.query_density(planes, points[None].to(planes.device))[1][0]

        return density, colour, chunk_points
    if chunk_points is None:
        chunk_points = grid_chunk_points(planes.device, options, options.fused_field)
    field = model.fast_field(planes, options, min(chunk_points, CPU_FIELD_CHUNK) if planes.device.type == "cpu"
                             else chunk_points, part="mesh")

    def fast_density(points: torch.Tensor) -> torch.Tensor:
        return activate_density(field(points.to(planes.device))[0])[:, 0]

    def fast_colour(points: torch.Tensor) -> torch.Tensor:
        return field(points.to(planes.device))[1]

    return fast_density, fast_colour, chunk_points


def extract_mesh(model, planes: torch.Tensor, resolution: int = 256, level: float = 1.0,
                 chunk_points: int | None = None, options: InferenceOptions | None = None,
                 stats: dict | None = None) -> trimesh.Trimesh:
    """Mesh of one object's planes [1, 3, C, H, W] (world z-up, vertex colours).

    Without ``options``: the exact path (``model.query_density`` on the dense grid, ``chunk_points``
    default 2^18). With ``options``: the field of ``model.fast_field`` and, when
    ``options.mesh_stride`` > 1, the coarse-to-fine grid; chunk sizes from ``options.max_memory_gb``
    unless ``chunk_points`` is given. ``stats``: see ``mesh_from_fields``.
    """
    density, colour, chunk_points = mesh_fields(model, planes, options, chunk_points)
    if options is None or options.is_exact:
        return mesh_from_fields(density, colour, resolution, level, chunk_points, planes.device, stats=stats)
    return mesh_from_fields(density, colour, resolution, level, chunk_points, planes.device,
                            options.mesh_stride, options.mesh_dilate, stats)


def grid_chunk_points(device: torch.device | str, options: InferenceOptions, fused: bool) -> int:
    """Points per density evaluation within the working-memory budget (half of it; the grid itself,
    n^3 float32, is allocated separately)."""
    per_point = BYTES_PER_POINT_FUSED if fused else BYTES_PER_POINT_EXACT
    return int(max(1 << 12, working_memory_bytes(device, options.max_memory_gb) // 2 // per_point))
