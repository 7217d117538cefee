"""Fine-tune the orbit-video model on render orbits and save it (the core of the `video_model` asset)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from vfusion3d_core.video.card import model_card
from vfusion3d_core.video.config import VideoModelConfig
from vfusion3d_core.video.data import OrbitData
from vfusion3d_core.video.metrics import orbit_closeness
from vfusion3d_core.video.model import OrbitVideoModel, text_encoder_reference
from vfusion3d_core.video.trainer import MetricLogger, VideoTrainer

CODE_VERSION = "video_model-v1"


@dataclass
class FinetuneResult:
    files: list[str]  # relative to the output directory
    counts: dict[str, int]
    metrics: dict[str, float]  # untrained/* and finetuned/* closeness, final losses
    resumed_from_step: int


def finetune_video_model(cfg: VideoModelConfig, render_shards: list[str | Path], out_dir: str | Path,
                         training_data: dict[str, str], checkpoint_dir: str | Path | None = None,
                         log: MetricLogger | None = None, eval_count: int = 8,
                         progress: Callable[[str], None] | None = None) -> FinetuneResult:
    """Train all stages on the orbits in ``render_shards`` and ``save_pretrained`` into ``out_dir``.

    The closeness of generated orbits to the real orbits of the first ``eval_count`` training captions
    is measured before (untrained / pretrained weights) and after fine-tuning, with the same seeds.
    A run that finds a checkpoint in ``checkpoint_dir`` resumes from it exactly.
    """
    say = progress or (lambda _msg: None)
    data = OrbitData.from_shards(render_shards, cfg.num_frames, cfg.resolution)
    torch.manual_seed(cfg.seed)
    model = OrbitVideoModel.build(cfg)
    say(f"{len(data)} training orbits; measuring the untrained model")
    before = orbit_closeness(model, data, eval_count)
    trainer = VideoTrainer(model, data, checkpoint_dir, log)
    resumed = trainer.step if trainer.resume() else 0
    if resumed:
        say(f"resumed from checkpoint at step {resumed}")
    say(f"training {trainer.total_steps} steps {trainer.steps}")
    history = trainer.train()
    after = orbit_closeness(model, data, eval_count)
    metrics = {**{f"untrained/{k}": v for k, v in before.items()}, **{f"finetuned/{k}": v for k, v in after.items()}}
    metrics.update({f"final_loss/{s}": sum(h[-10:]) / len(h[-10:]) for s, h in history.items() if h})
    card = model_card(cfg, training_data, metrics, CODE_VERSION, text_encoder_reference(model.text_encoder))
    out = Path(out_dir)
    model.save_pretrained(out, card)
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    counts = {"training_orbits": len(data), "frames": len(data) * data.num_frames, **{
        f"steps_{s}": n for s, n in trainer.steps.items()}}
    return FinetuneResult(files, counts, metrics, resumed)
