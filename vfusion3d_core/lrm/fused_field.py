"""The decoder with its first layer folded into the planes (fast inference field).

The first decoder layer is linear and bilinear sampling is linear in the plane values, so
``W1 @ concat_p(bilinear(plane_p, uv_p)) = sum_p bilinear(W1_p @ plane_p, uv_p)``. Projecting each
plane once (``[C, H, W] -> [H, W, hidden]``, plus a third of the first bias) turns the per-point
work of ``grid_sample`` over 3 x C channels followed by a (3C -> hidden) matmul into a 12-tap
weighted gather of hidden-sized rows (``F.embedding_bag``, mode sum): the same algebra with
different rounding. Zero padding of ``grid_sample`` is reproduced by a zero border around each
projected plane.

The remaining MLP runs in the compute dtype (bf16 on hardware with fast bf16); raw density and rgb
come back in float32 and out-of-box points are masked exactly as in ``LRM.query_raw``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .decoder import OUT_OF_BOX_DENSITY, TriplaneDecoder, activate_density
from .triplane import PLANE_AXES

_UV_COLUMNS = [axis for axes in PLANE_AXES for axis in axes]  # (u0, v0, u1, v1, u2, v2)


class FusedField:
    """Field over one object's planes [1, 3, C, H, W] (or [3, C, H, W]):
    points [P, 3] -> (raw density [P, 1], rgb [P, 3]), float32, out-of-box masked."""

    def __init__(self, decoder: TriplaneDecoder, planes: torch.Tensor, dtype: torch.dtype = torch.float32,
                 chunk_points: int = 1 << 17):
        planes = planes[0] if planes.dim() == 5 else planes
        assert planes.dim() == 4 and planes.shape[0] == 3, f"planes must be [3, C, H, W], got {tuple(planes.shape)}"
        _, c, h, w = planes.shape
        first = decoder.layers[0]
        assert first.in_features == 3 * c, (first.in_features, planes.shape)
        weight = first.weight.detach().float()  # [hidden, 3C]
        with torch.no_grad():
            projected = torch.stack([
                torch.einsum("oc,chw->hwo", weight[:, p * c:(p + 1) * c], planes[p].detach().float())
                for p in range(3)])  # [3, H, W, hidden]
            table = F.pad(projected, (0, 0, 1, 1, 1, 1))  # zero border: [3, H+2, W+2, hidden]
            # the 4 bilinear weights of each plane sum to 1, so a third of the bias in every row
            # (border included) adds the bias exactly once over the 3 planes
            table = table + first.bias.detach().float() / 3
        self.dtype = dtype
        self.chunk_points = max(1, int(chunk_points))
        self.table = table.reshape(-1, weight.shape[0]).to(dtype).contiguous()
        self.layers = [(layer.weight.detach().to(dtype), layer.bias.detach().to(dtype))
                       for layer in decoder.layers[1:]]
        dev = planes.device
        self.half_size = torch.tensor([w / 2, h / 2], device=dev).repeat(3)  # (W/2, H/2) per plane
        self.row = w + 2
        self.base = torch.arange(3, device=dev) * (h + 2) * (w + 2)  # first row of each padded plane
        self.columns = torch.tensor(_UV_COLUMNS, device=dev)
        self.corner_offsets = torch.tensor([0, 1, self.row, self.row + 1], device=dev)

    def _taps(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """points [n, 3] -> (indices [n, 12] into the padded table, bilinear weights [n, 12])."""
        n = points.shape[0]
        # align_corners=False pixel coordinate, +1 for the zero border; out-of-box points are clamped
        # to the box here and masked afterwards.
        pix = (points.index_select(1, self.columns).clamp_(-1, 1) + 1).mul_(self.half_size).add_(0.5)  # [n, 6]
        lo = pix.floor()
        frac = pix.sub_(lo).view(n, 3, 2)  # (fx, fy) per plane
        lo = lo.long().view(n, 3, 2)
        top_left = self.base + lo[..., 1] * self.row + lo[..., 0]  # [n, 3]
        index = top_left[..., None] + self.corner_offsets  # [n, 3, 4]: (y0,x0) (y0,x1) (y1,x0) (y1,x1)
        w = torch.stack([1 - frac, frac], dim=-1)  # [n, 3, 2 (x, y), 2 (lo, hi)]
        weight = w[:, :, 1, :, None] * w[:, :, 0, None, :]  # [n, 3, 2 (y), 2 (x)]
        return index.view(n, 12), weight.view(n, 12)

    def _mlp(self, points: torch.Tensor) -> torch.Tensor:
        index, weight = self._taps(points)
        x = F.relu_(F.embedding_bag(index, self.table, mode="sum", per_sample_weights=weight.to(self.dtype)))
        for i, (w, b) in enumerate(self.layers):
            x = F.linear(x, w, b)
            if i < len(self.layers) - 1:
                x = F.relu_(x)
        return x.float()  # [n, 4]

    @torch.no_grad()
    def values(self, points: torch.Tensor) -> torch.Tensor:
        """points [P, 3] -> [P, 4] float32: raw density, then rgb; out-of-box masked."""
        assert points.dim() == 2 and points.shape[-1] == 3, points.shape
        points = points.float()
        out = torch.empty(points.shape[0], 4, device=points.device)
        for start in range(0, points.shape[0], self.chunk_points):
            chunk = out[start:start + self.chunk_points]
            chunk.copy_(self._mlp(points[start:start + self.chunk_points]))
            torch.sigmoid_(chunk[:, 1:]).mul_(1 + 2 * 0.001).sub_(0.001)
        outside = (points.abs() > 1).any(dim=-1)
        if bool(outside.any()):  # renderer samples lie inside the box: usually nothing to mask
            out[outside, 0] = OUT_OF_BOX_DENSITY
            out[outside, 1:] = 0
        return out

    def __call__(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """points [P, 3] -> raw density [P, 1], rgb [P, 3] (float32), out-of-box masked."""
        out = self.values(points)
        return out[:, :1], out[:, 1:]

    def density(self, points: torch.Tensor) -> torch.Tensor:
        """points [P, 3] -> activated density [P]."""
        return activate_density(self(points)[0])[:, 0]

    def colour(self, points: torch.Tensor) -> torch.Tensor:
        """points [P, 3] -> rgb [P, 3]."""
        return self(points)[1]
