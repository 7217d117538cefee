"""Mesh files: up axis of .glb / .obj / .ply, decimation to a face budget, baked textures."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from vfusion3d_core.lrm.mesh import extract_mesh, mesh_from_fields
from vfusion3d_core.lrm.mesh_export import Z_UP_TO_Y_UP, export_mesh, save_mesh, to_up_axis
from vfusion3d_core.lrm.mesh_simplify import decimate
from vfusion3d_core.lrm.texture_bake import bake_texture

CENTRE = torch.tensor([0.0, 0.3, 0.2])  # off-centre along world +y too, to catch a sign flip of the other axis
AXES = torch.tensor([0.2, 0.2, 0.6])  # tall along world +z: spans z in [-0.4, 0.8]


def tall_density(points: torch.Tensor) -> torch.Tensor:
    """Ellipsoid around CENTRE with semi-axes AXES: 1 on the surface, larger inside."""
    return 1 + 2 * (1 - ((points - CENTRE) / AXES).norm(dim=-1))


def position_colour(points: torch.Tensor) -> torch.Tensor:
    return ((points + 1) / 2).clamp(0, 1)


@pytest.fixture(scope="module")
def tall_mesh() -> trimesh.Trimesh:
    return mesh_from_fields(tall_density, position_colour, resolution=40)


def load_scene_mesh(path) -> trimesh.Trimesh:
    """The file as a viewer shows it: every node with the scene graph's transforms applied."""
    return trimesh.load(path, force="scene").to_mesh()


def world_colour(world: np.ndarray) -> np.ndarray:
    return np.round((world + 1) / 2 * 255)


def test_glb_is_y_up_with_the_top_at_plus_y_and_colours_kept(tmp_path, tall_mesh):
    assert np.argmax(tall_mesh.extents) == 2  # tall along world z before export
    path = save_mesh(tall_mesh, tmp_path / "tall.glb")
    loaded = load_scene_mesh(path)
    assert len(loaded.faces) == len(tall_mesh.faces)
    assert np.argmax(loaded.extents) == 1  # tallest along +Y
    (x0, y0, z0), (x1, y1, z1) = loaded.bounds
    assert y1 == pytest.approx(0.8, abs=0.03) and y0 == pytest.approx(-0.4, abs=0.03)  # world top -> +Y
    assert (z0 + z1) / 2 == pytest.approx(-0.3, abs=0.02)  # world +y -> glTF -z (a rotation, not a mirror)
    assert loaded.volume > 0  # winding kept: normals still point outwards
    world = loaded.vertices @ Z_UP_TO_Y_UP[:3, :3]  # back to world: (x, y, z) = (x', -z', y')
    colours = np.asarray(loaded.visual.vertex_colors)[:, :3].astype(float)
    assert np.abs(colours - world_colour(world)).max() <= 1.5


def test_obj_and_ply_up_axis(tmp_path, tall_mesh):
    for fmt in ("obj", "ply"):
        y_up = trimesh.load(save_mesh(tall_mesh, tmp_path / f"y.{fmt}"), force="mesh", process=False)
        z_up = trimesh.load(save_mesh(tall_mesh, tmp_path / f"z.{fmt}", up_axis="z"), force="mesh", process=False)
        assert np.argmax(y_up.extents) == 1 and y_up.bounds[1, 1] == pytest.approx(0.8, abs=0.03)
        np.testing.assert_allclose(z_up.vertices, tall_mesh.vertices, atol=1e-6)  # the world frame unchanged
        assert y_up.visual.kind == "vertex"
    with pytest.raises(ValueError, match="always y-up"):
        save_mesh(tall_mesh, tmp_path / "z.glb", up_axis="z")
    with pytest.raises(ValueError, match="unknown up axis"):
        to_up_axis(tall_mesh, "x")


def test_decimation_keeps_the_budget_the_box_and_the_colours(tall_mesh):
    budget = 300
    assert len(tall_mesh.faces) > 4 * budget
    small = decimate(tall_mesh, budget, position_colour)
    assert 0 < len(small.faces) <= budget
    np.testing.assert_allclose(small.bounds, tall_mesh.bounds, atol=0.04)
    colours = np.asarray(small.visual.vertex_colors)[:, :3].astype(float)
    assert np.abs(colours - world_colour(small.vertices)).max() <= 1  # re-queried at the new vertices
    nearest = decimate(tall_mesh, budget)  # no field: colour of the nearest original vertex
    colours = np.asarray(nearest.visual.vertex_colors)[:, :3].astype(float)
    assert len(nearest.faces) <= budget and np.abs(colours - world_colour(nearest.vertices)).max() <= 0.1 * 255
    assert decimate(tall_mesh, 10 ** 6) is tall_mesh  # already within budget


def test_decimation_drops_the_smallest_pieces_when_the_collapse_stalls(monkeypatch):
    pieces = []
    for i in range(12):
        sphere = trimesh.creation.icosphere(1 if i < 10 else 2, radius=0.05)  # 80 faces, the last two 320
        sphere.apply_translation((-0.9 + 0.15 * i, 0, 0))
        sphere.visual.vertex_colors = (20 * i, 0, 0, 255)
        pieces.append(sphere)
    many = trimesh.util.concatenate(pieces)
    # a collapse that cannot remove anything (what open, noisy meshes do below some count)
    monkeypatch.setattr(trimesh.Trimesh, "simplify_quadric_decimation", lambda self, face_count: self.copy())
    small = decimate(many, 700)
    assert len(small.faces) == 640  # the two largest pieces
    np.testing.assert_allclose(small.bounds, trimesh.util.concatenate(pieces[-2:]).bounds)
    assert sorted(np.unique(np.asarray(small.visual.vertex_colors)[:, 0])) == [200, 220]
    with pytest.raises(ValueError, match="larger face budget"):
        decimate(many, 300)  # the largest piece (320 faces) does not fit: no floaters in its place


def test_decimation_of_a_noisy_model_mesh_keeps_the_budget(shaped_tiny_model, tiny_planes):
    """The random model's mesh (open at the box, dozens of pieces) stalls above ~300 faces."""
    with torch.no_grad():
        mesh = extract_mesh(shaped_tiny_model, tiny_planes[:1], resolution=24)
    small = decimate(mesh, 150)
    assert 0 < len(small.faces) <= 150 and small.visual.kind == "vertex"


def two_colour_boxes() -> trimesh.Trimesh:
    """Two separate boxes, red at x < 0 and blue at x > 0 (vertex colours)."""
    parts = []
    for x, colour in ((-0.4, (255, 0, 0, 255)), (0.4, (0, 0, 255, 255))):
        box = trimesh.creation.box(extents=(0.4, 0.4, 0.6)).subdivide()
        box.apply_translation((x, 0, 0.1))
        box.visual.vertex_colors = colour
        parts.append(box)
    return trimesh.util.concatenate(parts)


def texture_at(mesh: trimesh.Trimesh, uv: np.ndarray) -> np.ndarray:
    image = getattr(mesh.visual.material, "baseColorTexture", None) or mesh.visual.material.image
    return trimesh.visual.color.uv_to_color(uv, image)[:, :3].astype(float)


def test_baked_texture_survives_glb_export_with_colours_at_the_right_uvs(tmp_path):
    source = two_colour_boxes()
    baked = bake_texture(source, 64)
    assert baked.visual.kind == "texture" and baked.visual.uv.shape == (len(baked.vertices), 2)
    loaded = load_scene_mesh(export_mesh(baked, tmp_path / "boxes.glb")[0])
    assert loaded.visual.kind == "texture" and loaded.visual.uv is not None
    assert len(loaded.faces) == len(source.faces)
    image = np.asarray(getattr(loaded.visual.material, "baseColorTexture", None))
    assert image.shape[:2] == (64, 64)
    centre_uv = loaded.visual.uv[loaded.faces].mean(1)  # [F, 2]
    colours = texture_at(loaded, centre_uv)
    left = loaded.triangles_center[:, 0] < 0  # x is unchanged by the y-up rotation
    assert left.any() and (~left).any()
    assert np.abs(colours[left] - (255, 0, 0)).max() <= 2
    assert np.abs(colours[~left] - (0, 0, 255)).max() <= 2
    np.testing.assert_allclose(loaded.bounds[:, 1], [-0.2, 0.4], atol=1e-6)  # world z span -> y: still y-up


def test_baked_texture_from_a_colour_field_and_textured_obj(tmp_path, tall_mesh):
    baked = bake_texture(tall_mesh, 128, position_colour)
    centre_uv = baked.visual.uv[baked.faces].mean(1)
    expected = world_colour(baked.triangles_center)
    # a texel is within about one texel (~0.01 in space here) of the triangle centre: a few colour levels
    assert np.abs(texture_at(baked, centre_uv) - expected).mean() < 3
    files = export_mesh(baked, tmp_path / "mesh.obj", up_axis="z")
    assert files[0].name == "mesh.obj" and sorted(f.name for f in files) == ["mesh.mtl", "mesh.obj", "texture.png"]
    assert all(f.is_file() for f in files)
    loaded = trimesh.load(files[0], force="mesh", process=False)
    assert loaded.visual.kind == "texture"
    with pytest.raises(ValueError, match="ply"):
        export_mesh(baked, tmp_path / "mesh.ply")


def test_bake_needs_colours():
    with pytest.raises(ValueError, match="vertex colours"):
        bake_texture(trimesh.creation.box(), 32)
