import numpy as np
import torch

from vfusion3d_core import cameras as C
from vfusion3d_core.objects import ColoredMesh, ProceduralObjectGenerator
from vfusion3d_core.objects.mesh import normalize_into_box
from vfusion3d_core.render import render_orbit, render_views


def marker_scene(position: tuple[float, float, float], radius: float = 0.12) -> ColoredMesh:
    """A red ball at ``position`` and a white ball at the origin (so normalization keeps coordinates)."""
    import trimesh

    ball = trimesh.creation.icosphere(subdivisions=2, radius=radius)
    centre = trimesh.creation.icosphere(subdivisions=2, radius=radius)
    marker = ball.copy()
    marker.apply_translation(position)
    opposite = ball.copy()
    opposite.apply_translation(-np.asarray(position))  # keeps the bounding box centred at the origin
    parts = [marker, centre, opposite]
    colors = [(1.0, 0.0, 0.0), (1.0, 1.0, 1.0), (0.0, 0.0, 1.0)]
    v = np.concatenate([p.vertices for p in parts]).astype(np.float32)
    offsets = np.cumsum([0] + [len(p.vertices) for p in parts[:-1]])
    f = np.concatenate([p.faces + o for p, o in zip(parts, offsets, strict=True)]).astype(np.int32)
    c = np.concatenate([np.tile(col, (len(p.vertices), 1)) for p, col in zip(parts, colors, strict=True)])
    n = np.concatenate([p.vertex_normals for p in parts]).astype(np.float32)
    return ColoredMesh("marker", "markers", v, f, c.astype(np.float32), n, np.zeros(len(v), np.float32))


def red_centroid(rgba: np.ndarray) -> np.ndarray:
    """Normalized (x, y) of the red marker's pixels in an RGBA [S, S, 4] image."""
    mask = (rgba[..., 0] > 120) & (rgba[..., 1] < 80) & (rgba[..., 2] < 80) & (rgba[..., 3] > 200)
    rows, cols = np.nonzero(mask)
    assert len(rows) > 0, "marker not visible"
    s = rgba.shape[0]
    return np.array([(cols.mean() + 0.5) / s, (rows.mean() + 0.5) / s])


def test_rasterizer_matches_camera_projection() -> None:
    pos = (0.35, 0.45, 0.3)
    mesh = marker_scene(pos)
    cams = C.random_cameras(6, elevation_range_deg=(-20, 50), generator=torch.Generator().manual_seed(0))
    views = render_views(mesh, cams, 96)
    uv, _ = C.project_points(torch.tensor([pos]).expand(6, 1, 3), cams.c2w, cams.intrinsics)
    for i in range(6):
        visible_red = ((views.rgba[i, ..., 0] > 120) & (views.rgba[i, ..., 1] < 80)).sum()
        if visible_red < 20:  # marker occluded by the centre ball in this view
            continue
        np.testing.assert_allclose(red_centroid(views.rgba[i]), uv[i, 0].numpy(), atol=0.02)


def test_azimuth_order_matches_rendered_frames() -> None:
    # Marker on +y: the frame at azimuth 90 looks at it head on, at 270 it hides behind the centre ball.
    mesh = marker_scene((0.0, 0.55, 0.0))
    orbit = render_orbit(mesh, 64, num_views=16, elevation_range_deg=(0.0, 0.0))
    red = ((orbit.rgba[..., 0] > 120) & (orbit.rgba[..., 1] < 80) & (orbit.rgba[..., 3] > 200)).sum(axis=(1, 2))
    assert int(np.argmax(red)) == 4  # 4 * 22.5 = 90 degrees
    assert red[12] == 0  # 270 degrees: occluded
    # frame 0 looks from +x: the +y marker appears on the right half of the image
    assert red_centroid(orbit.rgba[0])[0] > 0.6


def test_alpha_is_coverage() -> None:
    mesh = normalize_into_box(marker_scene((0.0, 0.0, 0.0), radius=0.5))
    view = render_views(mesh, C.orbit_cameras(1, elevation_deg=10.0), 64).rgba[0]
    alpha = view[..., 3].astype(int)
    assert alpha[0, 0] == 0 and alpha[32, 32] == 255
    partial = ((alpha > 0) & (alpha < 255)).sum()
    assert partial > 10  # anti-aliased silhouette
    assert (view[..., :3][alpha == 0] == 0).all()


def test_rendering_is_deterministic_and_objects_fit_in_view() -> None:
    gen = ProceduralObjectGenerator(3)
    for i in range(4):
        mesh = gen.build(i)
        a = render_orbit(mesh, 48, generator=torch.Generator().manual_seed(i))
        b = render_orbit(mesh, 48, generator=torch.Generator().manual_seed(i))
        np.testing.assert_array_equal(a.rgba, b.rgba)
        border = np.concatenate([a.rgba[:, 0, :, 3], a.rgba[:, -1, :, 3], a.rgba[:, :, 0, 3], a.rgba[:, :, -1, 3]])
        assert border.max() == 0, "object touches the image border"
        assert (a.rgba[..., 3] > 0).mean() > 0.03


def test_untextured_render_equals_white_texture_render() -> None:
    """Untextured faces are drawn with a 1x1 white texture: giving every face an explicit white texture changes no
    pixel (procedural objects render as before textures existed)."""
    import dataclasses

    mesh = ProceduralObjectGenerator(5).build(0)
    white = dataclasses.replace(mesh, uvs=np.zeros((len(mesh.vertices), 2), np.float32),
                                textures=[np.full((2, 2, 4), 255, np.uint8)],
                                face_texture=np.zeros(len(mesh.faces), np.int32), alpha_cutoff=[0.0])
    cams = C.orbit_cameras(3, elevation_deg=20.0)
    np.testing.assert_array_equal(render_views(mesh, cams, 64).rgba, render_views(white, cams, 64).rgba)


def test_faces_are_drawn_with_their_own_texture() -> None:
    """Three quads side by side in the y-z plane: textures red and blue, the middle one untextured green; the
    faces are interleaved so drawing them grouped by texture must keep each face with its texture."""
    quads, faces = [], []
    for i, y in enumerate((-0.6, 0.0, 0.6)):
        quads.append(np.array([[0, y - 0.25, -0.25], [0, y + 0.25, -0.25], [0, y + 0.25, 0.25], [0, y - 0.25, 0.25]]))
        faces.append(np.array([[0, 1, 2], [0, 2, 3]]) + 4 * i)
    order = [0, 2, 4, 1, 3, 5]  # first triangles of every quad, then the second ones
    f = np.concatenate(faces)[order].astype(np.int32)
    v = np.concatenate(quads).astype(np.float32)
    colors = np.ones((12, 3), np.float32)
    colors[4:8] = (0.0, 1.0, 0.0)
    mesh = ColoredMesh("quads", "quads", v, f, colors, np.tile(np.float32([1, 0, 0]), (12, 1)),
                       np.zeros(12, np.float32), uvs=np.full((12, 2), 0.5, np.float32),
                       textures=[np.array([[[255, 0, 0, 255]]], np.uint8), np.array([[[0, 0, 255, 255]]], np.uint8)],
                       face_texture=np.array([0, -1, 1, 0, -1, 1], np.int32), alpha_cutoff=[0.0, 0.0])
    view = render_views(mesh, C.orbit_cameras(1, elevation_deg=0.0), 96).rgba[0].astype(int)
    row = view[48]  # from +x: world +y is on the image's right
    hits = [tuple(np.sign(row[c, :3] - 128)) for c in (48 - 29, 48, 48 + 29)]
    assert hits == [(1, -1, -1), (-1, 1, -1), (-1, -1, 1)], hits  # red (y<0), green, blue (y>0)
