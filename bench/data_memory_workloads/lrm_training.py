"""A few tiny LRM training steps streaming from multi-view shards (the ``lrm_*`` assets' data path).

The trainer's ``MultiviewTrainingStream`` reads shards lazily, one tar member at a time, through a
bounded shuffle buffer (``shuffle_buffer`` samples), so its memory must not grow with the dataset.
"""

from __future__ import annotations

from pathlib import Path

import torch

from vfusion3d_core.compute import ComputeSettings
from vfusion3d_core.lrm.train.config import LRMTrainConfig, StageConfig
from vfusion3d_core.lrm.train.request import LRMTrainRequest, run_train_request

STEPS = 30  # 120 objects: more than one 100-sample shard, past the 64-sample shuffle buffer
BATCH = 4
SHUFFLE_BUFFER = 64


def run(multiview_shards: list[str], video_shards: list[str], work_dir: Path) -> dict:
    """Train the tiny LRM for ``STEPS`` steps of ``BATCH`` objects streamed from ``multiview_shards``
    (``video_shards`` are not used by this step). Returns steps, samples consumed and the last loss."""
    if not multiview_shards:
        raise ValueError("lrm_training needs multi-view shards")
    recipe = LRMTrainConfig(model_preset="tiny", steps=STEPS, batch_size=BATCH, views_per_sample=2, warmup_steps=1,
                            stages=[StageConfig(0, 32)], lpips_random_backbone=True, checkpoint_every=1000,
                            log_every=STEPS, shuffle_buffer=SHUFFLE_BUFFER, num_workers=0)
    request = LRMTrainRequest(recipe=recipe, shards=list(multiview_shards), work_dir=str(work_dir / "lrm"),
                              compute=ComputeSettings("cpu", "fp32"), torch_threads=1)
    outcome = run_train_request(request)
    losses = outcome.result.losses
    if len(losses) != STEPS or not all(torch.isfinite(torch.tensor(losses))):
        raise RuntimeError(f"lrm_training: expected {STEPS} finite losses, got {losses}")
    return {"steps": outcome.result.step, "samples": STEPS * BATCH, "shuffle_buffer": SHUFFLE_BUFFER,
            "last_loss": round(losses[-1], 5)}
