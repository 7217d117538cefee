"""Training checkpoints: written atomically, resumed exactly.

    OUT/checkpoints/step-00000050/
        model.safetensors + config.json     the LRM (loadable with LRM.from_pretrained)
        training_state.pt                   optimizer, scheduler, RNG states, data position, stage, step
        train_config.json                   the recipe

A checkpoint directory is assembled under a hidden temporary name and renamed into place, so a
visible checkpoint is always complete. ``training_state.pt`` holds only tensors and plain
containers and is read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

from vfusion3d_core.data.artifacts import clean_dead_hidden, discard_dir
from vfusion3d_core.lrm.checkpoint import save_checkpoint
from vfusion3d_core.lrm.config import LRMConfig
from vfusion3d_core.lrm.convert import non_finite_tensors
from vfusion3d_core.lrm.train.config import LRMTrainConfig

STATE_NAME = "training_state.pt"
PREFIX = "step-"


class CheckpointError(RuntimeError):
    """A training checkpoint that cannot be used (truncated, non-finite, mismatched)."""


def checkpoint_dir(out_dir: str | Path, step: int) -> Path:
    return Path(out_dir) / "checkpoints" / f"{PREFIX}{step:08d}"


def save_training_checkpoint(out_dir: str | Path, step: int, model_state: dict[str, torch.Tensor],
                             model_config: LRMConfig, train_config: LRMTrainConfig, state: dict[str, Any],
                             keep: int = 2) -> Path:
    """Atomically write checkpoint ``step``; keep only the newest ``keep`` checkpoints."""
    bad = non_finite_tensors(model_state)
    if bad:
        raise CheckpointError(f"refusing to write a checkpoint with non-finite values in {bad[0]}")
    final = checkpoint_dir(out_dir, step)
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_dead_hidden(final.parent)  # temporaries / trash of killed writers
    tmp = final.parent / f".tmp-{os.getpid()}-{final.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    save_checkpoint(model_state, model_config, tmp)
    torch.save(state, tmp / STATE_NAME)
    train_config.save(tmp / "train_config.json")
    # Removal renames first (discard_dir): a kill never leaves a half-deleted checkpoint under a visible name.
    discard_dir(final)  # same step re-written after a resume: replace
    os.replace(tmp, final)
    for old in list_checkpoints(out_dir)[:-keep] if keep > 0 else []:
        discard_dir(old)
    return final


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = Path(out_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.name.startswith(PREFIX) and (p / STATE_NAME).is_file())


def load_training_state(directory: str | Path) -> dict[str, Any]:
    """The training state of a checkpoint (weights_only unpickling; clear error if unreadable)."""
    path = Path(directory) / STATE_NAME
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad checkpoint
        raise CheckpointError(f"cannot read {path}: {exc}") from exc
