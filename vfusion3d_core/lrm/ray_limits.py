"""Ray / box intersection and stratified (coarse) depths inside the [-1, 1]^3 box."""

from __future__ import annotations

import torch

BOX_HALF_SIDE = 1.0


def ray_box_limits(origins: torch.Tensor, dirs: torch.Tensor, half_side: float = BOX_HALF_SIDE
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Slab intersection of rays with the axis-aligned box [-half_side, half_side]^3.

    origins, dirs [R, 3] -> (start [R], end [R], valid [R] bool = end > start). Invalid rays (that miss
    the box) have undefined start/end; ``fill_missed_rays`` gives them the batch convention.

    Float order of the released model: the reciprocal ``1 / d`` is computed once and every slab
    distance is ``(bound - o) * (1 / d)``. Dividing by ``d`` instead differs in the last bit, which
    moves the last coarse sample (on the exit face) in or out of the box for some rays. A zero
    direction component gives an infinite reciprocal, i.e. an unbounded slab on that axis.
    """
    if origins.dim() != 2 or origins.shape[-1] != 3 or dirs.shape != origins.shape:
        raise ValueError(f"expected origins and dirs [R, 3], got {tuple(origins.shape)} and {tuple(dirs.shape)}")
    inv = 1 / dirs.detach()
    origins = origins.detach()
    t0 = (-half_side - origins) * inv
    t1 = (half_side - origins) * inv
    start = torch.minimum(t0, t1).amax(dim=-1)
    end = torch.maximum(t0, t1).amin(dim=-1)
    return start, end, end > start


def fill_missed_rays(start: torch.Tensor, end: torch.Tensor, valid: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays that miss get start = min valid start and end = max valid start over the whole batch.

    start, end, valid [R] -> (start [R], end [R]). With no valid ray at all, both become 0.
    """
    if bool(valid.any()):
        lo, hi = start[valid].min(), start[valid].max()
    else:
        lo = hi = torch.zeros((), dtype=start.dtype, device=start.device)
    return torch.where(valid, start, lo), torch.where(valid, end, hi)


def coarse_depths(start: torch.Tensor, end: torch.Tensor, num: int, deterministic: bool = True,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """``num`` evenly spaced depths from start to end per ray, jittered by U[0,1) * ((end-start)/(num-1))
    unless deterministic. start, end [R] -> depths [R, num]."""
    steps = torch.arange(num, dtype=start.dtype, device=start.device) / (num - 1)
    span = (end - start)[:, None]
    depths = start[:, None] + steps[None] * span
    if not deterministic:
        depths = depths + uniform_like(depths, generator) * (span / (num - 1))
    return depths


def uniform_like(ref: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """U[0, 1) samples shaped and typed like ``ref`` (drawn on the generator's device)."""
    device = generator.device if generator is not None else ref.device
    return torch.rand(ref.shape, generator=generator, device=device).to(ref)
