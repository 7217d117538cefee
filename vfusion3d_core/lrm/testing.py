"""Helpers for benchmarks and tests with random weights.

A randomly initialised decoder gives a nearly constant, low density: volume renders are uniform
fog and the mesh level is never reached. ``give_surface`` rescales the raw-density output of the
decoder's last layer so that the density field has empty space (density ~0) over most of the box
and is dense (above the mesh level 1.0) in a chosen fraction of it.

Planes produced by a random model are white noise at the texel scale, and a triplane field is a
sum of three functions each constant along one axis, so any iso-surface of a random model spans
the whole box as a sponge of walls and tubes (millions of faces at 256^3) — nothing like an
object. ``object_planes`` builds planes whose field, through the model's own (random) decoder,
is a single blobby object: the first decoder layer is linear, so plane features can be solved for
that put every point's first hidden pre-activation on a line ``S(x) e + c`` with
``S(x) = -|x|^2 + smooth noise``; the rest of the random decoder is then a fixed function of S.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .model import LRM
from .triplane import PLANE_AXES

LEVEL_RAW = 1 + math.log(math.e - 1)  # raw density whose activated density softplus(raw - 1) is 1.0


@torch.no_grad()
def give_surface(model: LRM, planes: torch.Tensor, inside: float = 0.15, shell: float = 0.35,
                 empty_raw: float = -10.0, probes: int = 16384, seed: int = 0) -> LRM:
    """Rescale (in place) the raw-density row of the decoder's last layer, affinely, so that over
    uniform points of the box the density is exactly 1.0 (the mesh level) at the ``1 - inside``
    quantile and the raw density is ``empty_raw`` (density softplus(-11) ~ 2e-5: empty space) at
    the ``1 - inside - shell`` quantile: ``inside`` of the box is dense, and the density falls to
    nothing within a further ``shell`` of its volume (small ``shell``: a sharp surface).

    planes [1, 3, C, H, W]: the object whose field is shaped. Returns ``model``.
    """
    assert 0 < inside < 1 and 0 < shell < 1 - inside, (inside, shell)
    points = torch.rand(1, probes, 3, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    raw, _ = model.query_raw(planes[:1], points.to(planes.device, planes.dtype))
    raw = raw.flatten().float()
    q_level, q_empty = torch.quantile(raw, 1 - inside), torch.quantile(raw, 1 - inside - shell)
    scale = (LEVEL_RAW - empty_raw) / (q_level - q_empty).clamp_min(1e-12)
    shift = LEVEL_RAW - scale * q_level
    last = model.decoder.layers[-1]
    last.weight[0] *= scale.to(last.weight.dtype)
    last.bias[0] = last.bias[0] * scale + shift
    return model

def _smooth_noise(res: int, cells: int, generator: torch.Generator) -> torch.Tensor:
    """[res, res] bicubic upsampling of a [cells, cells] Gaussian grid, unit std."""
    coarse = torch.randn(1, 1, cells, cells, generator=generator)
    fine = F.interpolate(coarse, size=(res, res), mode="bicubic", align_corners=True)[0, 0]
    return fine / fine.std()


@torch.no_grad()
def object_planes(model: LRM, noise: float = 0.12, seed: int = 0, candidates: int = 16) -> torch.Tensor:
    """Planes [1, 3, C, H, W] (float32, on the model's device) whose density through ``model``'s
    decoder is a level-set function of S(x) = -|x|^2 + noise * smooth noise (see module docstring).

    Among ``candidates`` random line directions e, the one along which the decoder's raw density
    increases with S over the largest share of S's range is used, so that its upper level sets (after
    ``give_surface``) are one blob around the origin. Follow with ``give_surface``.
    """
    cfg = model.config
    res, channels = cfg.triplane_high_res, cfg.triplane_dim
    first = model.decoder.layers[0]
    device = first.weight.device
    weight, bias = first.weight.float(), first.bias.float()  # [hidden, 3C], [hidden]
    if channels < weight.shape[0]:
        raise ValueError(f"object_planes needs triplane_dim >= decoder hidden width ({channels} < {weight.shape[0]}): "
                         "each plane's projection must reach every hidden pre-activation")
    gen = torch.Generator().manual_seed(seed)
    s_line = torch.linspace(-3.2, 0.4, 256, device=device)
    best, best_score = None, -1.0
    for _ in range(candidates):
        e = torch.randn(weight.shape[0], generator=gen).to(device)
        c = torch.randn(weight.shape[0], generator=gen).to(device) * 0.5 + 1.5 * e
        x = F.relu(s_line[:, None] * e + c)  # first hidden activation along the line
        for i, layer in enumerate(model.decoder.layers[1:]):
            x = layer(x.to(layer.weight.dtype)).float()
            if i < len(model.decoder.layers) - 2:
                x = F.relu(x)
        steps = x[1:, 0] - x[:-1, 0]
        score = float((steps > 0).float().mean())  # share of the line where raw density increases with S
        if score > best_score:
            best, best_score = (e, c), score
    e, c = best
    coords = (2 * torch.arange(res, dtype=torch.float32) + 1) / res - 1  # texel centres
    vv, uu = torch.meshgrid(coords, coords, indexing="ij")  # [H (v), W (u)]
    planes = []
    for p, _ in enumerate(PLANE_AXES):
        s_p = -(uu ** 2 + vv ** 2) / 2 + noise * _smooth_noise(res, 6, gen) / 3  # [H, W]; sum over planes = S
        target = s_p.to(device)[..., None] * e + (c - bias) / 3  # [H, W, hidden]: pre-activation share
        w_p = weight[:, p * channels:(p + 1) * channels]  # [hidden, C]
        plane = target.reshape(-1, weight.shape[0]) @ torch.linalg.pinv(w_p).T  # [H*W, C]
        planes.append(plane.T.reshape(channels, res, res))
    return torch.stack(planes)[None]
