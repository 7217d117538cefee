"""Alpha compositing over consecutive sample pairs (docs/lrm.md)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .decoder import activate_density


@dataclass
class Composite:
    """Per-ray compositing result. rgb [R, 3] (background not yet added), depth [R] (inf where the
    accumulated weight is 0; the batch-level clamp is applied by the renderer), alpha [R],
    weights [R, S-1]."""

    rgb: torch.Tensor
    depth: torch.Tensor
    alpha: torch.Tensor
    weights: torch.Tensor


def composite(depths: torch.Tensor, rgb: torch.Tensor, raw: torch.Tensor) -> Composite:
    """Composite S sorted samples per ray: depths [R, S], rgb [R, S, 3], raw density [R, S, 1].

    Each interval (k, k+1) uses delta = d[k+1] - d[k] and the averages of the two samples' colour,
    raw density and depth; sigma = softplus(raw - 1); alpha = 1 - exp(-sigma delta);
    T_k = prod_{j<k}(1 - alpha_j + 1e-10); w = alpha T.
    """
    assert depths.dim() == 2 and rgb.shape == (*depths.shape, 3) and raw.shape == (*depths.shape, 1), (
        depths.shape, rgb.shape, raw.shape)
    delta = depths[:, 1:] - depths[:, :-1]  # [R, S-1]
    rgb_mid = (rgb[:, 1:] + rgb[:, :-1]) / 2
    raw_mid = (raw[:, 1:, 0] + raw[:, :-1, 0]) / 2
    depth_mid = (depths[:, 1:] + depths[:, :-1]) / 2
    alpha = 1 - torch.exp(-activate_density(raw_mid) * delta)
    shifted = torch.cat([torch.ones_like(alpha[:, :1]), 1 - alpha + 1e-10], dim=-1)
    transmittance = torch.cumprod(shifted, dim=-1)[:, :-1]
    weights = alpha * transmittance  # [R, S-1]
    total = weights.sum(dim=-1)
    color = (weights[..., None] * rgb_mid).sum(dim=1)
    depth = torch.nan_to_num((weights * depth_mid).sum(dim=-1) / total, nan=float("inf"))
    return Composite(rgb=color, depth=depth, alpha=total, weights=weights)
