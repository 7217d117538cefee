"""Bias-free multi-head attention with the released checkpoint's parameter layout.

Cross-attention keeps separate ``q/k/v_proj_weight`` (keys and values come from image tokens of a
different width); self-attention packs them in ``in_proj_weight`` [3D, D]. Both have a bias-free
``out_proj``. The layout does not depend on whether the widths happen to be equal.

Attention is ``F.scaled_dot_product_attention``. Inside ``blocked_attention()`` (the fast bf16 path
on CPU) it is computed instead as bf16 matmuls over blocks of queries with a bf16 softmax, which
on CPUs without AMX is about 1.6x faster than the fused CPU SDPA kernel (measured in docs/lrm.md).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

_BLOCKED = contextvars.ContextVar("lrm_blocked_attention", default=False)
QUERY_BLOCK = 256  # queries per block: the [heads, block, keys] scores stay cache-sized


@contextlib.contextmanager
def blocked_attention(enabled: bool = True) -> Iterator[None]:
    """Within this context, CPU attention over bf16 (or autocast-bf16) inputs uses ``_blocked_sdpa``."""
    token = _BLOCKED.set(enabled)
    try:
        yield
    finally:
        _BLOCKED.reset(token)


def _blocked_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v in bf16, QUERY_BLOCK queries at a time. q [N, H, L, d], k/v [N, H, Lk, d]."""
    with torch.autocast(q.device.type, enabled=False):
        q, k, v = (t.to(torch.bfloat16) for t in (q, k, v))
        q = q * q.shape[-1] ** -0.5
        k_t = k.transpose(-1, -2).contiguous()
        out = torch.empty_like(q)
        for start in range(0, q.shape[-2], QUERY_BLOCK):
            scores = torch.matmul(q[..., start:start + QUERY_BLOCK, :], k_t)
            out[..., start:start + QUERY_BLOCK, :] = torch.matmul(torch.softmax(scores, dim=-1), v)
    return out


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Multi-head attention q [N, H, L, d], k/v [N, H, Lk, d] -> [N, H, L, d]."""
    if _BLOCKED.get() and q.device.type == "cpu" and (
            q.dtype == torch.bfloat16 or torch.is_autocast_enabled("cpu")):
        return _blocked_sdpa(q, k, v)
    return F.scaled_dot_product_attention(q, k, v)


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
        return self.out_proj(_merge_heads(attend(q, k, v)))


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
        return self.out_proj(_merge_heads(attend(q, k, v)))
