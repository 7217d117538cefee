"""Held-out novel-view evaluation of LRM checkpoints.

For each held-out object, view 0 is the input (its pose canonicalized to the source camera, like in
training, composited on white); the other views, evenly spaced over the orbit, are the novel views to
predict. Each prediction is rendered deterministically on white and scored against the ground truth:
PSNR, SSIM, LPIPS, CLIP image similarity (prediction vs ground-truth view) and CLIP text similarity
(prediction vs the object's caption).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from vfusion3d_core.cameras import Intrinsics, to_render_vector, to_source_vector, turntable_cameras
from vfusion3d_core.compute import ComputeSettings, module_device
from vfusion3d_core.data import iter_samples
from vfusion3d_core.lrm.model import LRM
from vfusion3d_core.lrm.train.data import canonicalize_poses, prepare_targets
from vfusion3d_core.metrics.clip import ClipScorer
from vfusion3d_core.metrics.image import lpips_distance, psnr, ssim

METRICS = ("psnr", "ssim", "lpips", "clip_image", "clip_text")


@dataclass
class HeldoutObject:
    """One held-out object: RGBA views [V, 4, S, S] in [0, 1], canonical poses [V, 4, 4], intrinsics [V, 4]."""

    uid: str
    caption: str
    views: torch.Tensor
    c2w: torch.Tensor
    intrinsics: torch.Tensor
    novel: torch.Tensor  # [K] indices of the views to predict

    def source(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Input image [1, 3, size, size] on white and its source camera vector [1, 16]."""
        rgb, _ = prepare_targets(self.views[None, :1], torch.ones(1, 1, 3), size)
        return rgb[:, 0], to_source_vector(self.c2w[:1], self.intrinsics[:1])

    def targets(self, size: int) -> torch.Tensor:
        """Ground-truth novel views [K, 3, size, size] on white."""
        k = len(self.novel)
        return prepare_targets(self.views[None, self.novel], torch.ones(1, k, 3), size)[0][0]

    def cameras(self) -> torch.Tensor:
        """Render vectors of the novel views [K, 25]."""
        return to_render_vector(self.c2w[self.novel], self.intrinsics[self.novel])


def load_heldout_objects(shards: list[str | Path], max_objects: int = 16, novel_views: int = 4
                         ) -> list[HeldoutObject]:
    """The first ``max_objects`` samples of held-out shards, ready to evaluate."""
    objects = []
    for sample in iter_samples(shards):
        if len(objects) >= max_objects:
            break
        views = torch.from_numpy(sample.views).permute(0, 3, 1, 2).float() / 255.0
        v = views.shape[0]
        if v < 2:
            raise ValueError(f"held-out sample {sample.key} has {v} view(s); need an input and a novel view")
        novel = torch.linspace(1, v - 1, min(novel_views, v - 1)).round().long().unique()
        objects.append(HeldoutObject(str(sample.meta.get("uid", sample.key)), sample.caption, views,
                                     canonicalize_poses(torch.from_numpy(sample.c2w).float(), 0),
                                     torch.from_numpy(sample.intrinsics).float(), novel))
    if not objects:
        raise ValueError("no held-out objects to evaluate on")
    return objects


@torch.no_grad()
def encode_object(model: LRM, obj: HeldoutObject, compute: ComputeSettings | None = None) -> torch.Tensor:
    """Planes [1, 3, C, H, W] (float32) of ``obj``'s input view, on the model's device; under bf16
    autocast when ``compute``'s precision resolves to bf16 on that device."""
    device = module_device(model)
    image, source = obj.source(model.config.source_size)  # [1, 3, s, s], [1, 16]
    bf16 = compute is not None and ComputeSettings(str(device), compute.precision).dtype == torch.bfloat16
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        planes = model.encode(image.to(device), source.to(device))
    return planes.float()


@torch.no_grad()
def predict_novel_views(model: LRM, obj: HeldoutObject, size: int, compute: ComputeSettings | None = None
                        ) -> torch.Tensor:
    """The model's renders of ``obj``'s novel views from its input view: [K, 3, size, size] in [0, 1]
    (on the CPU). Runs on the model's device; ``compute`` bf16: the encoder under autocast, the renderer
    in float32."""
    planes = encode_object(model, obj, compute)
    out = model.render(planes, obj.cameras()[None].to(planes.device), size, deterministic=True, background=1.0)
    return out["rgb"][0].float().clamp(0, 1).cpu()


@dataclass
class NovelViewScores:
    """Per-object rows (uid + METRICS) and their means."""

    rows: list[dict[str, float | str]] = field(default_factory=list)

    def mean(self) -> dict[str, float]:
        return {m: float(np.mean([r[m] for r in self.rows])) for m in METRICS}


@torch.no_grad()
def score_checkpoint(model: LRM, objects: list[HeldoutObject], size: int, lpips_net: nn.Module,
                     clip: ClipScorer, compute: ComputeSettings | None = None) -> NovelViewScores:
    """Score ``model`` on every held-out object (see the module docstring).

    Predictions [K, 3, size, size] run on the model's device (``compute``: precision of the encoder); the
    metrics on ``compute``'s device (the model's when None), under its autocast for LPIPS / CLIP. Each
    caption is embedded once per object.
    """
    model.eval()
    device = compute.torch_device if compute is not None else module_device(model)
    scores = NovelViewScores()
    for obj in objects:
        pred = predict_novel_views(model, obj, size, compute).to(device)
        target = obj.targets(size).to(device)
        caption = clip.text_embeddings([obj.caption])  # [1, D]
        row: dict[str, float | str] = {
            "uid": obj.uid,
            "psnr": psnr(pred, target).mean().item(),
            "ssim": ssim(pred, target).mean().item(),
            "lpips": lpips_distance(lpips_net, pred, target, compute).mean().item(),
            "clip_image": clip.image_similarity(pred, target).mean().item(),
            "clip_text": (clip.image_embeddings(pred) * caption.to(device)).sum(-1).mean().item()}
        bad = [k for k in METRICS if not math.isfinite(float(row[k]))]
        if bad:
            raise FloatingPointError(f"non-finite {bad} for held-out object {obj.uid}")
        scores.rows.append(row)
    return scores


@torch.no_grad()
def turntable_strip(model: LRM, obj: HeldoutObject, frames: int = 8, size: int = 64,
                    compute: ComputeSettings | None = None) -> Image.Image:
    """The input view followed by a ``frames``-view turntable of the reconstruction, as one PNG strip
    (rendered on the model's device)."""
    device = module_device(model)
    image, _ = obj.source(model.config.source_size)
    planes = encode_object(model, obj, compute)
    radius = float(obj.c2w[0, :3, 3].norm())
    intrinsics = Intrinsics(*obj.intrinsics[0].tolist())
    cams = turntable_cameras(frames, elevation_deg=20.0, radius=radius, intrinsics=intrinsics)
    vectors = cams.render_vectors()[None].to(device)  # [1, F, 25]
    rgb = model.render(planes, vectors, size, deterministic=True, background=1.0)["rgb"][0].float().clamp(0, 1)
    tiles = torch.cat([torch.nn.functional.interpolate(image.float(), size=(size, size), mode="area"), rgb.cpu()])
    strip = (tiles.permute(2, 0, 3, 1).reshape(size, -1, 3).numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(strip)
