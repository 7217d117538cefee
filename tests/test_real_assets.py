"""Real public sample models (Debian package assimp-testmodels, installed by scripts/setup.sh) and small assets
written with trimesh's exporters: loading, orientation, per-pixel textures, alpha and what is reported/skipped."""

import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from vfusion3d_core import cameras as C
from vfusion3d_core.objects import MeshNoteWarning, load_mesh_file, load_mesh_folder
from vfusion3d_core.render import render_views

MODELS = Path("/usr/share/assimp/models")
needs_models = pytest.mark.skipif(not MODELS.is_dir(), reason=f"{MODELS} absent: run scripts/setup.sh "
                                  "(installs the Debian package assimp-testmodels)")
ENGINE = MODELS / "glTF2/2CylinderEngine-glTF-Binary/2CylinderEngine.glb"
BOX_GLB = MODELS / "glTF2/BoxTextured-glTF-Binary/BoxTextured.glb"


def load(path: Path, up_axis: str = "y"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MeshNoteWarning)
        return load_mesh_file(path, "m", "m", up_axis=up_axis)


def side_view(mesh, azimuth_deg: float, size: int = 96) -> np.ndarray:
    """RGBA [S, S, 4] from the horizon at ``azimuth_deg`` (0 = from +x, 90 = from +y)."""
    cams = C.orbit_cameras(1, elevation_deg=0.0, azimuth_start_deg=azimuth_deg)
    return render_views(mesh, cams, size).rgba[0]


def textured_quad(image: np.ndarray, alpha_mode: str | None = None) -> trimesh.Trimesh:
    """A 2x2 quad in the glTF frame (x right, y up, facing +z) with UVs spanning ``image`` upright."""
    quad = trimesh.Trimesh([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], [[0, 1, 2], [0, 2, 3]], process=False)
    material = trimesh.visual.material.PBRMaterial(baseColorTexture=Image.fromarray(image, "RGBA"),
                                                   alphaMode=alpha_mode, alphaCutoff=0.5 if alpha_mode else None)
    quad.visual = trimesh.visual.TextureVisuals(uv=[[0, 0], [1, 0], [1, 1], [0, 1]], material=material)
    return quad


@needs_models
@pytest.mark.parametrize("relative, textures", [
    ("glTF2/BoxTextured-glTF-Binary/BoxTextured.glb", 1),  # binary glTF, embedded PNG
    ("glTF2/BoxTextured-glTF/BoxTextured.gltf", 1),  # external .bin and .png
    ("glTF2/BoxTextured-glTF-Embedded/BoxTextured.gltf", 1),  # data URIs
    ("OBJ/spider.obj", 4),  # OBJ + MTL + JPEG textures named with Windows separators ('.\\SpiderTex.jpg')
    ("PLY/Wuson.ply", 0),
    ("OBJ/cube_with_vertexcolors.obj", 0),
])
def test_each_format_loads(relative: str, textures: int) -> None:
    mesh = load(MODELS / relative)
    assert len(mesh.faces) > 0 and len(mesh.textures) == textures
    assert mesh.bounding_radius == pytest.approx(0.8, abs=1e-5)
    if textures:
        assert mesh.meta["notes"] == []  # every referenced texture was found
        assert (mesh.face_texture >= 0).all() and mesh.uvs.shape == (len(mesh.vertices), 2)


@needs_models
def test_vertex_colours_are_kept() -> None:
    mesh = load(MODELS / "OBJ/cube_with_vertexcolors.obj")
    assert len(np.unique(mesh.colors.round(3), axis=0)) > 1  # not one flat default colour


@needs_models
def test_textured_box_shows_its_texture_per_pixel() -> None:
    """The Cesium logo of BoxTextured (blue sky, green hills, white) appears; sampled onto its 24 vertices it
    would be flat grey."""
    mesh = load(BOX_GLB)
    rgb = side_view(mesh, 0.0)[..., :3].reshape(-1, 3).astype(int)
    blue = ((rgb[:, 2] > rgb[:, 0] + 40) & (rgb[:, 2] > rgb[:, 1] + 10)).sum()
    green = ((rgb[:, 1] > rgb[:, 0] + 30) & (rgb[:, 1] > rgb[:, 2] + 30)).sum()
    assert blue > 200 and green > 200, (blue, green)


def test_checker_texture_is_sampled_per_pixel_and_upright(tmp_path) -> None:
    """A quad whose texture is red on top and blue below, exported by trimesh as .glb: seen face on, both colours
    cover large areas, red above blue (texture rows and the Y-up -> Z-up turn both right)."""
    image = np.zeros((8, 8, 4), np.uint8)
    image[:4] = (230, 20, 20, 255)  # top rows of the image
    image[4:] = (20, 20, 230, 255)
    textured_quad(image).export(tmp_path / "quad.glb")
    mesh = load(tmp_path / "quad.glb")
    assert len(mesh.textures) == 1 and len(np.unique(mesh.colors, axis=0)) == 1  # colour lives in the texture
    view = side_view(mesh, 270.0)  # the quad faces file +z = world -y
    red = (view[..., 0] > 150) & (view[..., 2] < 80) & (view[..., 3] > 200)
    blue = (view[..., 2] > 150) & (view[..., 0] < 80) & (view[..., 3] > 200)
    assert red.sum() > 300 and blue.sum() > 300, (red.sum(), blue.sum())
    assert np.nonzero(red)[0].mean() < np.nonzero(blue)[0].mean()  # image row 0 is at the top


def test_alpha_mask_discards_fragments(tmp_path) -> None:
    image = np.full((8, 8, 4), 255, np.uint8)
    image[:, :4, 3] = 0  # left half transparent
    textured_quad(image, alpha_mode="MASK").export(tmp_path / "masked.glb")
    mesh = load(tmp_path / "masked.glb")
    assert mesh.alpha_cutoff == [0.5]
    alpha = side_view(mesh, 90.0)[..., 3]  # from +y: sees the quad's back, mirrored; either way half is cut
    covered = alpha > 0
    opaque_textured = textured_quad(np.full((8, 8, 4), 255, np.uint8))
    opaque_textured.export(tmp_path / "opaque.glb")
    full = side_view(load(tmp_path / "opaque.glb"), 90.0)[..., 3] > 0
    assert 0.35 < covered.sum() / full.sum() < 0.65


@pytest.mark.parametrize("suffix", [".glb", ".obj"])
def test_y_up_files_stand_upright(tmp_path, suffix: str) -> None:
    """A box tall along +Y: glTF (Y-up by specification) and OBJ with the default up_axis='y' end up tall along
    world Z; OBJ with up_axis='z' is not rotated."""
    trimesh.creation.box(extents=(0.2, 2.0, 0.4)).export(tmp_path / f"tall{suffix}")
    extent = np.ptp(load(tmp_path / f"tall{suffix}").vertices, axis=0)
    assert int(np.argmax(extent)) == 2 and extent[1] > extent[0]  # file z (0.4) -> world y, file x stays x
    if suffix == ".obj":
        extent = np.ptp(load(tmp_path / f"tall{suffix}", up_axis="z").vertices, axis=0)
        assert int(np.argmax(extent)) == 1


def test_up_axis_is_checked(tmp_path) -> None:
    with pytest.raises(ValueError, match="up_axis"):
        load_mesh_folder(tmp_path, up_axis="x")


@needs_models
def test_engine_loads_with_all_its_parts() -> None:
    """2CylinderEngine: 34 meshes placed 115 times by node transforms; every instance is kept."""
    scene = trimesh.load(ENGINE, force="scene", process=False)
    expected = sum(len(scene.geometry[scene.graph[node][1]].faces) for node in scene.graph.nodes_geometry)
    mesh = load(ENGINE)
    assert len(mesh.faces) == expected == sum(len(g.faces) for g in scene.dump())
    assert len(np.unique(mesh.colors.round(3), axis=0)) >= 3  # base-colour factors of its materials
    assert len(scene.geometry) == 34 and len(scene.graph.nodes_geometry) == 115
    # every instance placed by its node transform (as trimesh's dump places them), then turned Y-up -> Z-up
    placed = np.concatenate([g.vertices for g in scene.dump()])
    x, y, z = np.ptp(placed, axis=0)
    np.testing.assert_allclose(np.ptp(mesh.vertices, axis=0) / np.ptp(mesh.vertices[:, 0]), [1, z / x, y / x],
                               rtol=1e-4)


def copy_models(folder: Path, *relatives: str) -> None:
    for relative in relatives:
        source = MODELS / relative
        if source.is_dir():
            shutil.copytree(source, folder / source.name)
        else:
            shutil.copy(source, folder / source.name)


@needs_models
def test_a_converter_exception_skips_that_file_only(tmp_path, monkeypatch) -> None:
    """An unexpected exception while converting one file's material is that file's skip reason; the other files of
    the folder load."""
    from vfusion3d_core.objects import mesh as mesh_module

    copy_models(tmp_path, "OBJ/spider.obj", "OBJ/spider.mtl", "OBJ/SpiderTex.jpg", "OBJ/drkwood2.jpg",
                "OBJ/wal67ar_small.jpg", "OBJ/wal69ar_small.jpg", "OBJ/engineflare1.jpg",
                "glTF2/BoxTextured-glTF-Binary/BoxTextured.glb", "PLY/cube.ply")
    original = mesh_module.base_color

    def fails_for_a_spider_material(geometry, *args, **kwargs):
        if getattr(getattr(geometry.visual, "material", None), "name", None) == "BeinTex":
            raise IndexError("too many indices for array")
        return original(geometry, *args, **kwargs)

    monkeypatch.setattr(mesh_module, "base_color", fails_for_a_spider_material)
    meshes, skipped = load_mesh_folder(tmp_path)
    assert sorted(m.uid for m in meshes) == ["BoxTextured", "cube"]
    assert [(Path(s.path).name, "IndexError: too many indices" in s.reason) for s in skipped] == [
        ("spider.obj", True)]


@needs_models
def test_lines_and_points_are_reported_by_name(tmp_path) -> None:
    with pytest.warns(MeshNoteWarning, match="'l' statement"):
        mixed = load_mesh_file(MODELS / "OBJ/testmixed.obj", "mixed", "mixed")
    assert len(mixed.faces) == 12
    assert any("line" in n and "6 'l'" in n for n in mixed.meta["notes"])
    assert any("point" in n and "6 'p'" in n for n in mixed.meta["notes"])
    copy_models(tmp_path, "OBJ/testline.obj", "OBJ/testpoints.obj", "PLY/cube.ply",
                "glTF2/glTF-Asset-Generator/Mesh_PrimitiveMode/Mesh_PrimitiveMode_00.gltf",
                "glTF2/glTF-Asset-Generator/Mesh_PrimitiveMode/Mesh_PrimitiveMode_00.bin",
                "glTF2/glTF-Asset-Generator/Mesh_PrimitiveMode/Mesh_PrimitiveMode_05.gltf",
                "glTF2/glTF-Asset-Generator/Mesh_PrimitiveMode/Mesh_PrimitiveMode_05.bin")
    meshes, skipped = load_mesh_folder(tmp_path)
    assert [m.uid for m in meshes] == ["cube"]
    reasons = {Path(s.path).name: s.reason for s in skipped}
    assert "no triangles" in reasons["testline.obj"] and "line element" in reasons["testline.obj"]
    assert "no triangles" in reasons["testpoints.obj"] and "point element" in reasons["testpoints.obj"]
    assert "POINTS primitive" in reasons["Mesh_PrimitiveMode_00.gltf"]
    assert "TRIANGLE_FAN primitive" in reasons["Mesh_PrimitiveMode_05.gltf"]


@needs_models
def test_broken_gltfs_are_skipped_with_reasons(tmp_path) -> None:
    copy_models(tmp_path, "glTF2/MissingBin", "glTF2/IndexOutOfRange", "glTF2/BoxWithInfinites-glTF-Binary",
                "glTF2/draco", "PLY/cube.ply")
    meshes, skipped = load_mesh_folder(tmp_path)
    assert [m.uid for m in meshes] == ["cube"]
    reasons = {str(Path(s.path).relative_to(tmp_path)): s.reason for s in skipped}
    assert "BoxTextured0.bin" in reasons["MissingBin/BoxTextured.gltf"]
    assert "out of range" in reasons["IndexOutOfRange/IndexOutOfRange.gltf"]
    assert "IndexOutOfRange/AllIndicesOutOfRange.gltf" in reasons
    assert "non-finite" in reasons["BoxWithInfinites-glTF-Binary/BoxWithInfinites.glb"]
    assert "KHR_draco_mesh_compression" in reasons["draco/2CylinderEngine.gltf"]


@needs_models
def test_missing_textures_are_reported_by_name(tmp_path) -> None:
    copy_models(tmp_path, "OBJ/spider.obj", "OBJ/spider.mtl", "OBJ/SpiderTex.jpg")
    with pytest.warns(MeshNoteWarning, match="drkwood2.jpg"):
        mesh = load_mesh_file(tmp_path / "spider.obj", "spider", "spider")
    assert len(mesh.textures) == 1  # SpiderTex.jpg; the other parts keep their MTL diffuse colour
    (note,) = [n for n in mesh.meta["notes"] if "not found" in n]
    assert "wal67ar_small.jpg" in note and "engineflare1.jpg" in note


def test_large_textures_are_downscaled(tmp_path) -> None:
    image = np.full((16, 4100, 4), 200, np.uint8)
    textured_quad(image).export(tmp_path / "wide.glb")
    mesh = load(tmp_path / "wide.glb")
    assert mesh.textures[0].shape[:2] == (8, 2048)
    assert any("downscaled from 4100x16" in n for n in mesh.meta["notes"])


def test_no_warning_for_clean_files(tmp_path) -> None:
    trimesh.creation.box().export(tmp_path / "box.glb")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mesh = load_mesh_file(tmp_path / "box.glb", "box", "box")
    assert mesh.meta["notes"] == [] and os.path.exists(tmp_path / "box.glb")
