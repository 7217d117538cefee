"""Triplanes: tokens -> planes (shared ConvTranspose2d) and point-feature lookup.

Plane axes (docs/lrm.md): plane 0 is indexed by (u, v) = (x, y), plane 1 by (x, z), plane 2 by
(z, y); u indexes width, v height; bilinear ``grid_sample``, ``align_corners=False``, zero padding.
The box [-1, 1]^3 maps directly onto the plane's [-1, 1]^2 sampling range.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# (u, v) world-axis indices of each plane.
PLANE_AXES = ((0, 1), (0, 2), (2, 1))


class TriplaneUpsampler(nn.Module):
    """Transformer tokens [N, 3*h*w, D] -> planes [N, 3, C, 2h, 2w]."""

    def __init__(self, dim: int, plane_dim: int, low_res: int):
        super().__init__()
        self.low_res = low_res
        self.deconv = nn.ConvTranspose2d(dim, plane_dim, kernel_size=2, stride=2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """[N, 3*h*w, D] (plane-major, then row, then column) -> [N, 3, C, 2h, 2w]."""
        n, length, dim = tokens.shape
        h = w = self.low_res
        assert length == 3 * h * w, f"expected {3 * h * w} tokens, got {length}"
        grid = tokens.reshape(n, 3, h, w, dim).permute(0, 1, 4, 2, 3).reshape(n * 3, dim, h, w)
        planes = self.deconv(grid)  # [N*3, C, 2h, 2w]
        return planes.reshape(n, 3, *planes.shape[1:])


def sample_triplane(planes: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinear features of world points from each plane, concatenated in plane order.

    planes [N, 3, C, H, W], points [N, P, 3] -> features [N, P, 3C].
    """
    n, num_planes, c, h, w = planes.shape
    assert num_planes == 3 and points.shape[0] == n and points.shape[-1] == 3, (planes.shape, points.shape)
    uv = torch.stack([points[..., list(axes)] for axes in PLANE_AXES], dim=1)  # [N, 3, P, 2]
    feats = F.grid_sample(planes.reshape(n * 3, c, h, w), uv.reshape(n * 3, 1, -1, 2).to(planes.dtype),
                          mode="bilinear", padding_mode="zeros", align_corners=False)  # [N*3, C, 1, P]
    feats = feats.reshape(n, 3, c, -1).permute(0, 3, 1, 2)  # [N, P, 3, C]
    return feats.reshape(n, -1, 3 * c)
