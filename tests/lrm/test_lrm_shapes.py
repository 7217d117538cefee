"""Shapes and input validation of the public LRM API."""

from __future__ import annotations

import pytest
import torch


def test_encode_shapes(tiny_model, tiny_planes):
    cfg = tiny_model.config
    assert tiny_planes.shape == (2, 3, cfg.triplane_dim, cfg.triplane_high_res, cfg.triplane_high_res)
    assert torch.isfinite(tiny_planes).all()


def test_render_shapes_and_ranges(tiny_model, tiny_planes, turntable_vectors):
    with torch.no_grad():
        out = tiny_model.render(tiny_planes, turntable_vectors(2, 3), 12)
    assert out["rgb"].shape == (2, 3, 3, 12, 12)
    assert out["depth"].shape == (2, 3, 1, 12, 12)
    assert out["alpha"].shape == (2, 3, 1, 12, 12)
    assert (out["alpha"] >= 0).all() and (out["alpha"] <= 1 + 1e-6).all()
    assert (out["rgb"] >= -0.002).all() and (out["rgb"] <= 1.002).all()
    # cameras at radius 1.5: every finite depth lies between the nearest and farthest box point
    assert (out["depth"] >= 1.5 - 3**0.5 - 1e-4).all() and (out["depth"] <= 1.5 + 3**0.5 + 1e-4).all()


def test_crop_equals_region_of_full_render(tiny_model, tiny_planes, turntable_vectors):
    cams = turntable_vectors(2, 2)
    with torch.no_grad():
        full = tiny_model.render(tiny_planes, cams, 16)
        patch = tiny_model.render(tiny_planes, cams, 16, crop=(3, 5, 6, 8))
    assert patch["rgb"].shape == (2, 2, 3, 6, 8)
    torch.testing.assert_close(patch["rgb"], full["rgb"][..., 3:9, 5:13], atol=1e-5, rtol=0)
    torch.testing.assert_close(patch["alpha"], full["alpha"][..., 3:9, 5:13], atol=1e-5, rtol=0)


def test_query_density_shapes(tiny_model, tiny_planes):
    points = torch.rand(2, 50, 3) * 2 - 1
    with torch.no_grad():
        density, rgb = tiny_model.query_density(tiny_planes, points)
    assert density.shape == (2, 50, 1) and rgb.shape == (2, 50, 3)
    assert (density >= 0).all()


def test_bad_shapes_are_rejected(tiny_model, tiny_planes, tiny_inputs, turntable_vectors):
    image, cam = tiny_inputs
    with pytest.raises(ValueError):
        tiny_model.encode(image, cam[:, :12])
    with pytest.raises(ValueError):
        tiny_model.encode(image[:, :1], cam)
    with pytest.raises(ValueError):
        tiny_model.render(tiny_planes, turntable_vectors(2, 2)[..., :16], 8)
    with pytest.raises(ValueError):
        tiny_model.query_density(tiny_planes, torch.zeros(2, 5, 2))


def test_forward_returns_planes_and_views(tiny_model, tiny_inputs, turntable_vectors):
    with torch.no_grad():
        out = tiny_model(*tiny_inputs, turntable_vectors(2, 1), 8)
    assert set(out) == {"planes", "rgb", "depth", "alpha"}
    assert out["rgb"].shape == (2, 1, 3, 8, 8)


def test_gradients_reach_every_parameter(tiny_model, tiny_inputs, turntable_vectors):
    tiny_model.zero_grad()
    out = tiny_model(*tiny_inputs, turntable_vectors(2, 1), 6, deterministic=False,
                     generator=torch.Generator().manual_seed(0))
    (out["rgb"].mean() + out["alpha"].mean()).backward()
    no_grad = [n for n, p in tiny_model.named_parameters()
               if p.grad is None and "mask_token" not in n]
    tiny_model.zero_grad()
    assert no_grad == []


def test_attention_matches_torch_multihead_attention():
    """Our bias-free attention equals nn.MultiheadAttention with the same (released) weights."""
    from vfusion3d_core.lrm.attention import CrossAttention, SelfAttention

    torch.manual_seed(0)
    x, ctx = torch.randn(2, 7, 16), torch.randn(2, 5, 12)
    ref_cross = torch.nn.MultiheadAttention(16, 4, kdim=12, vdim=12, bias=False, batch_first=True)
    ours_cross = CrossAttention(16, 12, 4)
    ours_cross.load_state_dict(ref_cross.state_dict())
    torch.testing.assert_close(ours_cross(x, ctx), ref_cross(x, ctx, ctx, need_weights=False)[0])
    ref_self = torch.nn.MultiheadAttention(16, 4, bias=False, batch_first=True)
    ours_self = SelfAttention(16, 4)
    ours_self.load_state_dict(ref_self.state_dict())
    torch.testing.assert_close(ours_self(x), ref_self(x, x, x, need_weights=False)[0])
