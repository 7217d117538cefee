"""Volume rendering with empty-space skipping (the fast path of ``LRM.render``).

Same sampling, compositing and batch conventions as ``renderer.render_rays`` (K stratified +
K importance samples, missed-ray limits and the depth clamp over the whole call). The difference:
an importance sample is evaluated only if the coarse compositing weight of the interval it falls
in, max-pooled over that interval and its two neighbours, is at least ``weight_eps``. Otherwise
the interval is empty (alpha ~ 0) or hidden (transmittance ~ 0) at the coarse resolution, and the
sample's raw density and colour are linearly interpolated from the two enclosing coarse samples
instead. Rays that see nothing therefore cost K evaluations instead of 2K, and so do the samples
behind a surface and in front of it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .compositing import composite
from .importance import importance_depths
from .ray_limits import coarse_depths, fill_missed_rays, ray_box_limits
from .renderer import Field, _evaluate


def _evaluate_needed(field: Field, origins: torch.Tensor, dirs: torch.Tensor, d_coarse: torch.Tensor,
                     raw_c: torch.Tensor, rgb_c: torch.Tensor, weights: torch.Tensor, d_fine: torch.Tensor,
                     weight_eps: float) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Fine samples: the field where the pooled coarse weight is >= weight_eps, interpolation elsewhere.

    d_coarse [R, K] (sorted), raw_c [R, K, 1], rgb_c [R, K, 3], weights [R, K-1], d_fine [R, M] ->
    raw [R, M, 1], rgb [R, M, 3], number of evaluated samples.
    """
    r, k = d_coarse.shape
    j = (torch.searchsorted(d_coarse, d_fine.contiguous(), right=True) - 1).clamp_(0, k - 2)  # interval
    pooled = F.max_pool1d(weights[:, None], 3, 1, padding=1)[:, 0]  # [R, K-1]
    need = pooled.gather(1, j) >= weight_eps  # [R, M]
    lo_d, hi_d = d_coarse.gather(1, j), d_coarse.gather(1, j + 1)
    t = ((d_fine - lo_d) / (hi_d - lo_d).clamp_min(1e-12)).clamp_(0, 1)[..., None]  # [R, M, 1]
    raw = torch.lerp(raw_c.gather(1, j[..., None]), raw_c.gather(1, j[..., None] + 1), t)
    j3 = j[..., None].expand(-1, -1, 3)
    rgb = torch.lerp(rgb_c.gather(1, j3), rgb_c.gather(1, j3 + 1), t)
    flat = need.reshape(-1).nonzero().squeeze(1)
    if flat.numel():
        ray = flat // d_fine.shape[1]
        points = origins[ray] + d_fine.reshape(-1)[flat, None] * dirs[ray]
        raw_e, rgb_e = field(points)
        raw.view(-1, 1)[flat] = raw_e.float()
        rgb.view(-1, 3)[flat] = rgb_e.float()
    return raw, rgb, int(flat.numel())


def _render_chunk(field: Field, origins: torch.Tensor, dirs: torch.Tensor, start: torch.Tensor, end: torch.Tensor,
                  samples_per_ray: int, weight_eps: float | None, deterministic: bool,
                  generator: torch.Generator | None) -> tuple[torch.Tensor, ...]:
    """One chunk of rays -> (rgb [R, 3], depth [R], alpha [R], min depth, max depth, evaluated points)."""
    k = samples_per_ray // 2
    d_coarse = coarse_depths(start, end, k, deterministic, generator)
    raw_c, rgb_c = _evaluate(field, origins, dirs, d_coarse)
    coarse = composite(d_coarse, rgb_c, raw_c)
    d_fine = importance_depths(d_coarse, coarse.weights, k, deterministic, generator)
    if weight_eps is None:
        raw_f, rgb_f = _evaluate(field, origins, dirs, d_fine)
        evaluated = d_fine.numel()
    else:
        raw_f, rgb_f, evaluated = _evaluate_needed(field, origins, dirs, d_coarse, raw_c, rgb_c, coarse.weights,
                                                   d_fine, weight_eps)
    depths, order = torch.sort(torch.cat([d_coarse, d_fine], dim=1), dim=1)
    raw = torch.cat([raw_c, raw_f], dim=1).gather(1, order[..., None])
    rgb = torch.cat([rgb_c, rgb_f], dim=1).gather(1, order[..., None].expand(-1, -1, 3))
    out = composite(depths, rgb, raw)
    return out.rgb, out.depth, out.alpha, depths[:, 0].min(), depths[:, -1].max(), d_coarse.numel() + evaluated


@torch.no_grad()
def render_rays_skipping(fields: list[Field], origins: torch.Tensor, dirs: torch.Tensor, samples_per_ray: int,
                         chunk_rays: int, weight_eps: float | None = 1e-4, deterministic: bool = True,
                         generator: torch.Generator | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Like ``renderer.render_rays`` with empty-space skipping (``weight_eps`` None: no skipping).

    origins, dirs [B, R, 3] -> rgb [B, R, 3] (no background), depth [B, R], alpha [B, R], and the
    number of field evaluations (out of B * R * samples_per_ray).
    """
    b, r, _ = origins.shape
    assert len(fields) == b and dirs.shape == origins.shape, (len(fields), origins.shape, dirs.shape)
    start, end, valid = ray_box_limits(origins.reshape(-1, 3), dirs.reshape(-1, 3))
    start, end = fill_missed_rays(start, end, valid)
    start, end = start.reshape(b, r), end.reshape(b, r)
    rgb = torch.empty(b, r, 3, device=origins.device)
    depth = torch.empty(b, r, device=origins.device)
    alpha = torch.empty(b, r, device=origins.device)
    low = torch.full((), float("inf"), device=origins.device)
    high = torch.full((), float("-inf"), device=origins.device)
    evaluated = 0
    for i, field in enumerate(fields):
        for lo in range(0, r, chunk_rays):
            sl = slice(lo, lo + chunk_rays)
            rgb[i, sl], depth[i, sl], alpha[i, sl], d_min, d_max, n_eval = _render_chunk(
                field, origins[i, sl], dirs[i, sl], start[i, sl], end[i, sl], samples_per_ray, weight_eps,
                deterministic, generator)
            low, high = torch.minimum(low, d_min), torch.maximum(high, d_max)
            evaluated += n_eval
    return rgb, depth.clamp_(low, high), alpha, evaluated
