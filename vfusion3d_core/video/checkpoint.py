"""Atomic training checkpoints of the video trainer: weights (safetensors) + optimizer, LR schedule, EMA, RNG.

Layout: ``DIR/checkpoint-<step:08d>/`` holding ``model.safetensors`` (every network's weights),
``ema.safetensors`` (optional), ``optimizer.pt``, ``scheduler.pt``, ``rng.pt`` and ``state.json``.
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


def _rng_state(generator_state: torch.Tensor) -> dict[str, Any]:
    state = {"generator": generator_state, "torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def save_train_state(directory: str | Path, state: TrainState, keep: int = 2) -> Path:
    """Write ``state`` as ``checkpoint-<step>`` atomically; prune older checkpoints beyond ``keep``."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{state.step:08d}"
    tmp = root / f".tmp-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in state.model.items()}, str(tmp / "model.safetensors"))
        if state.ema is not None:
            save_file({k: v.detach().cpu().contiguous() for k, v in state.ema.items()}, str(tmp / "ema.safetensors"))
        torch.save(state.optimizer, tmp / "optimizer.pt")
        torch.save(state.scheduler, tmp / "scheduler.pt")
        torch.save(_rng_state(state.generator), tmp / "rng.pt")
        (tmp / "state.json").write_text(json.dumps({"step": state.step, **(state.info or {})}, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


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
    rng = torch.load(p / "rng.pt", weights_only=False)
    torch.set_rng_state(rng["torch"])
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    ema = load_file(str(p / "ema.safetensors")) if (p / "ema.safetensors").is_file() else None
    return TrainState(step=int(info.pop("step")), model=load_file(str(p / "model.safetensors")),
                      optimizer=torch.load(p / "optimizer.pt", weights_only=False),
                      scheduler=torch.load(p / "scheduler.pt", weights_only=False), generator=rng["generator"],
                      ema=ema, info=info)
