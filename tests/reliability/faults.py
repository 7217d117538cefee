"""Fault injection: SIGKILL a command at random points, check invariants after every kill, re-run it.

    cal = calibrate(cmd_for(reference_dir))                     # one uninterrupted run: duration + events
    report = kill_at_random_points(cmd_for(work_dir), n=5, calibration=cal, seed=0,
                                   check=lambda kill: assert_invariants(work_dir))
    final_checks(work_dir)                                      # after the report's final uninterrupted run
    assert report.failures == []

Kill points are drawn (seeded) in two ways, alternated in ``mode="mixed"``:

- ``time``: a delay uniform in [0, calibration.seconds) after the child prints ``READY`` (see ``ready``;
  the calibrated window ends at ``DONE`` when the child prints it, else at its exit);
  the whole process group gets SIGKILL, so it can land anywhere, inside a write included.
- ``events``: the child is killed just before its k-th filesystem event (os.replace / rename / fsync / unlink /
  rmdir / mkdir), k uniform in [1, calibration.events], via ``inject/sitecustomize.py`` on PYTHONPATH; this
  lands exactly between the steps of an atomic commit (temp written -> fsync -> rename -> pointer swap).

After every kill ``check(kill)`` asserts what must hold at any instant (e.g. no partial shard or manifest
visible); the next attempt is the re-run. A run that ends by itself before its kill point is not counted
as a kill; ``on_complete`` may then reset the state (e.g. delete a finished training directory) so the next
kill lands in real work again. At the end the command runs once more uninterrupted and must succeed.

Any command works (a workload script here, ``dagster asset materialize`` for the pipeline); the child only
needs to print a line containing ``ready_marker`` (default ``READY``) when its work starts (``ready()`` does
this and arms the event counter; for the Dagster CLI a log line such as ``STEP_START`` can serve). Commands
that print no marker are timed and event-counted from their start (``ready_marker=None``). Event kills hit
the process whose k-th event it is (each process counts its own): for multi-process commands, kill points
by time (the whole process group is killed) are the simpler choice.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
INJECT_DIR = HERE / "inject"
READY = "READY"
DONE = "DONE"


def ready() -> None:
    """Called by a workload when its real work starts: prints READY and starts event counting."""
    print(READY, flush=True)
    try:
        import sitecustomize  # the injector, when the harness put it on PYTHONPATH

        if hasattr(sitecustomize, "arm"):
            sitecustomize.arm()
    except ImportError:
        pass


def done() -> None:
    """Called by a workload when its work is complete (the calibration window ends here, not at exit)."""
    print(DONE, flush=True)


def child_env(extra: dict[str, str] | None = None, inject: bool = False) -> dict[str, str]:
    """Environment for a child: the repo and this folder importable, one thread, optional injector."""
    paths = [str(REPO), str(HERE)] + ([str(INJECT_DIR)] if inject else [])
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    env["PYTHONPATH"] = os.pathsep.join(paths + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    for key in ("VFUSION3D_FAULT_MODE", "VFUSION3D_FAULT_AT", "VFUSION3D_FAULT_LOG", "VFUSION3D_FAULT_ARM",
                "VFUSION3D_FAULT_ONLY", "VFUSION3D_FAULT_KILL", "MLFLOW_TRACKING_URI"):
        env.pop(key, None)
    env.update(extra or {})
    return env


@dataclass
class Calibration:
    seconds: float  # work time of one uninterrupted run (from READY to exit)
    events: int  # filesystem events of that run (per process, summed)
    trace: list[str] = field(default_factory=list)  # with calibrate(trace=True): event k is trace[k - 1]


@dataclass
class Kill:
    attempt: int
    kind: str  # "time" or "events"
    point: str  # "0.73s after READY" / "event 12"
    killed: bool  # False: the run finished before the kill point
    where: str = ""  # for event kills: the call it was killed before
    returncode: int | None = None
    output: str = ""


@dataclass
class FaultReport:
    kills: list[Kill] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    attempts: int = 0
    final_ok: bool = False

    @property
    def injected(self) -> int:
        return sum(k.killed for k in self.kills)

    @property
    def recovered(self) -> int:
        """Kills after which every check held and the final re-run succeeded."""
        if not self.final_ok:
            return 0
        failed = {f.split(":", 1)[0] for f in self.failures}
        return sum(k.killed and f"attempt {k.attempt}" not in failed for k in self.kills)

    def summary(self, name: str) -> str:
        kinds = {kind: sum(k.killed and k.kind == kind for k in self.kills) for kind in ("time", "events")}
        kinds |= {k.kind: sum(x.killed and x.kind == k.kind for x in self.kills) for k in self.kills}  # + others
        by_kind = ", ".join(f"{kind} {n}" for kind, n in kinds.items() if n or kind in ("time", "events"))
        return (f"{name}: faults injected {self.injected} ({by_kind}) / recovered {self.recovered} / "
                f"failures {len(self.failures)}")


class _Child:
    """A child process in its own process group, its output collected by a thread."""

    def __init__(self, cmd: Sequence[str], env: dict[str, str], cwd: Path, ready_marker: str | None,
                 done_marker: str = DONE) -> None:
        self.proc = subprocess.Popen(list(cmd), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True)
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.done_at: float | None = None
        if ready_marker is None:
            self.ready.set()
        self._marker = ready_marker
        self._done = done_marker
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if self._marker is not None and self._marker in line:
                self.ready.set()
            if self.done_at is None and (line.strip() == DONE if self._done == DONE else self._done in line):
                self.done_at = time.monotonic()
        self.ready.set()  # exited without the marker: nothing more to wait for

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def wait(self, timeout: float) -> int:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            rc = self.proc.wait()
            self.lines.append(f"[harness] timed out after {timeout}s\n")
        self._thread.join(5)
        return rc

    @property
    def output(self) -> str:
        return "".join(self.lines)


def _event_log(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.is_file() else []


def calibrate(cmd: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path = REPO, timeout: float = 600,
              ready_marker: str | None = READY, log_dir: Path | None = None, trace: bool = False,
              done_marker: str = DONE) -> Calibration:
    """Run ``cmd`` once to completion, measuring its work time and counting its filesystem events (with
    ``trace``: listing them too, in order, for kill points chosen by what the event does). The work time
    ends at a line ``DONE`` (or one containing ``done_marker``, e.g. Dagster's ``RUN_SUCCESS``), else at exit."""
    log = Path(log_dir or "/tmp") / f"vfusion3d-fault-count-{os.getpid()}-{time.monotonic_ns()}.log"
    env = child_env(dict(env or {}, VFUSION3D_FAULT_MODE="trace" if trace else "count", VFUSION3D_FAULT_LOG=str(log),
                         VFUSION3D_FAULT_ARM="ready" if ready_marker else "start"), inject=True)
    try:
        child = _Child(cmd, env, cwd, ready_marker, done_marker)
        child.ready.wait(timeout)
        start = time.monotonic()
        rc = child.wait(timeout)
        seconds = (child.done_at or time.monotonic()) - start
        if rc != 0:
            raise RuntimeError(f"calibration run failed (exit {rc}):\n{child.output[-3000:]}")
        lines = _event_log(log)
        if trace:
            return Calibration(seconds, len(lines), [line.split(" ", 2)[2] for line in lines])
        return Calibration(seconds, sum(int(line.split()[1]) for line in lines))
    finally:
        log.unlink(missing_ok=True)


def run_with_kill(cmd: Sequence[str], *, at_event: int | None = None, after_seconds: float | None = None,
                  env: dict[str, str] | None = None, cwd: Path = REPO, timeout: float = 600,
                  ready_marker: str | None = READY, attempt: int = 0) -> Kill:
    """Run ``cmd`` once, SIGKILLed before its ``at_event``-th filesystem event or ``after_seconds`` after READY
    (neither: run to completion). ``Kill.killed`` says whether the kill happened before the run ended."""
    extra = dict(env or {})
    log = Path("/tmp") / f"vfusion3d-fault-kill-{os.getpid()}-{time.monotonic_ns()}.log"
    if at_event is not None:
        extra.update(VFUSION3D_FAULT_MODE="kill", VFUSION3D_FAULT_AT=str(at_event), VFUSION3D_FAULT_LOG=str(log),
                     VFUSION3D_FAULT_ARM="ready" if ready_marker else "start")
        kind, point = "events", f"event {at_event}"
    elif after_seconds is not None:
        kind, point = "time", f"{after_seconds:.2f}s after {'READY' if ready_marker else 'start'}"
    else:
        kind, point = "none", "no kill"
    child = _Child(cmd, child_env(extra, inject=at_event is not None), cwd, ready_marker)
    if after_seconds is not None:
        child.ready.wait(timeout)
        if child.proc.poll() is None:
            time.sleep(after_seconds)
            child.kill()
    rc = child.wait(timeout)
    where = next((line.split(": ", 1)[1] for line in _event_log(log) if "killed before" in line), "")
    log.unlink(missing_ok=True)
    return Kill(attempt, kind, point, rc == -signal.SIGKILL, where, rc, child.output[-3000:])


def trace_events(cmd: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path = REPO, timeout: float = 600,
                 ready_marker: str | None = READY) -> list[str]:
    """Run ``cmd`` to completion and return its filesystem events in order ("os.replace('a', 'b')", ...): event
    number k (1-based) is ``events[k - 1]``, for ``run_with_kill(at_event=k)`` at a named point."""
    log = Path("/tmp") / f"vfusion3d-fault-trace-{os.getpid()}-{time.monotonic_ns()}.log"
    extra = dict(env or {}, VFUSION3D_FAULT_MODE="trace", VFUSION3D_FAULT_LOG=str(log),
                 VFUSION3D_FAULT_ARM="ready" if ready_marker else "start")
    try:
        child = _Child(cmd, child_env(extra, inject=True), cwd, ready_marker)
        rc = child.wait(timeout)
        lines = _event_log(log)
    finally:
        log.unlink(missing_ok=True)
    if rc != 0:
        raise RuntimeError(f"trace run failed (exit {rc}):\n{child.output[-3000:]}")
    return [line.split(" ", 2)[2] for line in lines]


def kill_at_random_points(cmd: Sequence[str], n: int, *, calibration: Calibration, seed: int = 0,
                          mode: str = "mixed", check: Callable[[Kill], None] | None = None,
                          on_complete: Callable[[], None] | None = None, env: dict[str, str] | None = None,
                          cwd: Path = REPO, timeout: float = 600, ready_marker: str | None = READY,
                          max_attempts: int | None = None, final_run: bool = True,
                          event_fraction: float = 1.0) -> FaultReport:
    """Kill ``cmd`` (SIGKILL, whole process group) at ``n`` random points, checking after each; then run it once
    more to completion. Returns the report; never raises for a failed check (see ``report.failures``).

    Event kill points are drawn from the first ``event_fraction`` of the calibrated events: a re-run that
    resumes (training) does less work than the calibration run, so its later event numbers never come."""
    if mode not in ("time", "events", "mixed"):
        raise ValueError(f"mode must be time, events or mixed, got {mode!r}")
    rng = random.Random(seed)
    report = FaultReport()
    max_attempts = max_attempts or 3 * n + 2
    while report.injected < n and report.attempts < max_attempts:
        attempt = report.attempts
        report.attempts += 1
        kind = mode if mode != "mixed" else ("time", "events")[attempt % 2]
        if kind == "events" and calibration.events < 1:
            kind = "time"
        if kind == "events":
            kill = run_with_kill(cmd, at_event=rng.randint(1, max(1, int(calibration.events * event_fraction))),
                                 env=env, cwd=cwd, timeout=timeout, ready_marker=ready_marker, attempt=attempt)
        else:
            kill = run_with_kill(cmd, after_seconds=rng.uniform(0.0, calibration.seconds), env=env, cwd=cwd,
                                 timeout=timeout, ready_marker=ready_marker, attempt=attempt)
        report.kills.append(kill)
        if kill.returncode not in (0, -signal.SIGKILL):
            report.failures.append(f"attempt {attempt}: run failed on its own (exit {kill.returncode}) after the "
                                   f"previous kill:\n{kill.output[-2000:]}")
            continue
        if check is not None:
            try:
                check(kill)
            except Exception as exc:  # noqa: BLE001 - every broken invariant is a reported failure
                report.failures.append(f"attempt {attempt}: after a kill at {kill.point} {kill.where}: "
                                       f"{type(exc).__name__}: {exc}")
        if not kill.killed and on_complete is not None:
            on_complete()
    if final_run:
        final = run_with_kill(cmd, env=env, cwd=cwd, timeout=timeout, ready_marker=ready_marker)
        report.final_ok = final.returncode == 0
        if not report.final_ok:
            report.failures.append(f"final: the uninterrupted re-run failed (exit {final.returncode}):\n"
                                   f"{final.output[-2000:]}")
    else:
        report.final_ok = True
    return report


def python_cmd(*args: str) -> list[str]:
    """``python tests/reliability/workloads.py ARGS`` (the child workloads of this harness)."""
    return [sys.executable, str(HERE / "workloads.py"), *args]
