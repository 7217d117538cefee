"""Hierarchical (importance) sampling from the coarse compositing weights (docs/lrm.md).

Counts for K coarse samples: weights K-1 -> max-pool (2, stride 1, pad 1) -> K -> avg-pool
(2, stride 1) -> K-1 -> + 0.01. Bins are the K-1 midpoints of the coarse depths; the pdf uses the
pooled weights without their first and last entry (K-3 values) + 1e-5, so the cdf (with a leading
0) has K-2 entries and only the first K-2 bin edges are reachable. (the method description words this as "K-2
values"; the pool arithmetic above gives K-3, and ``above`` is clamped at the pdf length either way.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .ray_limits import uniform_like

PDF_EPS = 1e-5


@torch.no_grad()
def importance_depths(coarse: torch.Tensor, weights: torch.Tensor, num: int, deterministic: bool = True,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """coarse depths [R, K], coarse weights [R, K-1] -> ``num`` importance depths [R, num]."""
    r, k = coarse.shape
    assert weights.shape == (r, k - 1), (coarse.shape, weights.shape)
    pooled = F.max_pool1d(weights[:, None].float(), 2, 1, padding=1)  # [R, 1, K]
    pooled = F.avg_pool1d(pooled, 2, 1)[:, 0] + 0.01  # [R, K-1]
    bins = (coarse[:, :-1] + coarse[:, 1:]) / 2  # [R, K-1]
    return sample_pdf(bins, pooled[:, 1:-1].to(coarse.dtype), num, deterministic, generator)


@torch.no_grad()
def sample_pdf(bins: torch.Tensor, weights: torch.Tensor, num: int, deterministic: bool = True,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Inverse-CDF sampling. bins [R, B] (B >= P + 1 edges), weights [R, P] -> samples [R, num].

    u = linspace(0, 1, num) when deterministic, else U[0, 1). For each u: idx =
    searchsorted(cdf, u, right=True), below = max(idx - 1, 0), above = min(idx, P); linear
    interpolation inside the bin, a bin whose cdf step is < 1e-5 uses denominator 1.
    """
    r, p = weights.shape
    assert bins.shape[0] == r and bins.shape[1] >= p + 1, (bins.shape, weights.shape)
    w = weights + PDF_EPS
    pdf = w / w.sum(dim=-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, dim=-1)], dim=-1)  # [R, P+1]
    if deterministic:
        u = torch.linspace(0, 1, num, dtype=cdf.dtype, device=cdf.device).expand(r, num).contiguous()
    else:
        u = uniform_like(torch.empty(r, num, dtype=cdf.dtype, device=cdf.device), generator)
    idx = torch.searchsorted(cdf, u, right=True)
    below = (idx - 1).clamp_min(0)
    above = idx.clamp_max(p)
    cdf_lo, cdf_hi = cdf.gather(1, below), cdf.gather(1, above)
    bin_lo, bin_hi = bins.gather(1, below), bins.gather(1, above)
    denom = cdf_hi - cdf_lo
    denom = torch.where(denom < PDF_EPS, torch.ones_like(denom), denom)
    return bin_lo + (u - cdf_lo) / denom * (bin_hi - bin_lo)
