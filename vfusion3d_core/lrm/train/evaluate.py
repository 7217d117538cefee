"""Novel-view evaluation on held-out objects: PSNR of the LRM vs a constant-colour baseline.

For each held-out object, view 0 is the input (canonicalized like in training, on white) and every
other view is a novel view to predict, rendered deterministically on a white background.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from vfusion3d_core.cameras import to_render_vector, to_source_vector
from vfusion3d_core.compute import ComputeSettings
from vfusion3d_core.data import iter_samples
from vfusion3d_core.lrm.model import LRM
from vfusion3d_core.lrm.train.data import canonicalize_poses, prepare_targets


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (dB) of images in [0, 1]; pred/target [..., 3, H, W] -> [...]."""
    mse = ((pred - target) ** 2).flatten(-3).mean(-1).clamp_min(1e-10)
    return -10 * torch.log10(mse)


@torch.no_grad()
def evaluate_novel_views(model: LRM, shards: list[str | Path], size: int = 32, max_objects: int = 16,
                         novel_views: int = 4, source_size: int | None = None,
                         compute: ComputeSettings | None = None) -> dict[str, float]:
    """Mean novel-view PSNR of ``model`` and of a constant-colour baseline over held-out objects.

    ``novel_views`` views per object, evenly spaced over the orbit, are scored. The baseline
    predicts, for every pixel, the mean colour of the input view (on white). Runs on the model's
    device; with ``compute`` resolving to bf16 there, the encoder runs under bf16 autocast.
    """
    model.eval()
    device = next(model.parameters()).device
    bf16 = compute is not None and ComputeSettings(str(device), compute.precision).dtype == torch.bfloat16
    source_size = source_size or model.config.source_size
    scores, baseline, objects = [], [], 0
    for sample in iter_samples(shards):
        if objects >= max_objects:
            break
        objects += 1
        views = torch.from_numpy(sample.views).permute(0, 3, 1, 2).float() / 255.0  # [V, 4, S, S]
        c2w = canonicalize_poses(torch.from_numpy(sample.c2w).float(), 0)
        intr = torch.from_numpy(sample.intrinsics).float()
        white = torch.ones(1, views.shape[0], 3)
        src_rgb, _ = prepare_targets(views[None, :1], white[:, :1], source_size)  # [1, 1, 3, s, s]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            planes = model.encode(src_rgb[:, 0].to(device), to_source_vector(c2w[:1], intr[:1]).to(device)).float()
        v = views.shape[0]
        novel = torch.linspace(1, v - 1, min(novel_views, v - 1)).round().long().unique()
        cams = to_render_vector(c2w[novel], intr[novel])[None].to(device)  # [1, K, 25]
        pred = model.render(planes, cams, size, deterministic=True, background=1.0)["rgb"].cpu()
        target, _ = prepare_targets(views[None, novel], white[:, novel], size)
        scores.append(psnr(pred.clamp(0, 1), target).mean())
        mean_colour = src_rgb[0, 0].mean(dim=(1, 2))
        baseline.append(psnr(mean_colour[None, None, :, None, None].expand_as(target), target).mean())
    if not objects:
        raise ValueError("no held-out objects to evaluate on")
    mean = lambda xs: float(torch.stack(xs).mean())  # noqa: E731
    result = {"psnr": mean(scores), "baseline_constant_psnr": mean(baseline), "objects": float(objects)}
    if not all(math.isfinite(v) for v in result.values()):
        raise FloatingPointError(f"non-finite held-out evaluation {result}")
    return result
