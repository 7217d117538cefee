"""Fault injection for every asset of the Dagster graph (docs/reliability.md, "Fault injection for every asset").

For each step of the graph at a micro size (``STEPS``: renders_3d, prompt_set, video_model, quality_models,
synthetic_videos[shard-000000], filtered_multiview_dataset[shard-000000], lrm_3d_only, lrm_pretrained,
lrm_finetuned, eval_metrics), in one temporary DAGSTER_HOME + artifact root (``Campaign``):

1. snapshot the state (instance + artifact root) holding everything upstream of the step;
2. reference: ``dagster asset materialize --select ASSET [--partition KEY]`` runs uninterrupted (it is also
   the calibration: its work time from ``STEP_START`` to exit, and a trace of its filesystem events under
   the artifact root); its digest, versions, sample keys and weights are kept; the snapshot is restored
   (same paths, so MLflow artifact locations and manifests compare byte for byte);
3. the same command is SIGKILLed (whole process group) ``n`` times, each attempt re-running on what the
   previous kill left, at points of three kinds, cycled:

   - ``events``: just before the k-th filesystem event touching a shard (``.tar``), a checkpoint (``.work/``,
     ``.checkpoints/``), ``manifest.json``, a version directory, ``LATEST.json`` or MLflow's artifact store,
     k drawn from the reference's trace of that kind (``inject/sitecustomize.py``, VFUSION3D_FAULT_ONLY);
   - ``time``: uniform over the reference's work window (anywhere: imports, training steps, sqlite writes);
   - ``mlflow``: 0-0.5 s after the step logs ``MLflow run <id>``: inside MLflow logging (params, inputs);

   after every kill ``check_instant`` asserts what must hold at any instant (no partial version or manifest
   visible, LATEST absent or naming a verified version, nothing else changed) and, for assets in the
   ``gpu`` pool, runs ``recover_dead_runs`` as the daemon's sensor would (a dead run's pool slot would
   otherwise block the re-run for ever); other assets rely on the re-run's own recovery;
4. a final uninterrupted run, then ``check_final``: the digest equals the reference's (training assets:
   every weight tensor within ``WEIGHT_TOL`` of the reference's), sample keys unique and complete, no
   staging or temporary left, no Dagster run STARTED and no pool slot held, no MLflow run RUNNING, every
   FINISHED MLflow run and every Dagster materialization names a committed, verified version.

The recovered state is the next step's upstream. ``python -m tests.reliability --only pipeline`` runs every
step; ``test_pipeline_faults.py`` a reduced set.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tarfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from faults import REPO, FaultReport, Kill, calibrate, child_env, run_with_kill

sys.path.insert(0, str(REPO / "tests")) if str(REPO / "tests") not in sys.path else None
from pipeline_utils import LRM_MICRO, MICRO_RENDERS, MICRO_SOURCE, VIDEO_MICRO, materialize_cmd  # noqa: E402

PROMPTS = ["a red box", "a glossy blue sphere", "a green cone next to a yellow torus", "a striped purple ring"]
SHARD = "shard-000000"
OBJECT_SHARD = "objects-000000"
WEIGHT_TOL = 1e-5  # training assets: max |resumed - uninterrupted| over every weight
READY_MARKER = "STEP_START"  # the Dagster CLI's log line when the asset's step starts
DONE_MARKER = "RUN_SUCCESS"  # ... when the run has ended (time kills are drawn between the two)
MLFLOW_MARKER = "MLflow run "  # logged by MLflowResource.run_for right after the MLflow run started
RUN_TIMEOUT = 420.0
ENDED = ("SUCCESS", "FAILURE", "CANCELED")
_LRM = {**LRM_MICRO, "overrides_json": json.dumps({**json.loads(LRM_MICRO["overrides_json"]), "checkpoint_every": 1})}


@dataclass(frozen=True)
class Step:
    asset: str
    partition: str | None = None
    training: bool = False  # parameters compared within WEIGHT_TOL (digests hold timings / loss histories)
    pooled: bool = False  # in the `gpu` pool: a dead run's slot must be freed before the re-run
    count_key: str | None = None  # manifest count that equals the number of samples in its shards

    @property
    def name(self) -> str:
        return f"{self.asset}[{self.partition}]" if self.partition else self.asset


STEPS = [
    Step("source_objects"),
    Step("renders_3d", OBJECT_SHARD, count_key="objects"),
    Step("prompt_set", count_key=None),
    Step("video_model", training=True, pooled=True),
    Step("quality_models"),
    Step("synthetic_videos", SHARD, pooled=True, count_key="videos"),
    Step("filtered_multiview_dataset", SHARD, count_key="kept"),
    Step("lrm_3d_only", training=True, pooled=True),
    Step("lrm_pretrained", training=True, pooled=True),
    Step("lrm_finetuned", training=True, pooled=True),
    Step("eval_metrics"),
]
BY_NAME = {s.name: s for s in STEPS} | {s.asset: s for s in STEPS}


def op_config(asset: str, prompt_file: Path) -> dict:
    """Micro config of one asset (the whole graph runs in a few minutes on 2 CPU cores)."""
    return {
        "source_objects": {**MICRO_SOURCE, "objects_per_partition": 8},  # one object shard
        "renders_3d": MICRO_RENDERS,
        "prompt_set": {"source_file": str(prompt_file), "template_count": 0, "shard_size": 4},
        "video_model": {"eval_count": 2, "torch_threads": 1,
                        "overrides_json": json.dumps({**VIDEO_MICRO, "checkpoint_every": 1})},
        "quality_models": {"torch_threads": 1},
        "synthetic_videos": {"samples_per_shard": 2, "torch_threads": 1},
        "filtered_multiview_dataset": {"samples_per_shard": 2, "torch_threads": 1},
        "lrm_3d_only": _LRM,
        "lrm_pretrained": {**_LRM, "min_samples": 1},
        "lrm_finetuned": _LRM,
        "eval_metrics": {"max_objects": 2, "novel_views": 2, "render_size": 32, "turntable_frames": 2},
    }[asset]


# --- reading the artifact root ------------------------------------------------------------------------------
def _store(root: Path):
    from vfusion3d_core.data import ArtifactStore

    return ArtifactStore(root)


def latest_pointers(root: Path) -> dict[str, bytes]:
    """Every LATEST.json under the root (relative path -> bytes)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("LATEST.json"))
            if "mlflow-artifacts" not in p.parts}


def sample_keys(version) -> list[str]:
    """Sample keys of every tar shard of a version, in manifest order (duplicates kept, to be detected)."""
    keys: list[str] = []
    for f in sorted(version.manifest.files, key=lambda f: f.path):
        if f.path.endswith(".tar"):
            with tarfile.open(version.path / f.path, "r:") as tf:
                names = [m.name.rsplit("/", 1)[-1].split(".", 1)[0] for m in tf if m.isfile()]
            keys += list(dict.fromkeys(names))
    return keys


def weights(version) -> dict[str, object]:
    """Every tensor of every .safetensors file of a version (file/tensor -> tensor)."""
    from safetensors.torch import load_file

    out = {}
    for f in version.manifest.files:
        if f.path.endswith(".safetensors"):
            out.update({f"{f.path}/{k}": v for k, v in load_file(version.path / f.path).items()})
    return out


def max_weight_diff(a: dict, b: dict) -> float:
    if set(a) != set(b):
        return float("inf")
    return max((float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].numel()), default=0.0)


@dataclass
class Reference:
    digest: str
    versions: set[str]  # version directory names after the uninterrupted run
    before: set[str]  # ... before it (the snapshot's)
    keys: list[str]
    weights: dict = field(default_factory=dict)
    trace: list[str] = field(default_factory=list)
    seconds: float = 0.0


# --- the campaign ---------------------------------------------------------------------------------------------
class Campaign:
    """One DAGSTER_HOME + artifact root, walked through ``STEPS`` in order."""

    def __init__(self, tmp: Path, seed: int = 0, log: Callable[[str], None] = print) -> None:
        self.tmp = Path(tmp)
        self.state = self.tmp / "state"
        self.home = self.state / "dagster_home"
        self.root = self.state / "artifacts"
        self.snapshot_dir = self.tmp / "snapshot"
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
        self.prompts = self.tmp / "prompts.txt"
        self.prompts.write_text("\n".join(PROMPTS) + "\n")
        self.env = {"DAGSTER_HOME": str(self.home), "VFUSION3D_ARTIFACT_ROOT": str(self.root),
                    "VFUSION3D_PRESET": "tiny", "DAGSTER_DISABLE_TELEMETRY": "1"}
        self.uri = f"sqlite:///{self.root}/mlflow.db"
        self.rng = random.Random(seed)
        self.log = log
        self.done: list[str] = []
        self._create_tracking_store()  # once: every run then finds the tables (their migration takes seconds)

    def cmd(self, step: Step) -> list[str]:
        config = {"ops": {step.asset: {"config": op_config(step.asset, self.prompts)}},
                  "execution": {"config": {"in_process": {}}}}  # the CLI process is the materializing process
        return materialize_cmd(step.asset, config) + (["--partition", step.partition] if step.partition else [])

    def asset_dir(self, step: Step) -> Path:
        return _store(self.root).asset_dir(step.asset, step.partition)

    # state snapshots (same paths: absolute paths in the instance / MLflow store stay valid)
    def snapshot(self) -> None:
        shutil.rmtree(self.snapshot_dir, ignore_errors=True)
        shutil.copytree(self.state, self.snapshot_dir, symlinks=True)

    def restore(self) -> None:
        shutil.rmtree(self.state)
        shutil.copytree(self.snapshot_dir, self.state, symlinks=True)

    def build(self, step: Step) -> None:
        """Materialize a step with no kill (upstream of the steps under test)."""
        start = time.monotonic()
        kill = run_with_kill(self.cmd(step), env=self.env, ready_marker=None, timeout=RUN_TIMEOUT)
        if kill.returncode != 0:
            raise RuntimeError(f"building {step.name} failed (exit {kill.returncode}):\n{kill.output[-3000:]}")
        self.done.append(step.name)
        self.log(f"built {step.name} in {time.monotonic() - start:.0f}s")

    def up_to(self, targets: dict[str, int]) -> list[Step]:
        """The steps to walk: every step up to the last target."""
        last = max(STEPS.index(BY_NAME[t]) for t in targets)
        return STEPS[:last + 1]

    def run(self, targets: dict[str, int], verbose: bool = False) -> dict[str, FaultReport]:
        """Walk the graph; kill each target step ``targets[name]`` times. Returns a report per target."""
        targets = {BY_NAME[t].name: n for t, n in targets.items()}
        reports = {}
        for step in self.up_to(targets):
            if step.name not in targets:
                self.build(step)
                continue
            start = time.monotonic()
            report = self.fault(step, targets[step.name])
            reports[step.name] = report
            self.done.append(step.name)
            self.log(f"{report.summary(step.name)}  [{report.attempts} runs killed or completed, "
                     f"{time.monotonic() - start:.0f}s]")
            if verbose:
                for k in report.kills:
                    self.log(f"    attempt {k.attempt}: {k.kind} {k.point}: "
                             f"{'killed' if k.killed else 'finished first'} {k.where[:160]}")
            for f in report.failures:
                self.log(f"    FAILED {f[:3000]}")
        points = Counter(k.point.split(":", 1)[0] for r in reports.values() for k in r.kills if k.killed)
        self.log("kill points: " + ", ".join(f"{label} {n}" for label, n in points.most_common()))
        return reports

    # --- one step under fault injection ---------------------------------------------------------------
    def reference(self, step: Step) -> Reference:
        before = {p.name for p in _store(self.root).version_dirs(step.asset, step.partition)}
        cal = calibrate(self.cmd(step), env={**self.env, "VFUSION3D_FAULT_ONLY": str(self.root)},
                        ready_marker=READY_MARKER, done_marker=DONE_MARKER, timeout=RUN_TIMEOUT, trace=True)
        version = _store(self.root).latest(step.asset, step.partition)
        assert version is not None, f"the reference run of {step.name} committed nothing"
        return Reference(version.digest, {p.name for p in _store(self.root).version_dirs(step.asset, step.partition)},
                         before, sample_keys(version), weights(version) if step.training else {}, cal.trace,
                         cal.seconds)

    def kill_kinds(self, step: Step, ref: Reference) -> list[tuple[str, str, int]]:
        """Event kinds of the step that its reference run went through: (pattern, label, events of that kind),
        in the step's priority order."""
        base = self.asset_dir(step).as_posix()
        kinds = [(".tar", "shard write"), ("manifest.json", "manifest write"),
                 (f"{self.root}/{step.asset}/.work/", "checkpoint save (work dir)"),
                 (f"{self.root}/{step.asset}/.checkpoints/", "checkpoint save"),
                 (f"{base}/versions/", "version rename"), ("LATEST.json", "pointer swap"),
                 (f"{self.root}/mlflow-artifacts/", "mlflow artifact logging")]
        if step.training:
            kinds = kinds[2:4] + kinds[6:] + kinds[:2] + kinds[4:6]
        present = [(pattern, label, sum(pattern in e for e in ref.trace)) for pattern, label in kinds]
        return [p for p in present if p[2]]

    def draw(self, step: Step, i: int, kinds: list[tuple[str, str, int]], ref: Reference
             ) -> tuple[str, str, float, str]:
        """The i-th kill point (kind, pattern or marker, event number or delay, label): kinds cycle events /
        time / mlflow / events ...; a step's first event kill is of its main kind (shard writes, checkpoint
        saves), the next ones of the other kinds in turn, starting at an offset per step so that a campaign
        with few kills per step still goes through every kind."""
        kind = ("events", "time", "mlflow")[i % 3]
        if kind == "events" and kinds:
            j = i // 3
            pattern, label, count = kinds[0] if j == 0 or len(kinds) == 1 else \
                kinds[1 + (j - 1 + STEPS.index(step)) % (len(kinds) - 1)]
            return "events", pattern, float(self.rng.randint(1, count)), label
        if kind == "mlflow":
            return "mlflow", MLFLOW_MARKER, self.rng.uniform(0.0, 0.5), "inside MLflow logging"
        return "time", READY_MARKER, self.rng.uniform(0.0, ref.seconds), "random time"

    def fault(self, step: Step, n: int) -> FaultReport:
        self.snapshot()
        ref = self.reference(step)
        self.restore()
        before_pointers = latest_pointers(self.root)
        report = FaultReport()
        kinds = self.kill_kinds(step, ref)
        for attempt in range(3 * n + 2):
            if report.injected >= n:
                break
            kind, what, value, label = self.draw(step, report.injected, kinds, ref)
            report.attempts += 1
            if kind == "events":
                env = {**self.env, "VFUSION3D_FAULT_ONLY": what, "VFUSION3D_FAULT_KILL": "group"}
                kill = run_with_kill(self.cmd(step), at_event=int(value), env=env, ready_marker=READY_MARKER,
                                     timeout=RUN_TIMEOUT, attempt=attempt)
                kill.point = f"{label}: event {int(value)} of {what.replace(str(self.root), 'ROOT')!r}"
            else:
                kill = run_with_kill(self.cmd(step), after_seconds=value, env=self.env, ready_marker=what,
                                     timeout=RUN_TIMEOUT, attempt=attempt)
                kill.kind, kill.point = kind, f"{label}: {value:.2f}s after {what.strip()!r}"
                kill.where = f"last log: {last_log_line(kill.output)}"
            report.kills.append(kill)
            if kill.returncode not in (0, -signal.SIGKILL):
                report.failures.append(f"attempt {attempt}: run failed on its own (exit {kill.returncode}) after "
                                       f"the previous kill:\n{failure_excerpt(kill.output)}")
                continue
            try:
                self.check_instant(step, ref, before_pointers, kill)
            except Exception as exc:  # noqa: BLE001 - every broken invariant is a reported failure
                report.failures.append(f"attempt {attempt}: after a kill at {kill.point} {kill.where}: "
                                       f"{type(exc).__name__}: {exc}")
            if not kill.killed:  # finished before its kill point: start the next attempt from the snapshot
                self.restore()
        final = run_with_kill(self.cmd(step), env=self.env, ready_marker=None, timeout=RUN_TIMEOUT)
        report.final_ok = final.returncode == 0
        if not report.final_ok:
            report.failures.append(f"final: the uninterrupted re-run failed (exit {final.returncode}):\n"
                                   f"{failure_excerpt(final.output)}")
            return report
        try:
            self.check_final(step, ref, before_pointers)
        except Exception as exc:  # noqa: BLE001
            report.failures.append(f"final: {type(exc).__name__}: {exc}")
            report.final_ok = False
        return report

    # --- invariants ---------------------------------------------------------------------------------------
    def check_versions(self, step: Step, ref: Reference) -> None:
        """Every visible version of the step is complete and verifies; LATEST absent or naming one of them;
        nothing but ``versions/`` and ``LATEST.json`` visible in the asset directory."""
        from vfusion3d_core.data import Manifest

        store = _store(self.root)
        base = self.asset_dir(step)
        for d in store.version_dirs(step.asset, step.partition):
            manifest = Manifest.read(d / "manifest.json")  # refuses a partial or edited manifest
            assert d.name == manifest.digest[:16], f"version {d.name} holds digest {manifest.digest[:16]}"
            problems = manifest.verify(d)
            assert not problems, f"visible version {d.name} is partial: {problems[:3]}"
            if not step.training:  # deterministic: only the snapshot's versions and the reference's
                assert d.name in ref.versions, f"unexpected version {d.name} (reference: {sorted(ref.versions)})"
            keys = sample_keys(store.version(step.asset, manifest.digest, step.partition))
            assert len(keys) == len(set(keys)), f"{d.name}: duplicate samples"
            if step.count_key:
                assert len(keys) == manifest.counts[step.count_key], \
                    f"{d.name}: {len(keys)} samples in its shards, manifest counts {manifest.counts[step.count_key]}"
        if (base / "LATEST.json").exists():
            json.loads((base / "LATEST.json").read_text())  # never half-written
            latest = store.latest(step.asset, step.partition)
            assert latest is not None and latest.manifest.verify(latest.path) == []
        visible = sorted(p.name for p in base.iterdir() if not p.name.startswith(".")) if base.is_dir() else []
        assert set(visible) <= {"versions", "LATEST.json"}, f"unexpected visible entries in {base}: {visible}"

    def check_others_unchanged(self, step: Step, before_pointers: dict[str, bytes]) -> None:
        mine = self.asset_dir(step).relative_to(self.root).as_posix() + "/LATEST.json"
        now = latest_pointers(self.root)
        changed = sorted(k for k in set(now) | set(before_pointers)
                         if k != mine and now.get(k) != before_pointers.get(k))
        assert not changed, f"other assets' LATEST changed: {changed}"

    def check_instant(self, step: Step, ref: Reference, before_pointers: dict[str, bytes], kill: Kill) -> None:
        import dagster as dg

        self.check_versions(step, ref)
        self.check_others_unchanged(step, before_pointers)
        mlflow_store(self.root / "mlflow.db")  # the tracking store is intact (sqlite integrity check)
        with self.instance() as instance:  # ... and the instance (runs readable)
            stuck = {r.run_id for r in instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))}
        if not (step.pooled and kill.killed):
            return  # the re-run's own recovery (MLflowResource.run_for) ends the killed run
        # a dead run of the gpu pool holds its slot: the daemon's recovery sensor frees it (else the re-run
        # waits for ever); here its command-line twin, `python -m vfusion3d_pipeline.recovery`
        recovered = self.recover()
        assert set(recovered["dagster"]) == stuck, f"recovery failed {recovered['dagster']}, stuck: {stuck}"
        with self.instance() as instance:
            assert not instance.event_log_storage.get_concurrency_info("gpu").claimed_slots, "gpu slot still held"
        runs, _ = mlflow_store(self.root / "mlflow.db")
        running = [r for r in runs.values() if r["status"] == "RUNNING"]
        assert not running, f"MLflow runs still RUNNING after recovery: {[r['run_id'][:8] for r in running]}"

    def recover(self) -> dict[str, list[str]]:
        proc = subprocess.run([sys.executable, "-m", "vfusion3d_pipeline.recovery"], cwd=REPO, capture_output=True,
                              text=True, env=child_env(self.env), timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return ast.literal_eval(proc.stdout.strip().splitlines()[-1])

    @contextlib.contextmanager
    def instance(self):
        """The campaign's Dagster instance (its dagster.yaml reads DAGSTER_HOME from the environment)."""
        import dagster as dg

        saved = os.environ.get("DAGSTER_HOME")
        os.environ["DAGSTER_HOME"] = str(self.home)
        try:
            with dg.DagsterInstance.from_config(str(self.home)) as instance:
                yield instance
        finally:
            if saved is None:
                os.environ.pop("DAGSTER_HOME", None)
            else:
                os.environ["DAGSTER_HOME"] = saved

    def _create_tracking_store(self) -> None:
        """The MLflow store's tables, made by a child process: MLflow caches its sqlite engine per URI, and an
        engine of this process would keep reading a store that ``restore`` replaced (this process reads the
        store with sqlite3 instead: ``mlflow_store``)."""
        code = "import sys, mlflow; mlflow.MlflowClient(sys.argv[1]).search_experiments()"
        proc = subprocess.run([sys.executable, "-c", code, self.uri], capture_output=True, text=True, timeout=300,
                              env=child_env(self.env))
        assert proc.returncode == 0, proc.stderr[-3000:]

    def check_final(self, step: Step, ref: Reference, before_pointers: dict[str, bytes]) -> None:
        import dagster as dg

        store = _store(self.root)
        self.check_versions(step, ref)
        self.check_others_unchanged(step, before_pointers)
        latest = store.latest(step.asset, step.partition)
        assert latest is not None, "nothing committed after the final run"
        if step.training:
            diff = max_weight_diff(weights(latest), ref.weights)
            assert diff <= WEIGHT_TOL, f"resumed parameters differ from the uninterrupted run's by {diff:.3g}"
        else:
            assert latest.digest == ref.digest, f"digest {latest.digest[:16]} != reference {ref.digest[:16]}"
            assert {p.name for p in store.version_dirs(step.asset, step.partition)} == ref.versions
        keys = sample_keys(latest)
        assert keys == ref.keys, f"samples differ from the reference's: {len(keys)} vs {len(ref.keys)}"
        base = self.asset_dir(step)
        # hidden: the commit lock persists by design; staging / work / checkpoint folders must be empty
        hidden = sorted(p.name for p in base.iterdir() if p.name.startswith(".") and p.name != ".commit.lock"
                        and not (p.name in (".staging", ".work", ".checkpoints") and not any(p.iterdir())))
        assert not hidden, f"leftovers in {base}: {hidden}"
        committed = {p.name for p in store.version_dirs(step.asset, step.partition)}

        with self.instance() as instance:
            runs = instance.get_runs()
            bad = [(r.run_id[:8], r.status.value) for r in runs if r.status.value not in ENDED]
            assert not bad, f"Dagster runs not ended after recovery: {bad}"
            assert not instance.event_log_storage.get_concurrency_info("gpu").claimed_slots, "gpu slot still held"
            key = dg.AssetKey(step.asset)
            records = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=key, asset_partitions=[step.partition] if step.partition else None),
                limit=1000).records
            versions = [r.asset_materialization.tags.get("dagster/data_version", "") for r in records]
            assert versions and versions[0] == latest.digest, "the latest Dagster materialization is not LATEST"
            orphan = [v[:16] for v in versions if v[:16] not in committed]
            assert not orphan, f"Dagster materializations of uncommitted versions: {orphan}"
            dagster_status = {r.run_id: r.status.value for r in runs}
            if step.asset == "prompt_set":
                registered = set(instance.get_dynamic_partitions("prompt_shards"))
                shards = {f.path.rsplit("/", 1)[-1].split(".")[0] for f in latest.manifest.files
                          if f.path.endswith(".parquet")}
                assert shards <= registered, f"prompt shards not registered as partitions: {shards - registered}"

        runs, models = mlflow_store(self.root / "mlflow.db")
        running = [r["run_id"][:8] for r in runs.values() if r["status"] == "RUNNING"]
        assert not running, f"MLflow runs left RUNNING: {running}"
        mine = [r for r in runs.values() if r["tags"].get("dagster.asset_key") == step.asset
                and r["tags"].get("dagster.partition_key") == step.partition]
        assert mine, f"no MLflow run of {step.name}"
        for r in mine:
            status = dagster_status.get(r["tags"].get("dagster.run_id", ""))
            if r["status"] == "FINISHED":
                assert r["tags"].get("output.digest", "")[:16] in committed, \
                    f"FINISHED MLflow run {r['run_id'][:8]} names no committed version"
            if status == "SUCCESS":
                assert r["status"] == "FINISHED", f"MLflow run of a successful Dagster run is {r['status']}"
        for (name, version), tags in models.items():
            if name == step.asset:
                assert tags.get("vfusion3d.digest", "")[:16] in committed, \
                    f"registered {name} v{version} names no committed version"


def mlflow_store(db: Path) -> tuple[dict[str, dict], dict[tuple[str, str], dict[str, str]]]:
    """(runs by id: {run_id, status, tags}, registered model versions: (name, version) -> tags) read straight
    from the sqlite tracking store, opened read-only for this call only; asserts its integrity."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok", f"{db} is corrupt"
        runs = {rid: {"run_id": rid, "status": status, "tags": {}}
                for rid, status in con.execute("SELECT run_uuid, status FROM runs")}
        for key, value, rid in con.execute("SELECT key, value, run_uuid FROM tags"):
            runs[rid]["tags"][key] = value
        models: dict[tuple[str, str], dict[str, str]] = {
            (name, str(version)): {} for name, version in con.execute("SELECT name, version FROM model_versions")}
        for key, value, name, version in con.execute("SELECT key, value, name, version FROM model_version_tags"):
            models.setdefault((name, str(version)), {})[key] = value
    finally:
        con.close()
    return runs, models


def last_log_line(output: str) -> str:
    """The last Dagster log message of a killed run's output (where a time kill landed)."""
    for line in reversed(output.splitlines()):
        if " - dagster - " in line:
            return line.rsplit(" - ", 1)[-1][:120]
    return ""


def failure_excerpt(output: str) -> str:
    lines = output.splitlines()
    first = next((i for i, line in enumerate(lines) if "STEP_FAILURE" in line or "Traceback" in line), 0)
    return "\n".join(lines[first:first + 40] + ["..."] + lines[-10:])


def run_pipeline_faults(tmp: Path, targets: dict[str, int], seed: int = 0, verbose: bool = False,
                        log: Callable[[str], None] = print) -> dict[str, FaultReport]:
    """Kill the targets' materializations (``{"renders_3d": 2, ...}``; steps in between are built plainly)."""
    return Campaign(tmp, seed, log).run(targets, verbose)
