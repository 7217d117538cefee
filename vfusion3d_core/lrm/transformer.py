"""Modulated transformer: learnable triplane tokens attend to image tokens under camera modulation."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .attention import CrossAttention, SelfAttention
from .conditioning import ModLN


class ModulatedBlock(nn.Module):
    """ModLN -> cross-attn (no bias) -> ModLN -> self-attn (no bias) -> ModLN -> MLP (4x, GELU)."""

    def __init__(self, dim: int, heads: int, cond_dim: int, mod_dim: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm_cross = ModLN(dim, mod_dim)
        self.cross_attn = CrossAttention(dim, cond_dim, heads)
        self.norm_self = ModLN(dim, mod_dim)
        self.self_attn = SelfAttention(dim, heads)
        self.norm_mlp = ModLN(dim, mod_dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.ModuleDict({"fc1": nn.Linear(dim, hidden), "act": nn.GELU(), "fc2": nn.Linear(hidden, dim)})

    def forward(self, x: torch.Tensor, cond: torch.Tensor, mod: torch.Tensor) -> torch.Tensor:
        """x [N, L, D], cond [N, Lc, Dc], mod [N, E] -> [N, L, D]."""
        h = self.norm_cross(x, mod)
        x = x + self.cross_attn(h, cond)
        h = self.norm_self(x, mod)
        x = x + self.self_attn(h)
        h = self.norm_mlp(x, mod)
        return x + self.mlp["fc2"](self.mlp["act"](self.mlp["fc1"](h)))


class TriplaneTransformer(nn.Module):
    """3 * R * R learnable tokens -> blocks -> final LayerNorm -> tokens [N, 3 * R * R, D]."""

    def __init__(self, dim: int, layers: int, heads: int, cond_dim: int, mod_dim: int, low_res: int):
        super().__init__()
        self.low_res = low_res
        self.tokens = nn.Parameter(torch.randn(1, 3 * low_res * low_res, dim) * (1.0 / dim) ** 0.5)
        self.blocks = nn.ModuleList([ModulatedBlock(dim, heads, cond_dim, mod_dim) for _ in range(layers)])
        self.final_norm = nn.LayerNorm(dim, eps=1e-6)
        # True: while gradients are recorded, each block's activations are recomputed in the backward
        # pass (torch.utils.checkpoint) instead of being stored: less memory, about a third more compute.
        self.gradient_checkpointing = False

    def forward(self, cond: torch.Tensor, mod: torch.Tensor) -> torch.Tensor:
        """cond [N, Lc, Dc], mod [N, E] -> [N, 3 * R * R, D]."""
        x = self.tokens.expand(cond.shape[0], -1, -1)
        recompute = self.gradient_checkpointing and torch.is_grad_enabled()
        for block in self.blocks:
            x = checkpoint(block, x, cond, mod, use_reentrant=False) if recompute else block(x, cond, mod)
        return self.final_norm(x)
