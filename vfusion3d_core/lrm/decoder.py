"""Triplane feature decoder: MLP 3C -> hidden -> ... -> 4 (raw density, rgb) and its activations."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

OUT_OF_BOX_DENSITY = -3.40282347e38 / 3  # -(float32 max) / 3, as released: survives averaging two samples


class TriplaneDecoder(nn.Module):
    """ReLU MLP with ``layers`` linear layers; outputs raw density and rgb in [-0.001, 1.001]."""

    def __init__(self, in_dim: int, hidden_dim: int = 64, layers: int = 4):
        super().__init__()
        assert layers >= 2, layers
        dims = [in_dim] + [hidden_dim] * (layers - 1) + [4]
        self.layers = nn.ModuleList([nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True)])

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features [..., 3C] -> (raw density [..., 1], rgb [..., 3])."""
        x = features
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x, inplace=True)  # safe for autograd: ReLU's backward uses its output
        return x[..., :1], torch.sigmoid(x[..., 1:]) * (1 + 2 * 0.001) - 0.001


def activate_density(raw: torch.Tensor) -> torch.Tensor:
    """Raw density -> volume density sigma = softplus(raw - 1)."""
    return F.softplus(raw - 1)


def mask_out_of_box(points: torch.Tensor, raw: torch.Tensor, rgb: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples with any coordinate outside [-1, 1] get rgb 0 and raw density ``OUT_OF_BOX_DENSITY``.

    points [..., 3], raw [..., 1], rgb [..., 3] -> (raw, rgb) of the same shapes.
    """
    outside = (points.abs() > 1).any(dim=-1, keepdim=True)
    raw = torch.where(outside, torch.full_like(raw, OUT_OF_BOX_DENSITY), raw)
    rgb = torch.where(outside, torch.zeros_like(rgb), rgb)
    return raw, rgb
