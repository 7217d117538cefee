"""Concurrent materializations of the same asset/partition: whole versions one after the other, never an
interleaving; identical content gives one version; the `gpu` pool is never exceeded."""

import multiprocessing as mp
import subprocess

import dagster as dg
import pytest
from pipeline_utils import MICRO_RENDERS, REPO, materialize_cmd, pipeline_env

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
    cmd = materialize_cmd("renders_3d", {"ops": {"renders_3d": {"config": MICRO_RENDERS}}})
    procs = [subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    store = ArtifactStore(env["VFUSION3D_ARTIFACT_ROOT"])
    (version,) = store.version_dirs("renders_3d")
    assert store.latest("renders_3d").path == version and Manifest.read(version / "manifest.json").verify(version) == []
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        runs = instance.get_runs()
        assert len(runs) == 2 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        checks = [e for r in runs
                  for e in instance.all_logs(r.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)]
        assert len(checks) == 2 and all(e.dagster_event.event_specific_data.passed for e in checks)
