"""The `eval_metrics` step as one typed request: every checkpoint scored on held-out objects on one device.

``EvaluateRequest`` names the checkpoints (LRM folders, or None for the untrained architecture), the
held-out shards, the CLIP folder and LPIPS backbone choice and the ``ComputeSettings``; ``run_evaluation``
loads every model onto ``compute.torch_device``, renders the novel views there (the LRM's own
``predict_novel_views`` / ``turntable_strip``), and computes PSNR / SSIM (inputs on the device), LPIPS and
CLIP (models on the device, forward passes under ``compute.autocast()``). A caption is encoded once per
object. Writes ``metrics.csv``, ``per_object.csv`` and ``turntables/<checkpoint>.png`` into the output dir.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from vfusion3d_core.compute import ComputeSettings
from vfusion3d_core.metrics.clip import ClipScorer
from vfusion3d_core.metrics.novel_views import (
    METRICS,
    load_heldout_objects,
    score_checkpoint,
    turntable_strip,
)
from vfusion3d_core.steps import StepRequest

RANDOM_CLIP_NOTE = "RANDOM weights: CLIP scores not meaningful"
RANDOM_LPIPS_NOTE = "RANDOM backbone: LPIPS not meaningful"

# Held-out novel views are rendered at this size per preset (the LRM's supervision resolution at each scale).
EVAL_RENDER_SIZE = {"tiny": 64, "small": 128, "paper": 256}


@dataclass
class EvaluateRequest(StepRequest):
    """Score LRM checkpoints on held-out objects.

    checkpoints: name -> LRM folder (``LRM.save_pretrained`` output), in report order; None = the untrained
    architecture of ``untrained_config_from`` (seeded with ``seed``). heldout_shards: renders_3d held-out tars.
    clip_path: a local CLIP folder, or None for a small seeded RANDOM CLIP. lpips_random_backbone: LPIPS with a
    random AlexNet instead of the torch-hub weights.
    """

    checkpoints: dict[str, str | None]
    heldout_shards: list[str]
    output_dir: str
    untrained_config_from: str | None = None
    max_objects: int = 8
    novel_views: int = 4
    render_size: int = 64
    turntable_frames: int = 8
    clip_path: str | None = None
    lpips_random_backbone: bool = True
    seed: int = 0
    compute: ComputeSettings = field(default_factory=ComputeSettings)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.checkpoints:
            raise ValueError("EvaluateRequest needs at least one checkpoint")
        if not self.heldout_shards:
            raise ValueError("EvaluateRequest needs held-out shards")
        untrained = [n for n, p in self.checkpoints.items() if p is None]
        if untrained and self.checkpoints.get(self.untrained_config_from or "") is None:
            raise ValueError(f"untrained checkpoint(s) {untrained} need untrained_config_from naming a checkpoint "
                             f"with a folder, got {self.untrained_config_from!r}")
        if min(self.max_objects, self.novel_views, self.render_size, self.turntable_frames) < 1:
            raise ValueError("max_objects, novel_views, render_size and turntable_frames must be >= 1")


@dataclass
class EvaluationResult:
    """Means per checkpoint, per-object rows, the labels of the metric models, files written (relative)."""

    means: dict[str, dict[str, float]]
    per_object: list[dict[str, float | str]]
    labels: dict[str, str]
    files: list[str]
    objects: int


def build_metric_models(request: EvaluateRequest) -> tuple[nn.Module, ClipScorer, dict[str, str]]:
    """(LPIPS module, CLIP scorer) on the request's device, and their labels ("RANDOM ..." when random)."""
    from vfusion3d_core.lrm.train.losses import build_lpips

    torch.manual_seed(request.seed)  # a random LPIPS backbone comes from torch's RNG: same seed, same scores
    lpips_net = build_lpips("alex", random_backbone=request.lpips_random_backbone).eval()
    lpips_net = lpips_net.to(request.compute.torch_device)
    clip = (ClipScorer.from_pretrained(request.clip_path, request.compute) if request.clip_path
            else ClipScorer.random(request.seed, compute=request.compute))
    labels = {"clip": f"{clip.name} ({RANDOM_CLIP_NOTE})" if clip.is_random else clip.name,
              "lpips": f"alex ({RANDOM_LPIPS_NOTE})" if request.lpips_random_backbone else "alex"}
    return lpips_net, clip, labels


def run_evaluation(request: EvaluateRequest, log: Callable[[str], None] | None = None) -> EvaluationResult:
    """Run ``request`` (see the module docstring); files go to ``request.output_dir``."""
    from vfusion3d_core.lrm import LRM

    log = log or (lambda _msg: None)
    device = request.compute.torch_device
    out = Path(request.output_dir)
    (out / "turntables").mkdir(parents=True, exist_ok=True)
    lpips_net, clip, labels = build_metric_models(request)
    objects = load_heldout_objects(request.heldout_shards, request.max_objects, request.novel_views)
    models: dict[str, nn.Module] = {n: LRM.from_pretrained(p, device=device)
                                    for n, p in request.checkpoints.items() if p is not None}
    for name, path in request.checkpoints.items():
        if path is None:
            torch.manual_seed(request.seed)
            models[name] = LRM(models[request.untrained_config_from].config).to(device)
    log(f"evaluating {len(models)} checkpoints on {len(objects)} held-out objects at {request.render_size} px "
        f"on {device}; CLIP: {labels['clip']}; LPIPS: {labels['lpips']}")
    means: dict[str, dict[str, float]] = {}
    per_object: list[dict[str, float | str]] = []
    for name in request.checkpoints:
        model = models[name].eval()
        scores = score_checkpoint(model, objects, request.render_size, lpips_net, clip, request.compute)
        means[name] = scores.mean()
        per_object += [{"checkpoint": name, **r} for r in scores.rows]
        turntable_strip(model, objects[0], request.turntable_frames, request.render_size,
                        request.compute).save(out / "turntables" / f"{name}.png")
        log(f"{name}: " + ", ".join(f"{k}={v:.4f}" for k, v in means[name].items()))
    with open(out / "metrics.csv", "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([["checkpoint", *METRICS],
                                  *[[c, *(means[c][m] for m in METRICS)] for c in request.checkpoints]])
    with open(out / "per_object.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["checkpoint", "uid", *METRICS])
        writer.writeheader()
        writer.writerows(per_object)
    files = ["metrics.csv", "per_object.csv", *(f"turntables/{c}.png" for c in request.checkpoints)]
    return EvaluationResult(means, per_object, labels, files, len(objects))
