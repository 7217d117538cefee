"""Helpers for benchmarks and tests with random weights.

A randomly initialised decoder gives a nearly constant, low density: volume renders are uniform
fog and the mesh level is never reached. ``give_surface`` rescales the raw-density output of the
decoder's last layer so that the density field looks like a trained model's: empty (density ~0)
over most of the box, dense (above the mesh level 1.0) in a chosen fraction of it, with the
iso-surface in between.
"""

from __future__ import annotations

import math

import torch

from .model import LRM

LEVEL_RAW = 1 + math.log(math.e - 1)  # raw density whose activated density softplus(raw - 1) is 1.0


@torch.no_grad()
def give_surface(model: LRM, planes: torch.Tensor, inside: float = 0.15, empty_raw: float = -10.0,
                 probes: int = 16384, seed: int = 0) -> LRM:
    """Rescale (in place) the raw-density row of the decoder's last layer, affinely, so that over
    uniform points of the box the ``1 - inside`` quantile of density is exactly 1.0 (mesh level)
    and the median raw density is ``empty_raw`` (density softplus(-11) ~ 2e-5: empty space).

    planes [1, 3, C, H, W]: the object whose field is shaped. Returns ``model``.
    """
    assert 0 < inside < 0.5, inside
    points = torch.rand(1, probes, 3, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    raw, _ = model.query_raw(planes[:1], points.to(planes.device, planes.dtype))
    raw = raw.flatten().float()
    q_level, q_median = torch.quantile(raw, 1 - inside), torch.quantile(raw, 0.5)
    scale = (LEVEL_RAW - empty_raw) / (q_level - q_median).clamp_min(1e-12)
    shift = LEVEL_RAW - scale * q_level
    last = model.decoder.layers[-1]
    last.weight[0] *= scale.to(last.weight.dtype)
    last.bias[0] = last.bias[0] * scale + shift
    return model
