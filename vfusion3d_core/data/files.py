"""Filesystem primitives every writer shares: atomic file writes, directory removal no reader sees half-done,
process liveness of a temporary's owner, and cleanup of what killed writers left behind."""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
import uuid
from pathlib import Path


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the whole new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):  # left by killed writers
        if not pid_alive(stale.name[len(path.name) + 2:].split(".", 1)[0]):
            stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def pid_alive(pid: int | str) -> bool:
    """Whether a process with this id (an int or a decimal string) runs on this machine; False for a non-number
    and for a killed process not yet reaped."""
    pid = str(pid)
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return int(pid) != 0 and not _zombie(pid)


def _zombie(pid: str) -> bool:
    """A killed process not yet reaped by its parent (e.g. a Dagster step process whose run was SIGKILLed) still
    answers kill(pid, 0) but runs no more; Linux shows it as state Z in /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[:1] == ["Z"]


def discard_dir(path: Path) -> None:
    """Remove a directory so that no reader ever sees it half-deleted: rename it to a hidden sibling
    (``.trash-<pid>-<token>-<name>``) first, then delete that. A kill mid-way leaves only hidden trash,
    which ``clean_dead_hidden`` removes later."""
    path = Path(path)
    if not path.exists():
        return
    trash = path.parent / f".trash-{os.getpid()}-{uuid.uuid4().hex[:8]}-{path.name}"
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def clean_dead_hidden(directory: Path, prefixes: tuple[str, ...] = (".tmp-", ".trash-")) -> int:
    """Delete the hidden ``<prefix><pid>-...`` entries of ``directory`` (temporaries and trash of writers)
    whose process is gone; entries of live processes are kept. Returns how many were removed."""
    directory = Path(directory)
    if not directory.is_dir():
        return 0
    removed = 0
    for p in directory.iterdir():
        prefix = next((x for x in prefixes if p.name.startswith(x)), None)
        if prefix is None or pid_alive(p.name[len(prefix):].split("-", 1)[0]):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed += 1
    return removed
