"""Mesh extraction: an analytic sphere comes back with the right radius, centre and orientation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import trimesh

from vfusion3d_core.lrm.mesh import EmptyMeshError, density_grid, extract_mesh, mesh_from_fields, save_mesh

CENTRE = torch.tensor([0.3, -0.2, 0.1])
RADIUS = 0.4


def sphere_density(points: torch.Tensor) -> torch.Tensor:
    """1 on the sphere surface, larger inside, smaller outside."""
    return (1 + 5 * (RADIUS - (points - CENTRE).norm(dim=-1)))[:, None]


def sphere_colour(points: torch.Tensor) -> torch.Tensor:
    return ((points + 1) / 2).clamp(0, 1)  # colour = position


def test_analytic_sphere_radius_centre_and_orientation():
    mesh = mesh_from_fields(sphere_density, sphere_colour, resolution=48, chunk_points=48 * 48 * 5)
    radii = np.linalg.norm(mesh.vertices - CENTRE.numpy(), axis=1)
    assert abs(radii.mean() - RADIUS) < 0.005 and radii.std() < 0.005
    np.testing.assert_allclose(mesh.vertices.mean(0), CENTRE.numpy(), atol=0.01)
    assert mesh.is_watertight
    assert mesh.volume == pytest.approx(4 / 3 * math.pi * RADIUS**3, rel=0.03)  # > 0: outward normals
    expected = np.round((mesh.vertices + 1) / 2 * 255)
    assert np.abs(mesh.visual.vertex_colors[:, :3].astype(float) - expected).max() <= 1


def test_density_grid_layout_and_chunk_invariance():
    calls = []

    def fn(points):
        calls.append(len(points))
        return points[:, 0] + 10 * points[:, 1] + 100 * points[:, 2]

    a = density_grid(fn, 5, chunk_points=25)
    b = density_grid(fn, 5, chunk_points=1000)
    assert max(calls[:5]) == 25 and np.array_equal(a, b)
    c = np.linspace(-1, 1, 5)
    assert a[4, 0, 0] == pytest.approx(c[4] + 10 * c[0] + 100 * c[0])  # index order [x, y, z]
    assert a[0, 3, 1] == pytest.approx(c[0] + 10 * c[3] + 100 * c[1])


def test_empty_density_raises():
    with pytest.raises(EmptyMeshError):
        mesh_from_fields(lambda p: torch.zeros(len(p), 1), None, resolution=8)


@pytest.mark.parametrize("fmt", ["glb", "obj", "ply"])
def test_model_mesh_export_formats(tmp_path, shaped_tiny_model, tiny_planes, fmt):
    with torch.no_grad():
        mesh = extract_mesh(shaped_tiny_model, tiny_planes[:1], resolution=20)
    path = save_mesh(mesh, tmp_path / f"mesh.{fmt}")
    loaded = trimesh.load(path, force="mesh")
    assert len(loaded.faces) == len(mesh.faces) > 0
    assert np.abs(loaded.vertices).max() <= 1.0 + 1e-5
    assert loaded.visual.kind == "vertex"


def test_unknown_mesh_suffix(tmp_path):
    mesh = trimesh.creation.box()
    with pytest.raises(ValueError, match="unsupported"):
        save_mesh(mesh, tmp_path / "x.stl")
