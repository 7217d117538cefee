"""Filesystem-event fault injector, loaded into a child process by putting this folder on PYTHONPATH.

Python imports ``sitecustomize`` at start-up, so any Python process (a workload script, the Dagster CLI,
its step subprocesses) gets the hooks without code changes. Environment:

    VFUSION3D_FAULT_MODE   "count": count events, append "<pid> <count>" to VFUSION3D_FAULT_LOG at exit;
                           "kill": SIGKILL this process just before its VFUSION3D_FAULT_AT-th event
                           (1-based), after appending "<pid> killed before event <k>: <call>" to the log;
                           "trace": append "<pid> <k> <call>" for every event.
    VFUSION3D_FAULT_ARM    "start" (default): count from start-up; "ready": count only after the workload
                           calls ``arm()`` (tests/reliability/faults.py ``ready()`` does), so imports that
                           create cache folders do not shift the numbering.
    VFUSION3D_FAULT_ONLY   count only the events whose arguments contain this text (e.g. an artifact root),
                           from start-up whatever VFUSION3D_FAULT_ARM says: for programs that never call
                           ``arm()`` (the Dagster CLI), the filter is what keeps imports out of the numbering.
    VFUSION3D_FAULT_KILL   "process" (default): the kill hits the process whose event it is; "group": its
                           whole process group (the harness starts each child in its own session), i.e. a
                           SIGKILL of the whole command, as when a multi-process Dagster run is killed.

Events are the calls that commit or destroy data: os.replace, os.rename, os.fsync, os.unlink, os.rmdir,
os.mkdir. Each process counts its own events.
"""

from __future__ import annotations

import atexit
import os
import shutil  # noqa: F401 - imported before wrapping: it decides at import whether os.unlink supports dir_fd
import signal

_MODE = os.environ.get("VFUSION3D_FAULT_MODE", "")
_LOG = os.environ.get("VFUSION3D_FAULT_LOG", "")
_AT = int(os.environ.get("VFUSION3D_FAULT_AT", "0") or 0)
_ONLY = os.environ.get("VFUSION3D_FAULT_ONLY", "")
_GROUP = os.environ.get("VFUSION3D_FAULT_KILL", "process") == "group"
_armed = os.environ.get("VFUSION3D_FAULT_ARM", "start") != "ready" or bool(_ONLY)
_count = 0
EVENTS = ("replace", "rename", "fsync", "unlink", "rmdir", "mkdir")


def arm() -> None:
    """Start counting events (with VFUSION3D_FAULT_ARM=ready)."""
    global _armed
    _armed = True


def _append_log(line: str) -> None:
    if _LOG:
        fd = os.open(_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)


def _describe(name: str, args: tuple) -> tuple[str, ...]:
    """The call's arguments as text; an fsync'ed file descriptor as the path it is open on."""
    if name == "fsync" and args and isinstance(args[0], int):
        try:
            return (os.readlink(f"/proc/self/fd/{args[0]}"),)
        except OSError:
            pass
    return tuple(map(str, args))


def _wrap(name: str, original):
    def hooked(*args, **kwargs):
        global _count
        described = _describe(name, args) if _armed and (_ONLY or _MODE != "count") else ()
        if _armed and (not _ONLY or any(_ONLY in a for a in described)):
            _count += 1
            if _MODE == "trace":
                _append_log(f"{os.getpid()} {_count} os.{name}{described}")
            elif _MODE == "kill" and _count == _AT:
                _append_log(f"{os.getpid()} killed before event {_count}: os.{name}{described}")
                if _GROUP:
                    os.killpg(os.getpgrp(), signal.SIGKILL)
                os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)

    hooked.__wrapped__ = original
    return hooked


if _MODE in ("count", "kill", "trace"):
    for _name in EVENTS:
        setattr(os, _name, _wrap(_name, getattr(os, _name)))
    if _MODE == "count":
        atexit.register(lambda: _append_log(f"{os.getpid()} {_count}"))
