import multiprocessing
import os

import mlflow

from vfusion3d_pipeline.tracking import mlflow_run


def _log_one(uri: str, index: int) -> None:
    with mlflow_run(uri, "concurrent", f"run{index}", {"index": str(index)}) as run:
        run.log_metrics({"value": float(index)})


def test_concurrent_first_use_of_a_sqlite_store(tmp_path) -> None:
    """Steps of one multiprocess run create the store at once; the migration must not race."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_log_one, args=(uri, i)) for i in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    runs = mlflow.MlflowClient(uri).search_runs(
        [mlflow.MlflowClient(uri).get_experiment_by_name("concurrent").experiment_id])
    assert sorted(r.data.metrics["value"] for r in runs) == [0.0, 1.0, 2.0]
    assert all(r.info.status == "FINISHED" for r in runs)


def test_a_run_leaves_the_environment_of_this_process_alone(tmp_path, monkeypatch) -> None:
    """mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI; a materialization in this process must not redirect
    later default_resources() or child processes (a CLI run started by a test, a Pipes step) to its store."""
    from vfusion3d_pipeline.resources import default_resources

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("VFUSION3D_ARTIFACT_ROOT", str(tmp_path / "b"))
    with mlflow_run(f"sqlite:///{tmp_path}/a.db", "leak", "run", {}) as run:
        run.log_metrics({"value": 1.0})
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert default_resources()["mlflow"].uri() == f"sqlite:///{tmp_path / 'b'}/mlflow.db"

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/user.db")  # a user's setting is kept
    with mlflow_run(f"sqlite:///{tmp_path}/c.db", "leak", "run", {}):
        pass
    assert default_resources()["mlflow"].uri() == f"sqlite:///{tmp_path}/user.db"


def _log_same_dataset(uri: str, root: str, index: int, barrier) -> None:
    from vfusion3d_core.data import ArtifactStore

    version = ArtifactStore(root).latest("thing")
    for round_ in range(4):
        with mlflow_run(uri, "datasets", f"run{index}-{round_}", {}) as run:
            barrier.wait()  # every process logs the same dataset digest at the same moment
            run.log_input("thing", version)
            run.log_output("thing", version)


def test_runs_logging_one_dataset_at_once_all_succeed(tmp_path) -> None:
    """MLflow's SQL store looks a dataset up, then inserts it: simultaneous runs logging the same digest race to a
    unique-constraint error (seen with two CLI materializations of one asset); every run must still log it."""
    from vfusion3d_core.data import ArtifactStore, Manifest, file_entries

    store = ArtifactStore(tmp_path / "artifacts")
    with store.staging("thing") as d:
        (d / "a.txt").write_text("a")
        store.commit(d, Manifest("thing", file_entries(d, ["a.txt"]), {}, {}), "thing")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    _log_one(uri, 99)  # the store exists before the race
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_log_same_dataset, args=(uri, str(tmp_path / "artifacts"), i, barrier))
             for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("datasets").experiment_id])
    assert len(runs) == 16 and all(r.data.tags["input.thing"] == r.data.tags["output.digest"] for r in runs)
    assert all(r.inputs.dataset_inputs for r in runs)


def test_asset_runs_nest_under_one_mlflow_run_per_dagster_run(tmp_path) -> None:
    """Every materialization of one Dagster run is a child of that run's MLflow run; another Dagster run gets its
    own parent."""
    import dagster as dg

    from vfusion3d_pipeline.resources import MLflowResource
    from vfusion3d_pipeline.tracking import DAGSTER_RUN_TAG

    @dg.asset
    def first(mlflow: MLflowResource) -> None:
        with mlflow.run_for(dg.AssetExecutionContext.get()) as run:
            run.log_metrics({"x": 1.0})

    @dg.asset(deps=[first])
    def second(mlflow: MLflowResource) -> None:
        with mlflow.run_for(dg.AssetExecutionContext.get()) as run:
            run.log_metrics({"x": 2.0})

    resources = {"mlflow": MLflowResource(artifact_root=str(tmp_path))}
    runs = [dg.materialize([first, second], resources=resources) for _ in range(2)]
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("vfusion3d").experiment_id
    for result in runs:
        (parent,) = client.search_runs([experiment], f"tags.`{DAGSTER_RUN_TAG}` = '{result.run_id}'")
        assert parent.info.status == "FINISHED" and parent.data.tags["dagster.job"] == result.job_def.name
        children = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
        assert sorted(r.data.tags["dagster.asset_key"] for r in children) == ["first", "second"]
        assert all(r.data.tags["dagster.run_id"] == result.run_id for r in children)
