"""Resumable ablation stages: reused for the same key, rebuilt for another, and a stage killed half-way (a real
SIGKILL) leaves nothing visible and is rebuilt cleanly by the next run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from vfusion3d_core.ablation.stages import STAGE_FILE, StageRunner

REPO = Path(__file__).resolve().parents[2]


def test_same_key_reuses_other_key_rebuilds(tmp_path) -> None:
    builds = []

    def build(tmp: Path) -> dict:
        builds.append(1)
        (tmp / "out.txt").write_text(str(len(builds)))
        return {"n": len(builds)}

    runner = StageRunner(tmp_path)
    path, result = runner.run("stage", {"a": 1}, build)
    assert result == {"n": 1} and (path / "out.txt").read_text() == "1"
    again = StageRunner(tmp_path)
    assert again.run("stage", {"a": 1}, build) == (path, {"n": 1}) and again.reused == ["stage"]
    assert again.timings["stage"] == json.loads((path / STAGE_FILE).read_text())["seconds"]
    _, changed = StageRunner(tmp_path).run("stage", {"a": 2}, build)
    assert changed == {"n": 2} and (path / "out.txt").read_text() == "2" and len(builds) == 2


KILLED_STAGE = """
import sys, pathlib
from vfusion3d_core.ablation.stages import StageRunner
def build(tmp):
    (tmp / "half.txt").write_text("partial")
    pathlib.Path(sys.argv[2]).write_text("started")  # the event the test waits for
    sys.stdin.read()  # blocks until killed
    return {}
StageRunner(sys.argv[1]).run("stage", {"a": 1}, build)
"""


def test_a_killed_stage_leaves_nothing_and_is_rebuilt(tmp_path) -> None:
    work, started = tmp_path / "work", tmp_path / "started"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_STAGE, str(work), str(started)], cwd=REPO,
                            stdin=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.monotonic() + 60
    while not started.exists():  # explicit event: the build wrote its marker
        assert proc.poll() is None and time.monotonic() < deadline, "the stage subprocess ended before building"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (work / "stage").exists() and (work / ".stage.tmp" / "half.txt").exists()
    path, result = StageRunner(work).run("stage", {"a": 1}, lambda tmp: {"rebuilt": True})
    assert result == {"rebuilt": True} and not (work / ".stage.tmp").exists() and not (path / "half.txt").exists()
