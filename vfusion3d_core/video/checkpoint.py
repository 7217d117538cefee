"""Atomic training checkpoints of the video trainer: weights (safetensors) + optimizer, LR schedule, EMA, RNG.

Layout: ``DIR/checkpoint-<step:08d>/`` holding ``model.safetensors`` (every network's weights),
``ema.safetensors`` (optional), ``optimizer.pt``, ``scheduler.pt``, ``rng.pt`` and ``state.json``.
The ``.pt`` files hold only tensors and plain containers and are read with ``torch.load(weights_only=True)``.
A checkpoint is written into a hidden temporary directory and renamed into place, so a visible
checkpoint is always complete; only the newest ``keep`` are kept.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from vfusion3d_core.data.artifacts import clean_dead_hidden, discard_dir

PREFIX = "checkpoint-"


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


class CheckpointError(RuntimeError):
    """A video training checkpoint that cannot be read safely (truncated, or holding arbitrary pickled objects)."""


def _rng_state(generator_state: torch.Tensor) -> dict[str, Any]:
    # Only tensors and plain containers, so that loading never needs full unpickling (weights_only=True).
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"generator": generator_state, "torch": torch.get_rng_state(),
             "numpy": [name, torch.from_numpy(np.asarray(keys, np.int64)), int(pos), int(has_gauss), float(cached)],
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _safe_load(path: Path) -> Any:
    """``torch.load(weights_only=True)``: tensors and plain containers only, never arbitrary code."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling refused or file damaged: a bad checkpoint
        raise CheckpointError(f"cannot read {path} safely (weights_only): {exc}") from exc


def save_train_state(directory: str | Path, state: TrainState, keep: int = 2) -> Path:
    """Write ``state`` as ``checkpoint-<step>`` atomically; prune older checkpoints beyond ``keep``."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{state.step:08d}"
    clean_dead_hidden(root)  # temporaries / trash of killed writers
    tmp = root / f".tmp-{os.getpid()}-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in state.model.items()}, str(tmp / "model.safetensors"))
        if state.ema is not None:
            save_file({k: v.detach().cpu().contiguous() for k, v in state.ema.items()}, str(tmp / "ema.safetensors"))
        torch.save(state.optimizer, tmp / "optimizer.pt")
        torch.save(state.scheduler, tmp / "scheduler.pt")
        torch.save(_rng_state(state.generator), tmp / "rng.pt")
        (tmp / "state.json").write_text(json.dumps({"step": state.step, **(state.info or {})}, indent=2))
        discard_dir(final)  # rename-then-delete: never a half-deleted checkpoint under a visible name
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(root)[:-keep]:
        discard_dir(old)
    return final


def _safe_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - SafetensorError is not an OSError/ValueError
        raise CheckpointError(f"cannot read {path} as safetensors: {exc}") from exc


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = Path(directory)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.name.startswith(PREFIX) and (p / "state.json").is_file())


def load_train_state(path: str | Path) -> TrainState:
    """Read a checkpoint directory and restore the global RNGs (torch, numpy, python, cuda)."""
    p = Path(path)
    info = json.loads((p / "state.json").read_text())
    rng = _safe_load(p / "rng.pt")
    torch.set_rng_state(rng["torch"])
    name, keys, pos, has_gauss, cached = rng["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(rng["python"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    ema = _safe_tensors(p / "ema.safetensors") if (p / "ema.safetensors").is_file() else None
    return TrainState(step=int(info.pop("step")), model=_safe_tensors(p / "model.safetensors"),
                      optimizer=_safe_load(p / "optimizer.pt"),
                      scheduler=_safe_load(p / "scheduler.pt"), generator=rng["generator"],
                      ema=ema, info=info)
