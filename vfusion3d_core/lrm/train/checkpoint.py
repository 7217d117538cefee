"""Training checkpoints: written atomically, resumed exactly.

    OUT/checkpoints/step-00000050/
        model.safetensors + config.json     the LRM (loadable with LRM.from_pretrained)
        training_state.pt                   optimizer, scheduler, RNG states, data position, stage, step
        train_config.json                   the recipe

Written by the one checkpoint writer (``vfusion3d_core/data/checkpoints.py``): assembled under a hidden
temporary name and renamed into place, so a visible checkpoint is always complete. ``training_state.pt`` holds
only tensors and plain containers and is read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vfusion3d_core.data.checkpoints import CheckpointError, list_checkpoint_dirs, safe_torch_load, write_checkpoint
from vfusion3d_core.lrm.checkpoint import save_checkpoint
from vfusion3d_core.lrm.config import LRMConfig
from vfusion3d_core.lrm.convert import non_finite_tensors
from vfusion3d_core.lrm.train.config import LRMTrainConfig

STATE_NAME = "training_state.pt"
PREFIX = "step-"


def checkpoint_dir(out_dir: str | Path, step: int) -> Path:
    return Path(out_dir) / "checkpoints" / f"{PREFIX}{step:08d}"


def save_training_checkpoint(out_dir: str | Path, step: int, model_state: dict[str, torch.Tensor],
                             model_config: LRMConfig, train_config: LRMTrainConfig, state: dict[str, Any],
                             keep: int = 2) -> Path:
    """Atomically write checkpoint ``step``; keep only the newest ``keep`` checkpoints."""
    bad = non_finite_tensors(model_state)
    if bad:
        raise CheckpointError(f"refusing to write a checkpoint with non-finite values in {bad[0]}")

    def write(directory: Path) -> None:
        save_checkpoint(model_state, model_config, directory)
        torch.save(state, directory / STATE_NAME)
        train_config.save(directory / "train_config.json")

    return write_checkpoint(Path(out_dir) / "checkpoints", PREFIX, step, write, keep, STATE_NAME)


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    return list_checkpoint_dirs(Path(out_dir) / "checkpoints", PREFIX, STATE_NAME)


def load_training_state(directory: str | Path) -> dict[str, Any]:
    """The training state of a checkpoint (weights_only unpickling; clear error if unreadable)."""
    return safe_torch_load(Path(directory) / STATE_NAME)
