"""Volume renderer: K stratified + K importance samples per ray inside the [-1, 1]^3 box.

A *field* maps world points [P, 3] to (raw density [P, 1], rgb [P, 3]) with out-of-box samples
already masked (see ``decoder.mask_out_of_box``). Batch-level conventions (limits of rays that miss
the box, the final depth clamp) are computed over every ray of one ``render_rays`` call, so
chunking for memory does not change the result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .compositing import composite
from .importance import importance_depths
from .ray_limits import coarse_depths, fill_missed_rays, ray_box_limits

Field = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class RenderOptions:
    """samples_per_ray = coarse + importance (half each); chunk_rays bounds memory only."""

    samples_per_ray: int = 128
    deterministic: bool = True
    chunk_rays: int = 4096
    generator: torch.Generator | None = None


def _evaluate(field: Field, origins: torch.Tensor, dirs: torch.Tensor, depths: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Field at origins + depths * dirs. origins/dirs [R, 3], depths [R, S] -> raw [R, S, 1], rgb [R, S, 3]."""
    r, s = depths.shape
    points = origins[:, None] + depths[..., None] * dirs[:, None]  # [R, S, 3]
    raw, rgb = field(points.reshape(-1, 3))
    return raw.float().reshape(r, s, 1), rgb.float().reshape(r, s, 3)


def _render_chunk(field: Field, origins: torch.Tensor, dirs: torch.Tensor, start: torch.Tensor,
                  end: torch.Tensor, opts: RenderOptions) -> tuple[torch.Tensor, ...]:
    """One chunk of rays -> (rgb [R, 3], depth [R], alpha [R], min depth, max depth)."""
    k = opts.samples_per_ray // 2
    d_coarse = coarse_depths(start, end, k, opts.deterministic, opts.generator)  # [R, K]
    raw_c, rgb_c = _evaluate(field, origins, dirs, d_coarse)
    coarse = composite(d_coarse, rgb_c, raw_c)
    d_fine = importance_depths(d_coarse, coarse.weights.detach(), k, opts.deterministic, opts.generator)
    raw_f, rgb_f = _evaluate(field, origins, dirs, d_fine)
    depths, order = torch.sort(torch.cat([d_coarse, d_fine], dim=1), dim=1)  # [R, 2K]
    raw = torch.cat([raw_c, raw_f], dim=1).gather(1, order[..., None])
    rgb = torch.cat([rgb_c, rgb_f], dim=1).gather(1, order[..., None].expand(-1, -1, 3))
    out = composite(depths, rgb, raw)
    return out.rgb, out.depth, out.alpha, depths[:, 0].min(), depths[:, -1].max()


def render_rays(fields: list[Field], origins: torch.Tensor, dirs: torch.Tensor, opts: RenderOptions
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Render B groups of rays, group b through ``fields[b]``.

    origins, dirs [B, R, 3] -> rgb [B, R, 3] (no background), depth [B, R], alpha [B, R].
    """
    b, r, _ = origins.shape
    assert len(fields) == b and dirs.shape == origins.shape, (len(fields), origins.shape, dirs.shape)
    start, end, valid = ray_box_limits(origins.reshape(-1, 3), dirs.reshape(-1, 3))
    start, end = fill_missed_rays(start, end, valid)
    start, end = start.reshape(b, r), end.reshape(b, r)
    rgbs, depths, alphas, lows, highs = [], [], [], [], []
    for i, field in enumerate(fields):
        for lo in range(0, r, opts.chunk_rays):
            sl = slice(lo, lo + opts.chunk_rays)
            c_rgb, c_depth, c_alpha, d_min, d_max = _render_chunk(
                field, origins[i, sl], dirs[i, sl], start[i, sl], end[i, sl], opts)
            rgbs.append(c_rgb)
            depths.append(c_depth)
            alphas.append(c_alpha)
            lows.append(d_min)
            highs.append(d_max)
    depth = torch.cat(depths).clamp(torch.stack(lows).min(), torch.stack(highs).max())
    return torch.cat(rgbs).reshape(b, r, 3), depth.reshape(b, r), torch.cat(alphas).reshape(b, r)
