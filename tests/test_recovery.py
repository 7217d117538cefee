"""A CLI materialization of a `gpu`-pool asset SIGKILLed mid-training leaves a Dagster run STARTED holding the
pool slot and an MLflow run RUNNING; recovery fails the run, frees the slot and ends the MLflow run, and the
next materialization of the pooled asset runs (instead of waiting for the dead run's slot for ever)."""

import json
import os
import signal
import subprocess
import time

import dagster as dg
import mlflow
import pytest
from pipeline_utils import LRM_MICRO, REPO, materialize_cmd, materialize_renders_for, pipeline_env, run_materialize

from vfusion3d_pipeline.recovery import recover_dead_runs


def _mlflow_runs(uri: str, status: str) -> list:
    client = mlflow.MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, filter_string=f"attributes.status = '{status}'") if experiments else []


@pytest.mark.slow
def test_killed_cli_run_is_recovered_and_its_pool_slot_freed(tmp_path, monkeypatch) -> None:
    env = pipeline_env(tmp_path, "kill")
    monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
    uri = f"sqlite:///{env['VFUSION3D_ARTIFACT_ROOT']}/mlflow.db"
    materialize_renders_for(env)
    long = {**LRM_MICRO, "steps": 400}
    proc = subprocess.Popen(materialize_cmd("lrm_3d_only", {"ops": {"lrm_3d_only": {"config": long}}}), cwd=REPO,
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 600  # an upper bound: seconds on an idle machine, minutes on a loaded one
        while not (running := [r for r in _mlflow_runs(uri, "RUNNING")
                               if r.data.tags.get("dagster.asset_key") == "lrm_3d_only"]):
            assert proc.poll() is None and time.time() < deadline, "training never started"
            time.sleep(0.5)
        # inside the training loop: the run has logged its first training metrics (every log_every steps)
        while not mlflow.MlflowClient(uri).get_metric_history(running[0].info.run_id, "loss"):
            assert proc.poll() is None and time.time() < deadline, "training never logged a step"
            time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        (stuck,) = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
        assert instance.event_log_storage.get_concurrency_info("gpu").claimed_slots
        (orphan,) = _mlflow_runs(uri, "RUNNING")
        recovered = recover_dead_runs(instance, uri)
        assert recovered == {"dagster": [stuck.run_id], "mlflow": [orphan.info.run_id]}
        assert instance.get_run_by_id(stuck.run_id).status == dg.DagsterRunStatus.FAILURE
        assert not instance.event_log_storage.get_concurrency_info("gpu").claimed_slots
        assert mlflow.MlflowClient(uri).get_run(orphan.info.run_id).info.status == "KILLED"
        assert recover_dead_runs(instance, uri) == {"dagster": [], "mlflow": []}  # idempotent

    # the pooled asset materializes again (the CLI would otherwise wait for the dead run's slot)
    run_materialize(env, "lrm_3d_only", {"ops": {"lrm_3d_only": {"config": LRM_MICRO}}}, timeout=240)
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        statuses = sorted(r.status.value for r in instance.get_runs()
                          if r.asset_selection == {dg.AssetKey("lrm_3d_only")})
        assert statuses == ["FAILURE", "SUCCESS"], statuses  # the killed run, then the re-run
    assert json.loads((tmp_path / "kill_artifacts/lrm_3d_only/LATEST.json").read_text())["digest"]
