"""Plane layout and axes: tokens -> planes order and point -> plane projections (docs/lrm.md)."""

from __future__ import annotations

import torch

from vfusion3d_core.lrm.triplane import TriplaneUpsampler, sample_triplane


def coordinate_planes(size: int) -> torch.Tensor:
    """[1, 3, 2, size, size]: channel 0 = the pixel centre's u (width) coordinate, channel 1 = v."""
    centres = (2 * torch.arange(size, dtype=torch.float32) + 1) / size - 1
    v, u = torch.meshgrid(centres, centres, indexing="ij")
    return torch.stack([u, v])[None, None].expand(1, 3, 2, size, size).clone()


def test_plane_axes_from_planted_coordinates():
    size = 16
    planes = coordinate_planes(size)
    gen = torch.Generator().manual_seed(0)
    points = (torch.rand(1, 200, 3, generator=gen) * 2 - 1) * (1 - 1 / size)  # stay inside pixel centres
    feats = sample_triplane(planes, points)[0]  # [P, 6] = (u0, v0, u1, v1, u2, v2)
    x, y, z = points[0].unbind(-1)
    expected = torch.stack([x, y, x, z, z, y], -1)  # plane0 (x, y), plane1 (x, z), plane2 (z, y)
    torch.testing.assert_close(feats, expected, atol=1e-5, rtol=0)


def test_planes_are_distinguished_by_index():
    planes = torch.zeros(1, 3, 1, 4, 4)
    planes[0, 1] = 5.0  # only plane 1 carries a value
    feats = sample_triplane(planes, torch.zeros(1, 1, 3))[0, 0]
    assert feats.tolist() == [0.0, 5.0, 0.0]


def test_outside_box_samples_zero_padding():
    planes = torch.ones(1, 3, 1, 4, 4)
    feats = sample_triplane(planes, torch.tensor([[[3.0, 0.0, 0.0]]]))[0, 0]
    # x = 3 lies off planes 0 and 1 (they use x), plane 2 (z, y) still sees (0, 0)
    assert feats.tolist() == [0.0, 0.0, 1.0]


def test_tokens_are_plane_major_then_row_then_column():
    h, dim = 3, 2
    up = TriplaneUpsampler(dim, dim, h)
    with torch.no_grad():
        up.deconv.weight.zero_()
        up.deconv.bias.zero_()
        for c in range(dim):
            up.deconv.weight[c, c] = 1.0  # every 2x2 output pixel copies its input token
    tokens = torch.zeros(1, 3 * h * h, dim)
    for p in range(3):
        for i in range(h):
            for j in range(h):
                tokens[0, p * h * h + i * h + j] = torch.tensor([100 * p + 10 * i + j, -1.0])
    planes = up(tokens)
    assert planes.shape == (1, 3, dim, 2 * h, 2 * h)
    for p in range(3):
        for i in range(2 * h):
            for j in range(2 * h):
                assert planes[0, p, 0, i, j].item() == 100 * p + 10 * (i // 2) + j // 2
    assert (planes[0, :, 1] == -1).all()
