"""Bias-free multi-head attention with the released checkpoint's parameter layout.

Cross-attention keeps separate ``q/k/v_proj_weight`` (keys and values come from image tokens of a
different width); self-attention packs them in ``in_proj_weight`` [3D, D]. Both have a bias-free
``out_proj``. The layout does not depend on whether the widths happen to be equal.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[N, L, D] -> [N, H, L, D/H]."""
    n, length, dim = x.shape
    return x.reshape(n, length, heads, dim // heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[N, H, L, d] -> [N, L, H*d]."""
    n, h, length, d = x.shape
    return x.transpose(1, 2).reshape(n, length, h * d)


class CrossAttention(nn.Module):
    """Queries [N, L, D] attend to context [N, Lc, Dc]."""

    def __init__(self, dim: int, context_dim: int, heads: int):
        super().__init__()
        assert dim % heads == 0, (dim, heads)
        self.heads = heads
        self.q_proj_weight = nn.Parameter(torch.empty(dim, dim))
        self.k_proj_weight = nn.Parameter(torch.empty(dim, context_dim))
        self.v_proj_weight = nn.Parameter(torch.empty(dim, context_dim))
        self.out_proj = nn.Linear(dim, dim, bias=False)
        for weight in (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
            nn.init.xavier_uniform_(weight)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """x [N, L, D], context [N, Lc, Dc] -> [N, L, D]."""
        q = _split_heads(F.linear(x, self.q_proj_weight), self.heads)
        k = _split_heads(F.linear(context, self.k_proj_weight), self.heads)
        v = _split_heads(F.linear(context, self.v_proj_weight), self.heads)
        return self.out_proj(_merge_heads(F.scaled_dot_product_attention(q, k, v)))


class SelfAttention(nn.Module):
    """Tokens [N, L, D] attend to themselves."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        assert dim % heads == 0, (dim, heads)
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.out_proj = nn.Linear(dim, dim, bias=False)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, L, D] -> [N, L, D]."""
        q, k, v = (_split_heads(t, self.heads) for t in F.linear(x, self.in_proj_weight).chunk(3, dim=-1))
        return self.out_proj(_merge_heads(F.scaled_dot_product_attention(q, k, v)))
