"""Atomic training checkpoints of the video trainer: weights (safetensors) + optimizer, LR schedule, EMA, RNG.

Layout: ``DIR/checkpoint-<step:08d>/`` holding ``model.safetensors`` (every network's weights),
``ema.safetensors`` (optional), ``optimizer.pt``, ``scheduler.pt``, ``rng.pt`` and ``state.json``.
The ``.pt`` files hold only tensors and plain containers and are read with ``torch.load(weights_only=True)``.
Written by the one checkpoint writer (``vfusion3d_core/data/checkpoints.py``): into a hidden temporary directory
renamed into place, so a visible checkpoint is always complete; only the newest ``keep`` are kept.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from vfusion3d_core.data.checkpoints import CheckpointError, list_checkpoint_dirs, safe_torch_load, write_checkpoint

PREFIX = "checkpoint-"
STATE_FILE = "state.json"  # written last by the writer: a directory holding it is a checkpoint


@dataclass
class TrainState:
    """Everything needed to continue a run exactly."""

    step: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    generator: torch.Tensor  # the trainer's torch.Generator state
    ema: dict[str, torch.Tensor] | None = None
    info: dict[str, Any] | None = None


def _rng_state(generator_state: torch.Tensor) -> dict[str, Any]:
    # Only tensors and plain containers, so that loading never needs full unpickling (weights_only=True).
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"generator": generator_state, "torch": torch.get_rng_state(),
             "numpy": [name, torch.from_numpy(np.asarray(keys, np.int64)), int(pos), int(has_gauss), float(cached)],
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def save_train_state(directory: str | Path, state: TrainState, keep: int = 2) -> Path:
    """Write ``state`` as ``checkpoint-<step>`` atomically; prune older checkpoints beyond ``keep``."""
    def write(tmp: Path) -> None:
        save_file({k: v.detach().cpu().contiguous() for k, v in state.model.items()}, str(tmp / "model.safetensors"))
        if state.ema is not None:
            save_file({k: v.detach().cpu().contiguous() for k, v in state.ema.items()}, str(tmp / "ema.safetensors"))
        torch.save(state.optimizer, tmp / "optimizer.pt")
        torch.save(state.scheduler, tmp / "scheduler.pt")
        torch.save(_rng_state(state.generator), tmp / "rng.pt")
        (tmp / "state.json").write_text(json.dumps({"step": state.step, **(state.info or {})}, indent=2))

    return write_checkpoint(directory, PREFIX, state.step, write, keep, STATE_FILE)


def _safe_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - SafetensorError is not an OSError/ValueError
        raise CheckpointError(f"cannot read {path} as safetensors: {exc}") from exc


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    return list_checkpoint_dirs(directory, PREFIX, STATE_FILE)


def load_train_state(path: str | Path) -> TrainState:
    """Read a checkpoint directory and restore the global RNGs (torch, numpy, python, cuda)."""
    p = Path(path)
    info = json.loads((p / "state.json").read_text())
    rng = safe_torch_load(p / "rng.pt")
    torch.set_rng_state(rng["torch"])
    name, keys, pos, has_gauss, cached = rng["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(rng["python"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    ema = _safe_tensors(p / "ema.safetensors") if (p / "ema.safetensors").is_file() else None
    return TrainState(step=int(info.pop("step")), model=_safe_tensors(p / "model.safetensors"),
                      optimizer=safe_torch_load(p / "optimizer.pt"),
                      scheduler=safe_torch_load(p / "scheduler.pt"), generator=rng["generator"],
                      ema=ema, info=info)
