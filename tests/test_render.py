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
