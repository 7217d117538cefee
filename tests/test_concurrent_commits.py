"""Concurrent materializations of the same asset/partition: whole versions one after the other, never an
interleaving; identical content gives one version; the `gpu` pool is never exceeded."""

import multiprocessing as mp
import subprocess
import time
from pathlib import Path

import dagster as dg
import pytest
from pipeline_utils import (
    LRM_MICRO,
    MICRO_RENDERS,
    REPO,
    materialize_cmd,
    materialize_renders_for,
    pipeline_env,
)

from vfusion3d_core.data import ArtifactStore, Manifest, file_entries


def _committer(root: str, worker: int, barrier, rounds: int, errors) -> None:
    store = ArtifactStore(root)
    for i in range(rounds):
        text = "A" * 100_000 if (worker + i) % 2 else "B" * 100_000
        with store.staging("thing", "p0") as d:
            for n in range(3):
                (d / f"f{n}.txt").write_text(text)
            barrier.wait()  # every worker commits at the same moment
            try:
                store.commit(d, Manifest("thing", file_entries(d, [f"f{n}.txt" for n in range(3)]), {}, {}),
                             "thing", "p0")
            except Exception as exc:  # noqa: BLE001 (reported to the parent)
                errors.put(f"{worker}/{i}: {exc!r}")


def test_simultaneous_commits_publish_whole_versions(tmp_path) -> None:
    ctx = mp.get_context("fork")
    barrier, errors = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_committer, args=(str(tmp_path), w, barrier, 6, errors)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    assert errors.empty(), errors.get()
    store = ArtifactStore(tmp_path)
    versions = store.version_dirs("thing", "p0")
    assert len(versions) == 2  # two distinct contents, each published once
    for v in versions:
        assert Manifest.read(v / "manifest.json").verify(v) == []
    assert store.latest("thing", "p0").path in versions
    assert not any((tmp_path / "thing/p0/.staging").iterdir())


@pytest.mark.slow
def test_two_cli_runs_of_the_same_asset_at_once_give_one_version(tmp_path, monkeypatch) -> None:
    env = pipeline_env(tmp_path, "twice")
    monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
    dg.DagsterInstance.from_config(env["DAGSTER_HOME"]).dispose()  # create the sqlite schema once (first use races)
    materialize_renders_for(env, partitions=False)
    cmd = materialize_cmd("renders_3d", {"ops": {"renders_3d": {"config": MICRO_RENDERS}}}, "objects-000000")
    procs = [subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    store = ArtifactStore(env["VFUSION3D_ARTIFACT_ROOT"])
    (version,) = store.version_dirs("renders_3d", "objects-000000")
    assert store.latest("renders_3d", "objects-000000").path == version
    assert Manifest.read(version / "manifest.json").verify(version) == []
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        runs = [r for r in instance.get_runs() if r.tags.get("dagster/partition") == "objects-000000"]
        assert len(runs) == 2 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        checks = [e for r in runs
                  for e in instance.all_logs(r.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)]
        assert len(checks) == 2 and all(e.dagster_event.event_specific_data.passed for e in checks)


def _step_window(instance: dg.DagsterInstance, run_id: str, step: str) -> tuple[float, float]:
    """(STEP_START, STEP_SUCCESS) timestamps of one step of a run."""
    events = {e.dagster_event.event_type: e.timestamp for e in instance.all_logs(run_id)
              if e.dagster_event is not None and e.dagster_event.step_key == step}
    return events[dg.DagsterEventType.STEP_START], events[dg.DagsterEventType.STEP_SUCCESS]


@pytest.mark.slow
def test_two_runs_of_a_gpu_pool_asset_never_hold_the_pool_at_once(tmp_path, monkeypatch) -> None:
    """dagster.yaml limits the `gpu` pool to one slot. The test holds that slot itself until both CLI runs say
    they are blocked on it (explicit events in their logs, no step counts or sleeps to race), then frees it: one
    run trains while the other waits, their training steps never overlap and no more than one slot is ever
    claimed."""
    env = pipeline_env(tmp_path, "pool")
    monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
    materialize_renders_for(env)
    logs = [tmp_path / "first.log", tmp_path / "second.log"]  # files, not pipes: nobody reads while they run

    def start(log: Path) -> subprocess.Popen:
        cmd = materialize_cmd("lrm_3d_only", {"ops": {"lrm_3d_only": {"config": {**LRM_MICRO, "steps": 8}}}})
        with log.open("w") as out:
            return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)

    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        storage = instance.event_log_storage
        assert storage.initialize_concurrency_limit_to_default("gpu")  # dagster.yaml's default_limit: 1
        assert storage.get_concurrency_info("gpu").slot_count == 1
        held = storage.claim_concurrency_slot("gpu", "test-holds-the-slot", "hold")
        assert held.is_claimed, held
        procs = [start(log) for log in logs]
        deadline = time.time() + 600
        while not all("blocked by limit for pool gpu" in log.read_text() for log in logs):
            assert all(p.poll() is None for p in procs) and time.time() < deadline, logs[0].read_text()[-3000:]
            time.sleep(0.2)
        assert [s.run_id for s in storage.get_concurrency_info("gpu").claimed_slots] == ["test-holds-the-slot"]
        storage.free_concurrency_slot_for_step("test-holds-the-slot", "hold")
        most_claimed = 0
        while any(p.poll() is None for p in procs) and time.time() < deadline:
            most_claimed = max(most_claimed, len(storage.get_concurrency_info("gpu").claimed_slots))
            time.sleep(0.2)
        for p in procs:
            p.wait(timeout=60)
        outputs = [log.read_text() for log in logs]
        assert [p.returncode for p in procs] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
        runs = [r for r in instance.get_runs() if r.asset_selection and dg.AssetKey("lrm_3d_only") in r.asset_selection]
        assert len(runs) == 2 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        (a_start, a_end), (b_start, b_end) = sorted(_step_window(instance, r.run_id, "lrm_3d_only") for r in runs)
        assert a_end <= b_start, f"training steps overlapped: [{a_start}, {a_end}] and [{b_start}, {b_end}]"
        assert most_claimed <= 1
        assert not storage.get_concurrency_info("gpu").claimed_slots
    store = ArtifactStore(env["VFUSION3D_ARTIFACT_ROOT"])
    latest = store.latest("lrm_3d_only")
    assert latest is not None and latest.manifest.verify(latest.path) == []
