"""The one training-checkpoint writer of the trainers (LRM, video model): numbered directories written whole.

    ROOT/<prefix><step:08d>/   files written by the trainer's ``write(directory)`` callback

A checkpoint is assembled in a hidden temporary directory and renamed into place, so a visible checkpoint is
always complete; a writer that fails or is killed leaves no visible trace (its temporary is removed, or cleaned
by the next writer). Old checkpoints beyond ``keep`` are removed rename-first (``discard_dir``). ``.pt`` files
are read with ``torch.load(weights_only=True)``: tensors and plain containers only, never arbitrary code.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from vfusion3d_core.data.files import clean_dead_hidden, discard_dir


class CheckpointError(RuntimeError):
    """A training checkpoint that cannot be used: truncated, unsafe to unpickle, non-finite or mismatched."""


def write_checkpoint(root: str | Path, prefix: str, step: int, write: Callable[[Path], None], keep: int,
                     marker: str) -> Path:
    """``write`` the files of checkpoint ``step`` into a fresh directory and publish it as
    ``root/<prefix><step:08d>`` (replacing one of the same step); keep the newest ``keep`` (0: all).
    ``marker`` is the file that makes a directory a checkpoint (``list_checkpoint_dirs``)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    clean_dead_hidden(root)  # temporaries / trash of killed writers
    final = root / f"{prefix}{step:08d}"
    tmp = root / f".tmp-{os.getpid()}-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        write(tmp)
        if not (tmp / marker).is_file():
            raise CheckpointError(f"checkpoint writer produced no {marker} in {tmp}")
        discard_dir(final)  # the same step re-written after a resume: replace it, rename-first
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoint_dirs(root, prefix, marker)[:-keep] if keep > 0 else []:
        discard_dir(old)
    return final


def list_checkpoint_dirs(root: str | Path, prefix: str, marker: str) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.name.startswith(prefix) and (p / marker).is_file())


def safe_torch_load(path: str | Path) -> Any:
    """``torch.load(weights_only=True)`` on the CPU; a damaged or unsafe file is a ``CheckpointError`` naming it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling refused or file damaged: a bad checkpoint
        raise CheckpointError(f"cannot read {path} safely (weights_only): {exc}") from exc
