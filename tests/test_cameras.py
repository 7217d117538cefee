import math

import pytest
import torch

from vfusion3d_core import cameras as C


def test_default_source_camera_is_the_released_one() -> None:
    vec = C.default_source_camera()
    expected = torch.tensor([0, 0, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0.75, 0.75, 0.5, 0.5], dtype=torch.float32)
    torch.testing.assert_close(vec, expected, atol=1e-6, rtol=0)


def test_rotations_are_orthonormal_and_right_handed() -> None:
    cams = C.random_cameras(64, elevation_range_deg=(-80, 80), radius_range=(0.5, 3.0),
                            generator=torch.Generator().manual_seed(1))
    rot = cams.c2w[:, :3, :3]
    torch.testing.assert_close(rot.transpose(1, 2) @ rot, torch.eye(3).expand(64, 3, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.linalg.det(rot), torch.ones(64), atol=1e-5, rtol=0)
    # camera "up" never points below the horizon and the camera looks at the origin
    assert (rot[:, 2, 1] > 0).all()
    forward = -rot[:, :, 2]
    to_origin = -cams.c2w[:, :3, 3] / cams.c2w[:, :3, 3].norm(dim=-1, keepdim=True)
    torch.testing.assert_close(forward, to_origin, atol=1e-5, rtol=0)
    torch.testing.assert_close(cams.c2w[:, :3, 3].norm(dim=-1), cams.radius, atol=1e-5, rtol=0)


def test_source_and_render_vectors_round_trip() -> None:
    cams = C.random_cameras(10, intrinsics=C.Intrinsics(0.8, 0.7, 0.52, 0.47),
                            generator=torch.Generator().manual_seed(2))
    src = cams.source_vectors()
    rnd = cams.render_vectors()
    assert src.shape == (10, 16) and rnd.shape == (10, 25)
    c2w, intr = C.from_source_vector(src)
    torch.testing.assert_close(c2w, cams.c2w)
    torch.testing.assert_close(intr, cams.intrinsics)
    c2w, intr = C.from_render_vector(rnd)
    torch.testing.assert_close(c2w, cams.c2w)
    torch.testing.assert_close(intr, cams.intrinsics)
    torch.testing.assert_close(C.source_to_render_vector(src), rnd)
    # render vector layout: 4x4 then K = [[fx,0,cx],[0,fy,cy],[0,0,1]]
    torch.testing.assert_close(rnd[0, 16:], torch.tensor([0.8, 0, 0.52, 0, 0.7, 0.47, 0, 0, 1.0]))


def test_box_centre_projects_to_image_centre() -> None:
    cams = C.random_cameras(32, generator=torch.Generator().manual_seed(3))
    uv, depth = C.project_points(torch.zeros(32, 1, 3), cams.c2w, cams.intrinsics)
    torch.testing.assert_close(uv, torch.full((32, 1, 2), 0.5), atol=1e-5, rtol=0)
    torch.testing.assert_close(depth[:, 0], cams.radius, atol=1e-5, rtol=0)


def test_image_axes_follow_the_convention() -> None:
    # Default view from +x: world +y appears to the right, world +z appears up (smaller row).
    cams = C.spherical_cameras(torch.zeros(1), torch.zeros(1), 1.5)
    pts = torch.tensor([[[0.0, 0.3, 0.0], [0.0, 0.0, 0.3]]])
    uv, _ = C.project_points(pts, cams.c2w, cams.intrinsics)
    assert uv[0, 0, 0] > 0.5 and abs(uv[0, 0, 1] - 0.5) < 1e-6
    assert uv[0, 1, 1] < 0.5 and abs(uv[0, 1, 0] - 0.5) < 1e-6
    assert math.isclose(float(uv[0, 0, 0]), 0.5 + 0.75 * 0.3 / 1.5, abs_tol=1e-6)


def test_orbit_azimuths_evenly_spaced_counter_clockwise() -> None:
    orbit = C.orbit_cameras(16, elevation_deg=20.0)
    torch.testing.assert_close(orbit.azimuth_deg, torch.arange(16) * 22.5)
    pos = orbit.c2w[:, :3, 3]
    # counter-clockwise seen from +z: the cross product of consecutive positions points up
    assert (torch.linalg.cross(pos[:-1], pos[1:], dim=-1)[:, 2] > 0).all()
    torch.testing.assert_close(pos[:, 2], torch.full((16,), 1.5 * math.sin(math.radians(20))), atol=1e-5, rtol=0)


def test_orbit_elevation_sampled_in_range_and_seeded() -> None:
    a = C.orbit_cameras(elevation_range_deg=(0, 45), generator=torch.Generator().manual_seed(5))
    b = C.orbit_cameras(elevation_range_deg=(0, 45), generator=torch.Generator().manual_seed(5))
    assert 0 <= float(a.elevation_deg[0]) <= 45
    torch.testing.assert_close(a.c2w, b.c2w)
    assert len(set(a.elevation_deg.tolist())) == 1


def test_rays_pass_through_their_pixels() -> None:
    cams = C.random_cameras(3, generator=torch.Generator().manual_seed(4))
    size = 8
    origins, dirs = C.rays_from_cameras(cams.c2w, cams.intrinsics, size)
    assert origins.shape == dirs.shape == (3, size, size, 3)
    torch.testing.assert_close(dirs.norm(dim=-1), torch.ones(3, size, size))
    pts = (origins + 2.0 * dirs).reshape(3, -1, 3)
    uv, depth = C.project_points(pts, cams.c2w, cams.intrinsics)
    grid = C.pixel_grid(size).reshape(1, -1, 2).expand(3, -1, -1)
    torch.testing.assert_close(uv, grid, atol=1e-5, rtol=0)
    assert (depth > 0).all()
    # a crop takes exactly the rows/cols of the full grid
    o2, d2 = C.rays_from_cameras(cams.c2w, cams.intrinsics, size, crop=(2, 3, 4, 5))
    torch.testing.assert_close(d2, dirs[:, 2:6, 3:8])


def test_look_at_rejects_degenerate_pose() -> None:
    with pytest.raises(ValueError):
        C.spherical_cameras(torch.zeros(1), torch.full((1,), 90.0), 1.5)
