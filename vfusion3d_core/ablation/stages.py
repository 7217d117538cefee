"""Resumable stages of the ablation: each writes one directory under the work dir, atomically.

A stage builds into a hidden temporary directory and renames it into place with its ``stage.json`` (the key it
was built for and what it returned). A later run with the same key reuses it; a different key rebuilds it; a
stage killed half-way leaves only its temporary directory, which the next run removes. So a killed ablation
re-runs cleanly and redoes only the stages it had not finished.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vfusion3d_core.data.files import discard_dir

STAGE_FILE = "stage.json"


def key_digest(key: Any) -> str:
    """sha256 of a JSON-serialisable key (sorted keys)."""
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


class StageRunner:
    """Runs named stages under ``work_dir``; ``log`` receives one line per stage start / reuse / end; ``timings``
    holds the seconds each stage took to build (for a reused stage, when it was built), ``reused`` the stages this
    process did not rebuild."""

    def __init__(self, work_dir: str | Path, log: Callable[[str], None] | None = None) -> None:
        self.work = Path(work_dir)
        self.work.mkdir(parents=True, exist_ok=True)
        self.log = log or (lambda _m: None)
        self.timings: dict[str, float] = {}
        self.reused: list[str] = []

    def run(self, name: str, key: Any, build: Callable[[Path], dict]) -> tuple[Path, dict]:
        """(directory, result) of stage ``name``: reused when built for ``key`` before, else ``build(tmp_dir)``
        (returning a JSON-serialisable result) and moved into place."""
        final, tmp = self.work / name, self.work / f".{name}.tmp"
        digest = key_digest(key)
        record = final / STAGE_FILE
        if record.is_file():
            saved = json.loads(record.read_text())
            if saved.get("key") == digest:
                self.log(f"[{name}] reusing the finished stage")
                self.timings[name] = float(saved.get("seconds", 0.0))
                self.reused.append(name)
                return final, saved["result"]
        shutil.rmtree(tmp, ignore_errors=True)  # left by a killed run
        tmp.mkdir(parents=True)
        self.log(f"[{name}] running")
        start = time.perf_counter()
        result = build(tmp)
        seconds = time.perf_counter() - start
        (tmp / STAGE_FILE).write_text(json.dumps({"key": digest, "seconds": seconds, "result": result},
                                                 indent=2, sort_keys=True, default=str))
        discard_dir(final)  # built for another key: renamed away first, so no reader sees it half-deleted
        tmp.rename(final)
        self.timings[name] = seconds
        self.log(f"[{name}] done in {seconds:.0f} s")
        return final, result
