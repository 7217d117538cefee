import os
from pathlib import Path

import numpy as np
import pytest
import trimesh

from vfusion3d_core.objects import ProceduralObjectGenerator, load_mesh_folder, split_train_heldout
from vfusion3d_core.objects.procedural import COLORS, KINDS


def test_procedural_objects_are_seeded_and_captioned() -> None:
    a, b = ProceduralObjectGenerator(7), ProceduralObjectGenerator(7)
    for i in range(6):
        ma, mb = a.build(i), b.build(i)
        assert ma.uid == mb.uid and ma.caption == mb.caption
        np.testing.assert_array_equal(ma.vertices, mb.vertices)
        np.testing.assert_array_equal(ma.colors, mb.colors)
        parts = a.spec(i).parts
        for p in parts:
            assert p.kind in ma.caption and p.color in ma.caption
        assert ma.bounding_radius == pytest.approx(0.8, abs=1e-5)
        assert np.abs(ma.vertices).max() <= 1.0
        assert "." not in ma.uid
    assert ProceduralObjectGenerator(8).spec(0) != a.spec(0) or ProceduralObjectGenerator(8).uid(0) != a.uid(0)


def test_procedural_world_is_varied() -> None:
    gen = ProceduralObjectGenerator(0)
    specs = [gen.spec(i) for i in range(300)]
    kinds = {p.kind for s in specs for p in s.parts}
    colors = {p.color for s in specs for p in s.parts}
    assert kinds == set(KINDS) and colors == set(COLORS)
    assert len({s.arrangement for s in specs}) >= 6
    assert len({s.signature for s in specs}) >= 285  # single-part objects (576 combos) may repeat


def test_heldout_objects_are_new_combinations() -> None:
    gen = ProceduralObjectGenerator(1)
    train, heldout = split_train_heldout(gen, 200, 40)
    assert len(heldout) == 40 and not set(train) & set(heldout)
    train_sigs = {gen.spec(i).signature for i in train}
    assert not any(gen.spec(i).signature in train_sigs for i in heldout)


def _write_meshes(folder) -> None:
    box = trimesh.creation.box(extents=(2, 1, 1))
    box.visual.vertex_colors = np.tile([200, 10, 10, 255], (len(box.vertices), 1))
    box.export(folder / "red_box.glb")
    sphere = trimesh.creation.icosphere(radius=3.0)
    sphere.apply_translation((10, 0, 0))
    sphere.export(folder / "ball.obj")
    trimesh.creation.cylinder(radius=1, height=2).export(folder / "can.v2.ply")


def test_folder_loader_normalizes_and_captions(tmp_path) -> None:
    _write_meshes(tmp_path)
    (tmp_path / "captions.csv").write_text("uid,caption\nred_box,a long red box\n")
    meshes, skipped = load_mesh_folder(tmp_path)
    assert skipped == []
    by_uid = {m.uid: m for m in meshes}
    assert set(by_uid) == {"red_box", "ball", "can_v2"}
    assert by_uid["red_box"].caption == "a long red box"
    assert by_uid["ball"].caption == "ball"
    for m in meshes:
        assert m.bounding_radius == pytest.approx(0.8, abs=1e-5)
        np.testing.assert_allclose((m.vertices.min(0) + m.vertices.max(0)) / 2, 0, atol=1e-5)
    assert by_uid["red_box"].colors[:, 0].mean() > 0.7  # vertex colours survive the glb round trip


def test_corrupt_and_hostile_files_are_reported_and_skipped(tmp_path) -> None:
    _write_meshes(tmp_path)
    (tmp_path / "corrupt.glb").write_bytes(b"glTF\x02\x00\x00\x00garbage-not-a-real-binary-gltf" * 3)
    (tmp_path / "empty.obj").write_bytes(b"")
    (tmp_path / "nan.obj").write_text("v nan 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    (tmp_path / "point.obj").write_text("v 1 1 1\nv 1 1 1\nv 1 1 1\nf 1 2 3\n")
    outside = tmp_path.parent / "outside_mesh.obj"
    outside.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    os.symlink(outside, tmp_path / "link.obj")
    meshes, skipped = load_mesh_folder(tmp_path)
    assert sorted(m.uid for m in meshes) == ["ball", "can_v2", "red_box"]
    reasons = {os.path.basename(s.path): s.reason for s in skipped}
    assert set(reasons) == {"corrupt.glb", "empty.obj", "nan.obj", "point.obj", "link.obj"}
    assert "empty" in reasons["empty.obj"]
    assert "outside" in reasons["link.obj"]
    assert "non-finite" in reasons["nan.obj"] or "unreadable" in reasons["nan.obj"]
    assert "degenerate" in reasons["point.obj"] or "unreadable" in reasons["point.obj"]


def test_missing_folder_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_mesh_folder(tmp_path / "nope")


def test_huge_coordinates_are_scaled_not_dropped(tmp_path) -> None:
    box = trimesh.creation.box(extents=(2, 1, 1))
    box.apply_scale(1e30)
    box.apply_translation((3e30, -1e30, 0))
    box.export(tmp_path / "huge.obj")
    same = np.full((3, 3), 1e30)  # every vertex at one far point: truly degenerate
    trimesh.Trimesh(same, [[0, 1, 2]], process=False).export(tmp_path / "point.obj")
    meshes, skipped = load_mesh_folder(tmp_path)
    assert [m.uid for m in meshes] == ["huge"]
    assert meshes[0].bounding_radius == pytest.approx(0.8, abs=1e-5)
    np.testing.assert_allclose(np.ptp(meshes[0].vertices, axis=0) / np.ptp(meshes[0].vertices[:, 0]),
                               [1, 0.5, 0.5], atol=1e-5)  # the shape survives the scaling
    assert [(os.path.basename(s.path), "degenerate" in s.reason) for s in skipped] == [("point.obj", True)]


def test_caption_rows_not_used_are_reported_by_line(tmp_path) -> None:
    from vfusion3d_core.objects.folder import CaptionIssues, CaptionWarning, read_captions

    _write_meshes(tmp_path)
    (tmp_path / "captions.csv").write_text(
        "uid,caption\n"           # 1 header
        "red_box,a long red box\n"  # 2
        "ghost,a mesh nobody has\n"  # 3 unknown uid
        "ball,   \n"               # 4 empty caption
        "lonely\n"                 # 5 malformed
        "red_box,a red box\n")     # 6 repeated uid (wins)
    with pytest.warns(CaptionWarning) as record:
        meshes, skipped = load_mesh_folder(tmp_path)
    assert skipped == [] and len(record) == 1
    message = str(record[0].message)
    assert "4 caption row(s) not used as given" in message
    assert "line 3 'ghost'" in message and "line 4 'ball'" in message and "line(s) 5" in message
    assert "line 6 'red_box'" in message
    by_uid = {m.uid: m.caption for m in meshes}
    assert by_uid == {"red_box": "a red box", "ball": "ball", "can_v2": "can.v2"}
    issues = CaptionIssues()
    read_captions(tmp_path / "captions.csv", issues)
    assert (issues.malformed, issues.empty, issues.duplicate) == ([5], [(4, "ball")], [(6, "red_box")])
    collected = CaptionIssues()
    with pytest.warns(CaptionWarning):
        load_mesh_folder(tmp_path, caption_issues=collected)
    assert collected.unknown == [(3, "ghost")] and collected.count == 4


def test_clean_captions_raise_no_warning(tmp_path) -> None:
    import warnings

    _write_meshes(tmp_path)
    (tmp_path / "captions.csv").write_text("uid,caption\nred_box,a long red box\nball,a ball\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        meshes, _ = load_mesh_folder(tmp_path)
    assert len(meshes) == 3


def test_an_unexpected_error_in_one_file_skips_that_file_only(tmp_path, monkeypatch) -> None:
    """A converter bug hit by one real file (e.g. an exotic glTF visual) is that file's skip reason, not the end
    of the folder: the other meshes still load."""
    from vfusion3d_core.objects.mesh import ColoredMesh

    _write_meshes(tmp_path)
    original = ColoredMesh.from_trimesh

    def fails_for_the_ball(uid, caption, mesh, *args, **kwargs):
        if uid == "ball":
            raise IndexError("too many indices for array")
        return original(uid, caption, mesh, *args, **kwargs)

    monkeypatch.setattr(ColoredMesh, "from_trimesh", staticmethod(fails_for_the_ball))
    meshes, skipped = load_mesh_folder(tmp_path)
    assert {m.uid for m in meshes} == {"red_box", "can_v2"}
    assert len(skipped) == 1 and Path(skipped[0].path).stem == "ball"
    assert "IndexError: too many indices for array" in skipped[0].reason


def test_mesh_shape_checks_raise_not_assert() -> None:
    """The checks are raises (kept under python -O), each naming the bad field."""
    from vfusion3d_core.objects import ColoredMesh, MeshError

    v = np.eye(3, dtype=np.float32)
    f = np.array([[0, 1, 2]], np.int32)
    n = np.tile(np.float32([0, 0, 1]), (3, 1))
    good = dict(vertices=v, faces=f, colors=v.copy(), normals=n, specular=np.zeros(3, np.float32))
    ColoredMesh("ok", "ok", **good)
    for field_name, bad in [("colors", np.ones((2, 3), np.float32)), ("normals", np.ones((3, 4), np.float32)),
                            ("specular", np.zeros((3, 1), np.float32)), ("faces", np.array([[0, 1]], np.int32))]:
        with pytest.raises(MeshError, match=field_name):
            ColoredMesh("bad", "bad", **{**good, field_name: bad})
    with pytest.raises(MeshError, match="uvs"):
        ColoredMesh("tex", "tex", **good, textures=[np.zeros((1, 1, 4), np.uint8)])
    with pytest.raises(MeshError, match="face_texture"):
        ColoredMesh("tex", "tex", **good, uvs=np.zeros((3, 2), np.float32), textures=[np.zeros((1, 1, 4), np.uint8)],
                    face_texture=np.array([1], np.int32), alpha_cutoff=[0.0])
