"""Volume renderer maths: ray limits, masking, compositing, importance sampling, determinism."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vfusion3d_core.cameras import Intrinsics, spherical_cameras
from vfusion3d_core.lrm.compositing import composite
from vfusion3d_core.lrm.decoder import OUT_OF_BOX_DENSITY, mask_out_of_box
from vfusion3d_core.lrm.importance import importance_depths, sample_pdf
from vfusion3d_core.lrm.ray_limits import fill_missed_rays, ray_box_limits
from vfusion3d_core.lrm.renderer import RenderOptions, render_rays


def constant_field(raw_value: float, colour: tuple[float, float, float]):
    def field(points):
        raw = torch.full((points.shape[0], 1), raw_value)
        rgb = torch.tensor(colour).expand(points.shape[0], 3)
        return mask_out_of_box(points, raw, rgb)
    return field


def sphere_field(radius: float, inside_raw: float = 200.0):
    def field(points):
        inside = points.norm(dim=-1, keepdim=True) < radius
        raw = torch.where(inside, inside_raw, -30.0)
        return mask_out_of_box(points, raw, torch.full((points.shape[0], 3), 0.25))
    return field


def test_ray_box_limits_known_values():
    origins = torch.tensor([[0.0, 0.0, 3.0], [3.0, 3.0, 0.0], [5.0, 0.0, 0.0]])
    dirs = F.normalize(torch.tensor([[0.0, 0.0, -1.0], [-1.0, -1.0, 0.0], [0.0, 1.0, 0.0]]), dim=-1)
    start, end, valid = ray_box_limits(origins, dirs)
    assert valid.tolist() == [True, True, False]
    torch.testing.assert_close(start[:2], torch.tensor([2.0, 2 * math.sqrt(2)]))
    torch.testing.assert_close(end[:2], torch.tensor([4.0, 4 * math.sqrt(2)]))
    start, end = fill_missed_rays(start, end, valid)
    assert start[2] == start[:2].min() and end[2] == start[:2].max()


def test_out_of_box_masking_values():
    points = torch.tensor([[0.0, 0.0, 0.0], [1.0, -1.0, 1.0], [1.0001, 0.0, 0.0], [0.0, -2.0, 0.0]])
    raw, rgb = mask_out_of_box(points, torch.full((4, 1), 7.0), torch.full((4, 3), 0.5))
    assert raw[:, 0].tolist()[:2] == [7.0, 7.0]
    assert (raw[2:, 0] == torch.tensor(OUT_OF_BOX_DENSITY, dtype=torch.float32)).all()
    assert (rgb[2:] == 0).all() and (rgb[:2] == 0.5).all()
    # two masked samples average without overflowing to -inf; their activated density is 0
    assert torch.isfinite(raw[2:].sum(0) / 2).all()


def test_model_masks_out_of_box_queries(tiny_model, tiny_planes):
    points = torch.tensor([[[0.2, 0.1, -0.3], [1.5, 0.0, 0.0]]]).expand(2, -1, -1)
    with torch.no_grad():
        raw, rgb = tiny_model.query_raw(tiny_planes, points)
        density, _ = tiny_model.query_density(tiny_planes, points)
    assert (raw[:, 1, 0] == torch.tensor(OUT_OF_BOX_DENSITY)).all() and (rgb[:, 1] == 0).all()
    assert (density[:, 1] == 0).all() and (density[:, 0] > 0).all()


def test_uniform_slab_composite_matches_beer_lambert():
    raw, colour = 2.0, (0.2, 0.4, 0.6)
    sigma = F.softplus(torch.tensor(raw - 1.0))
    origins, dirs = torch.tensor([[[0.0, 0.0, 3.0]]]), torch.tensor([[[0.0, 0.0, -1.0]]])
    rgb, depth, alpha = render_rays([constant_field(raw, colour)], origins, dirs, RenderOptions(64))
    expected_alpha = 1 - torch.exp(-sigma * 2.0)  # path length 2 through the box
    torch.testing.assert_close(alpha[0, 0], expected_alpha, atol=1e-5, rtol=0)
    torch.testing.assert_close(rgb[0, 0], torch.tensor(colour) * expected_alpha, atol=1e-5, rtol=0)
    # expected depth of an exponential distribution truncated to [2, 4]
    s = sigma.item()
    mean = 2 + (1 / s - 2 * math.exp(-2 * s) / (1 - math.exp(-2 * s)))
    assert abs(depth[0, 0].item() - mean) < 0.02


def test_composite_weights_definition():
    depths = torch.tensor([[0.0, 1.0, 3.0]])
    raw = torch.tensor([[[1.0], [3.0], [5.0]]])
    rgb = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])
    out = composite(depths, rgb, raw)
    sig = F.softplus(torch.tensor([2.0, 4.0]) - 1)
    a = 1 - torch.exp(-sig * torch.tensor([1.0, 2.0]))
    w = torch.stack([a[0], a[1] * (1 - a[0] + 1e-10)])
    torch.testing.assert_close(out.weights[0], w)
    torch.testing.assert_close(out.rgb[0], w[0] * torch.tensor([0.5, 0.5, 0]) + w[1] * torch.tensor([0, 0.5, 0.5]))
    torch.testing.assert_close(out.depth[0], (w[0] * 0.5 + w[1] * 2.0) / w.sum())


def test_empty_rays_get_white_background_and_clamped_depth():
    origins = torch.tensor([[[0.0, 0.0, 3.0], [0.0, 0.0, 3.0]]])
    dirs = torch.tensor([[[0.0, 0.0, -1.0], [0.0, 0.0, 1.0]]])  # second ray points away from the box
    rgb, depth, alpha = render_rays([constant_field(-40.0, (1.0, 0.0, 0.0))], origins, dirs, RenderOptions(16))
    assert alpha.abs().max() < 1e-6 and rgb.abs().max() < 1e-6
    assert torch.isfinite(depth).all()  # NaN -> inf -> clamped to the batch's sample-depth range


def test_sample_pdf_uniform_weights_is_linear():
    bins = torch.linspace(1.0, 2.0, 9)[None]  # 9 edges -> up to 8 bins
    samples = sample_pdf(bins, torch.ones(1, 8), 5, deterministic=True)
    torch.testing.assert_close(samples[0], torch.linspace(1.0, 2.0, 5), atol=1e-5, rtol=0)


def test_sample_pdf_concentrates_on_heavy_bin():
    bins = torch.arange(6, dtype=torch.float32)[None]
    weights = torch.tensor([[0.0, 0.0, 100.0, 0.0, 0.0]])
    samples = sample_pdf(bins, weights, 33, deterministic=True)[0]
    inside = ((samples >= 2) & (samples <= 3)).float().mean()
    assert inside > 0.9
    assert torch.all(samples[1:] >= samples[:-1])  # monotone in u
    assert samples[0] == 0.0 and samples[-1] == 5.0


def test_importance_depths_count_and_range():
    coarse = torch.linspace(2.0, 4.0, 16)[None].repeat(3, 1)
    weights = torch.rand(3, 15, generator=torch.Generator().manual_seed(0))
    fine = importance_depths(coarse, weights, 16, deterministic=True)
    assert fine.shape == (3, 16)
    mids = (coarse[:, 1:] + coarse[:, :-1]) / 2
    assert (fine >= mids[:, :1] - 1e-6).all() and (fine <= mids[:, -2:-1] + 1e-6).all()


def test_sphere_silhouette_and_depth():
    size, radius = 48, 0.5
    cams = spherical_cameras(torch.tensor([30.0]), torch.tensor([20.0]), 1.5, Intrinsics())
    from vfusion3d_core.cameras import rays_from_cameras
    origins, dirs = rays_from_cameras(cams.c2w, cams.intrinsics, size)
    rgb, depth, alpha = render_rays([sphere_field(radius)], origins.reshape(1, -1, 3), dirs.reshape(1, -1, 3),
                                    RenderOptions(128))
    pixel_radius = math.tan(math.asin(radius / 1.5)) * 0.75 * size
    area = (alpha > 0.5).sum().item()
    assert abs(area - math.pi * pixel_radius**2) / (math.pi * pixel_radius**2) < 0.06
    centre = depth.reshape(size, size)[size // 2 - 1: size // 2 + 1, size // 2 - 1: size // 2 + 1]
    assert (centre - (1.5 - radius)).abs().max() < 0.02  # expected excess 1/sigma = 0.005


def test_deterministic_render_is_reproducible_and_chunk_invariant(tiny_model, tiny_planes, turntable_vectors):
    cams = turntable_vectors(2, 2)
    with torch.no_grad():
        a = tiny_model.render(tiny_planes, cams, 10)
        b = tiny_model.render(tiny_planes, cams, 10)
        c = tiny_model.render(tiny_planes, cams, 10, chunk_rays=37)
    for key in ("rgb", "depth", "alpha"):
        assert torch.equal(a[key], b[key])
        torch.testing.assert_close(a[key], c[key], atol=1e-6, rtol=0)


def test_stochastic_render_depends_on_seed(tiny_model, tiny_planes, turntable_vectors):
    cams = turntable_vectors(2, 1)
    with torch.no_grad():
        r1 = tiny_model.render(tiny_planes, cams, 8, deterministic=False, generator=torch.Generator().manual_seed(1))
        r2 = tiny_model.render(tiny_planes, cams, 8, deterministic=False, generator=torch.Generator().manual_seed(1))
        r3 = tiny_model.render(tiny_planes, cams, 8, deterministic=False, generator=torch.Generator().manual_seed(2))
    assert torch.equal(r1["rgb"], r2["rgb"])
    assert not torch.equal(r1["rgb"], r3["rgb"])


def test_background_colour_per_view(tiny_model, tiny_planes, turntable_vectors):
    cams = turntable_vectors(2, 2)
    bg = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]]).expand(2, 2, 3)
    with torch.no_grad():
        white = tiny_model.render(tiny_planes, cams, 6)
        custom = tiny_model.render(tiny_planes, cams, 6, background=bg)
    diff = white["rgb"] - custom["rgb"]  # = (1 - alpha) * (white - bg)
    expected = (1 - white["alpha"]) * (1 - bg)[..., None, None]
    torch.testing.assert_close(diff, expected, atol=1e-5, rtol=0)


def blob_field(centre: tuple[float, float, float], radius: float = 0.25):
    c = torch.tensor(centre)

    def field(points):
        raw = torch.where((points - c).norm(dim=-1, keepdim=True) < radius, 100.0, -30.0)
        return mask_out_of_box(points, raw, torch.zeros(points.shape[0], 3))
    return field


def test_image_orientation_world_up_is_image_top_and_plus_y_is_right():
    """Default turntable frame 0 sits at +x looking at the origin with world +z up: a blob at +z
    must appear in the top rows, a blob at +y in the right columns (camera right = world +y)."""
    from vfusion3d_core.cameras import rays_from_cameras, turntable_cameras

    size = 24
    cams = turntable_cameras(1)
    origins, dirs = rays_from_cameras(cams.c2w, cams.intrinsics, size)
    o, d = origins.reshape(1, -1, 3), dirs.reshape(1, -1, 3)
    for centre, check in (((0.0, 0.0, 0.6), "top"), ((0.0, 0.6, 0.0), "right")):
        _, _, alpha = render_rays([blob_field(centre)], o, d, RenderOptions(32))
        rows, cols = torch.nonzero(alpha.reshape(size, size) > 0.5, as_tuple=True)
        assert len(rows) > 0
        if check == "top":
            assert rows.float().mean() < size / 2 - 3 and abs(cols.float().mean() - (size - 1) / 2) < 1
        else:
            assert cols.float().mean() > size / 2 + 3 and abs(rows.float().mean() - (size - 1) / 2) < 1
