"""Camera conditioning: the source-camera embedder and modulated LayerNorm (adaLN)."""

from __future__ import annotations

import torch
from torch import nn


class CameraEmbedder(nn.Module):
    """MLP source-camera vector [N, 16] -> modulation vector [N, E]: Linear -> SiLU -> Linear."""

    def __init__(self, camera_dim: int, embed_dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(camera_dim, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim))

    def forward(self, camera: torch.Tensor) -> torch.Tensor:
        """camera [N, 16] -> [N, E]."""
        return self.net(camera)


class ModLN(nn.Module):
    """LayerNorm(eps 1e-6)(x) * (1 + scale) + shift with (shift, scale) = Linear(SiLU(mod))."""

    def __init__(self, dim: int, mod_dim: int, eps: float = 1e-6):
        super().__init__()
        self.ln = nn.LayerNorm(dim, eps=eps)
        self.act = nn.SiLU()
        self.proj = nn.Linear(mod_dim, 2 * dim)

    def forward(self, x: torch.Tensor, mod: torch.Tensor) -> torch.Tensor:
        """x [N, L, D], mod [N, E] -> [N, L, D]."""
        shift, scale = self.proj(self.act(mod)).chunk(2, dim=-1)
        return self.ln(x) * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)
