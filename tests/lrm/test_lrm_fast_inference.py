"""Fast inference: the exact path stays pinned; the fast paths stay within their
documented tolerances (docs/lrm.md, "Fast inference") on tiny configs and analytic fields."""

from __future__ import annotations

import copy
import hashlib

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from vfusion3d_core.cameras import Intrinsics, rays_from_cameras, spherical_cameras
from vfusion3d_core.lrm import LRM, get_preset
from vfusion3d_core.lrm.decoder import mask_out_of_box
from vfusion3d_core.lrm.fast_render import render_rays_skipping
from vfusion3d_core.lrm.fused_field import FusedField
from vfusion3d_core.lrm.inference import InferenceOptions, chunk_sizes, fast_bf16, working_memory_bytes
from vfusion3d_core.lrm.mesh import (
    coarse_to_fine_grid,
    density_grid,
    extract_mesh,
    marching_cubes,
    mesh_from_fields,
)
from vfusion3d_core.lrm.renderer import RenderOptions, render_rays
from vfusion3d_core.lrm.testing import give_surface, object_planes

FP32 = InferenceOptions(dtype="float32", field_dtype="float32", mesh_dtype="float32")  # fused field + skipping, fp32
BF16 = InferenceOptions(dtype="bfloat16", field_dtype="bfloat16", mesh_dtype="bfloat16")


def digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        array = a.detach().contiguous().numpy() if isinstance(a, torch.Tensor) else np.ascontiguousarray(a)
        h.update(array.tobytes())
    return h.hexdigest()[:16]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(-10 * torch.log10(((a - b) ** 2).mean()))


@pytest.fixture(scope="module")
def sponge_model(tiny_model, tiny_planes):
    """The tiny model with a dense 15% of the box (``give_surface``): a random model's iso-surface
    is a sponge of walls and tubes spanning the box, the worst case for skipping and meshing."""
    model = copy.deepcopy(tiny_model)
    with torch.no_grad():
        give_surface(model, tiny_planes[:1])
    return model


@pytest.fixture(scope="module")
def object_scene():
    """A tiny-scale model (planes of 32 channels, so ``object_planes`` can steer its decoder) and
    planes whose field is one blobby object with a sharp surface: the representative case."""
    config = get_preset("tiny")
    config.triplane_dim = 32
    torch.manual_seed(0)
    model = LRM(config).eval()
    with torch.no_grad():
        planes = object_planes(model)
        give_surface(model, planes, shell=0.05)
    return model, planes


# ----------------------------------------------------------------------------------------- exact
# SHA-256 prefixes of the exact path's outputs on the conftest tiny model, recorded with the code
# before the fast path existed. Float kernels differ between CPU instruction sets and torch
# versions, so the pin applies where it was recorded; everywhere else the options=None vs
# InferenceOptions.exact() equality below still holds. The render digest was re-recorded when ray
# generation and the slab test moved to the released float32 operation order (test_lrm_exact_render:
# the exit sample of ~9% of rays flipped inside/outside); planes and mesh are unchanged.
PINNED = {
    ("2.13.0", "AVX512"): {"planes": "53cd3a408d4aee30", "render": "2315a4c7304dea39", "mesh": "d3698474023a8e95"},
}


def test_exact_path_is_bit_for_bit_the_reference(tiny_model, tiny_inputs, tiny_planes, shaped_tiny_model,
                                                 turntable_vectors):
    cams = turntable_vectors(2, 3)
    with torch.no_grad():
        planes = tiny_model.encode(*tiny_inputs)
        planes_exact = tiny_model.encode(*tiny_inputs, options=InferenceOptions.exact())
        ref = tiny_model.render(planes, cams, 12)
        exact = tiny_model.render(planes, cams, 12, options=InferenceOptions.exact(), chunk_rays=4096)
        mesh = extract_mesh(shaped_tiny_model, tiny_planes[:1], resolution=20)
    assert torch.equal(planes, planes_exact)
    for key in ("rgb", "depth", "alpha"):
        assert torch.equal(ref[key], exact[key])
    got = {"planes": digest(planes), "render": digest(ref["rgb"], ref["depth"], ref["alpha"]),
           "mesh": digest(np.asarray(mesh.vertices, dtype=np.float32), np.asarray(mesh.faces),
                          np.asarray(mesh.visual.vertex_colors))}
    key = (torch.__version__.split("+")[0], torch.backends.cpu.get_cpu_capability())
    if key not in PINNED:
        pytest.skip(f"exact-output digests recorded for {sorted(PINNED)} only, this is {key}")
    assert got == PINNED[key]


def test_options_validation_and_exact_flag():
    assert InferenceOptions.exact().is_exact and not InferenceOptions().is_exact
    assert InferenceOptions(dtype="float32").compute_dtype("cpu") == torch.float32
    assert BF16.compute_dtype("cpu", "field") == torch.bfloat16
    assert InferenceOptions().compute_dtype("cpu", "mesh") == torch.float32
    auto = InferenceOptions().compute_dtype("cpu")
    assert auto == (torch.bfloat16 if fast_bf16(torch.device("cpu")) else torch.float32)
    with pytest.raises(ValueError):
        InferenceOptions(dtype="float16")
    with pytest.raises(ValueError):
        InferenceOptions(max_memory_gb=0)


# ----------------------------------------------------------------------------------- fused field
def test_fused_field_equals_query_raw_in_fp32(tiny_model, tiny_planes):
    gen = torch.Generator().manual_seed(3)
    points = torch.cat([torch.rand(3000, 3, generator=gen) * 2.2 - 1.1,  # some out of the box
                        torch.tensor([[1.0, -1.0, 1.0], [-1.0, 0.999, 0.0], [0.0, 0.0, 0.0]])])
    field = FusedField(tiny_model.decoder, tiny_planes[1:2], torch.float32, chunk_points=700)
    raw, rgb = field(points)
    with torch.no_grad():
        ref_raw, ref_rgb = tiny_model.query_raw(tiny_planes[1:2], points[None])
    inside = (points.abs() <= 1).all(-1)
    assert (~inside).sum() > 100 and torch.equal(raw[~inside], ref_raw[0][~inside])  # masked identically
    torch.testing.assert_close(raw, ref_raw[0], atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(rgb, ref_rgb[0], atol=1e-6, rtol=0)


def test_fused_field_bf16_tolerance(tiny_model, tiny_planes):
    """bf16 projected planes + MLP: raw density within 2% of the raw range, rgb within 5e-3."""
    points = torch.rand(4000, 3, generator=torch.Generator().manual_seed(4)) * 2 - 1
    raw32, rgb32 = FusedField(tiny_model.decoder, tiny_planes[:1], torch.float32)(points)
    raw16, rgb16 = FusedField(tiny_model.decoder, tiny_planes[:1], torch.bfloat16)(points)
    assert raw16.dtype == torch.float32
    assert (raw16 - raw32).abs().max() <= 0.02 * (raw32.max() - raw32.min())
    assert (rgb16 - rgb32).abs().max() <= 5e-3


def test_encode_bf16_tolerance(tiny_model, tiny_inputs, tiny_planes):
    """bf16 autocast encode: planes within 2% relative L2 (and 5% of max |plane| pointwise) of fp32."""
    with torch.no_grad():
        planes = tiny_model.encode(*tiny_inputs, options=BF16)
    assert planes.dtype == torch.float32 and planes.shape == tiny_planes.shape
    assert (planes - tiny_planes).norm() / tiny_planes.norm() < 0.02
    assert (planes - tiny_planes).abs().max() < 0.05 * tiny_planes.abs().max()


# -------------------------------------------------------------------------------------- rendering
def sphere_field(radius: float = 0.5):
    def field(points):
        inside = points.norm(dim=-1, keepdim=True) < radius
        raw = torch.where(inside, 60.0, -30.0)
        rgb = (points + 1) / 2
        return mask_out_of_box(points, raw, rgb)
    return field


def test_skipping_on_an_analytic_sphere():
    """Empty space around and behind an opaque sphere is skipped; the image stays within 2e-3."""
    size = 40
    cams = spherical_cameras(torch.tensor([30.0]), torch.tensor([20.0]), 1.5, Intrinsics())
    origins, dirs = rays_from_cameras(cams.c2w, cams.intrinsics, size)
    o, d = origins.reshape(1, -1, 3), dirs.reshape(1, -1, 3)
    rgb, depth, alpha = render_rays([sphere_field()], o, d, RenderOptions(128))
    f_rgb, f_depth, f_alpha, evaluated = render_rays_skipping([sphere_field()], o, d, 128, chunk_rays=333)
    assert evaluated < 0.7 * o.shape[1] * 128  # > 30% of the samples never reach the field
    assert (f_rgb - rgb).abs().max() < 2e-3 and (f_alpha - alpha).abs().max() < 2e-3
    assert (f_depth - depth).abs().max() < 5e-3
    none = render_rays_skipping([sphere_field()], o, d, 128, chunk_rays=4096, weight_eps=None)
    assert none[3] == o.shape[1] * 128
    torch.testing.assert_close(none[0], rgb, atol=1e-6, rtol=0)


def render_errors(model, planes, cams, size: int, options: InferenceOptions):
    with torch.no_grad():
        exact = model.render(planes, cams, size)
        stats: dict = {}
        fast = model.render(planes, cams, size, options=options, stats=stats)
    diff = (fast["rgb"] - exact["rgb"]).abs()
    return psnr(fast["rgb"], exact["rgb"]), float(diff.mean()), float(diff.max()), stats["evaluated"] / stats["samples"]


@pytest.mark.parametrize("spp", [32, 128])
def test_fast_render_tolerance_on_an_object(object_scene, turntable_vectors, spp):
    """Documented tolerances (docs/lrm.md): skipping alone (fp32 fused field) is invisible on an
    object, PSNR >= 80 dB vs exact while >= 25% of the samples are skipped; the bf16 field adds
    PSNR >= 40 dB, mean abs <= 3e-3."""
    model, planes = object_scene
    model = copy.deepcopy(model)
    model.config.rendering_samples_per_ray = spp
    cams = turntable_vectors(1, 3)
    p32, _, max32, share = render_errors(model, planes, cams, 40, FP32)
    assert p32 > 80 and max32 < 1e-3 and share < 0.75
    p16, mean16, _, _ = render_errors(model, planes, cams, 40, BF16)
    assert p16 > 40 and mean16 < 3e-3


def test_fast_render_tolerance_worst_case_sponge(sponge_model, tiny_planes, turntable_vectors):
    """Thin walls that fall between coarse samples are only found by the exact renderer's extra
    importance samples: the skipping error's worst case, PSNR >= 35 dB, mean abs <= 3e-3."""
    p32, mean32, _, share = render_errors(sponge_model, tiny_planes[:1], turntable_vectors(1, 3), 40, FP32)
    assert p32 > 35 and mean32 < 3e-3 and share < 0.95


def test_fused_unskipped_render_equals_exact(tiny_model, tiny_planes, turntable_vectors):
    cams = turntable_vectors(2, 2)
    with torch.no_grad():
        exact = tiny_model.render(tiny_planes, cams, 14)
        fused = tiny_model.render(tiny_planes, cams, 14, options=FP32.replace(skip_empty=False))
        unfused = tiny_model.render(tiny_planes, cams, 14, options=FP32.replace(fused_field=False))
    for key in ("rgb", "depth", "alpha"):
        torch.testing.assert_close(fused[key], exact[key], atol=1e-5, rtol=0)
        torch.testing.assert_close(unfused[key], exact[key], atol=1e-5, rtol=0)


def test_fast_render_is_deterministic_and_chunk_invariant(object_scene, turntable_vectors):
    model, planes = object_scene
    cams = turntable_vectors(1, 2)
    with torch.no_grad():
        a = model.render(planes, cams, 20, options=BF16)
        b = model.render(planes, cams, 20, options=BF16)
        c = model.render(planes, cams, 20, options=BF16, chunk_rays=97)
    for key in ("rgb", "depth", "alpha"):
        assert torch.equal(a[key], b[key])
        torch.testing.assert_close(a[key], c[key], atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------------------- memory
def test_chunk_sizes_follow_the_memory_budget(monkeypatch):
    import vfusion3d_core.lrm.inference as inference

    assert working_memory_bytes("cpu", 1e-3) == inference.MIN_WORKING_BYTES
    monkeypatch.setattr(inference, "process_rss_bytes", lambda: 1 << 30)
    small = working_memory_bytes("cpu", 1.5)
    large = working_memory_bytes("cpu", 3.0)
    assert small <= (1 << 29) and large > small
    rays_small, _ = chunk_sizes("cpu", 1.5, 128, fused=True)
    rays_large, points = chunk_sizes("cpu", 3.0, 128, fused=True)
    assert rays_large >= rays_small and points <= inference.CPU_FIELD_CHUNK
    exact_rays, _ = chunk_sizes("cpu", 1.5, 128, fused=False)
    assert exact_rays * 64 * inference.BYTES_PER_POINT_EXACT <= max(small, inference.MIN_WORKING_BYTES)


# ----------------------------------------------------------------------------------------- meshing
def torus_density(points: torch.Tensor) -> torch.Tensor:
    q = torch.stack([points[:, :2].norm(dim=-1) - 0.5, points[:, 2]], -1)
    return 1 + 8 * (0.2 - q.norm(dim=-1))


def chamfer_voxels(a: np.ndarray, b: np.ndarray, resolution: int) -> tuple[float, float]:
    da, _ = cKDTree(b).query(a)
    db, _ = cKDTree(a).query(b)
    voxel = 2 / (resolution - 1)
    return (da.mean() + db.mean()) / 2 / voxel, max(da.max(), db.max()) / voxel


def test_coarse_to_fine_grid_on_a_torus():
    n = 97
    stats: dict = {}
    dense = density_grid(torus_density, n)
    sparse = coarse_to_fine_grid(torus_density, n, 1.0, stride=4, dilate=1, chunk_points=5000, stats=stats)
    assert stats["evaluated"] < 0.35 * n ** 3
    near = np.abs(dense - 1.0) < 0.5  # every vertex this close to the level was evaluated exactly
    np.testing.assert_allclose(sparse[near], dense[near], rtol=0, atol=1e-6)
    assert ((sparse > 1.0) == (dense > 1.0)).all()  # interpolation never flips a side of the level
    (va, fa), (vb, fb) = marching_cubes(dense), marching_cubes(sparse)
    mean, worst = chamfer_voxels(va, vb, n)
    assert mean < 0.01 and worst < 0.5 and abs(len(fa) - len(fb)) <= 0.01 * len(fa)
    # scanning only the refined box gives the same triangles as scanning the whole grid
    (x0, x1), (y0, y1), (z0, z1) = stats["bounds"]
    assert (x1 - x0 + 1) * (y1 - y0 + 1) * (z1 - z0 + 1) < 0.5 * n ** 3
    vc, fc = marching_cubes(sparse, 1.0, stats["bounds"])
    assert len(fc) == len(fb)
    np.testing.assert_allclose(np.sort(vc, axis=0), np.sort(vb, axis=0), atol=1e-6)
    np.testing.assert_allclose(np.sort(vc[fc].mean(1), axis=0), np.sort(vb[fb].mean(1), axis=0), atol=1e-6)


def test_coarse_to_fine_mesh_of_an_object_matches_dense(object_scene):
    """Chamfer distance fast mesh vs exact dense-grid mesh: < 0.01 voxel with the fp32 field (the
    grids agree wherever the surface is), < 0.5 voxel with the bf16 field."""
    model, planes = object_scene
    n = 64
    with torch.no_grad():
        exact = extract_mesh(model, planes, resolution=n)
        stats: dict = {}
        fast = extract_mesh(model, planes, resolution=n, options=FP32, stats=stats)
        fast16 = extract_mesh(model, planes, resolution=n, options=BF16)
    assert stats["evaluated"] < 0.5 * stats["vertices"]
    assert chamfer_voxels(np.asarray(fast.vertices), np.asarray(exact.vertices), n)[0] < 0.01
    assert chamfer_voxels(np.asarray(fast16.vertices), np.asarray(exact.vertices), n)[0] < 0.5
    assert fast.visual.vertex_colors.shape == (len(fast.vertices), 4)
    assert abs(len(fast.faces) - len(exact.faces)) <= 0.01 * len(exact.faces)


def test_coarse_to_fine_mesh_worst_case_sponge(sponge_model, tiny_planes):
    """Walls thinner than a coarse cell can be missed entirely; the mean distance stays < 0.5 voxel."""
    n = 64
    with torch.no_grad():
        exact = extract_mesh(sponge_model, tiny_planes[:1], resolution=n)
        fast = extract_mesh(sponge_model, tiny_planes[:1], resolution=n, options=FP32)
    assert chamfer_voxels(np.asarray(fast.vertices), np.asarray(exact.vertices), n)[0] < 0.5


def test_mesh_from_fields_coarse_stride_and_empty():
    mesh = mesh_from_fields(torus_density, None, resolution=41, coarse_stride=5)
    assert mesh.is_watertight
    from vfusion3d_core.lrm.mesh import EmptyMeshError
    with pytest.raises(EmptyMeshError):
        mesh_from_fields(lambda p: torch.zeros(len(p)), None, resolution=17, coarse_stride=4)
