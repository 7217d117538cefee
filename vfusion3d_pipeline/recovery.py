"""Recover from killed runs: no Dagster run stuck in STARTED, no pool slot held by a dead process, no
MLflow run left RUNNING.

The daemon's run monitoring only watches runs its launcher started. A run from the CLI (`dagster asset
materialize`, `make tiny`) that is SIGKILLed stays STARTED forever and keeps its `gpu` pool slot, so the next
run of a pooled asset would wait for ever. ``recover_dead_runs`` finds STARTED runs whose run process (the
pid of their RUN_START event, on this machine) is gone, reports them failed and frees their slots; MLflow
runs still RUNNING for a Dagster run that has ended are marked KILLED. Runs the daemon launched (the whole
graph's backfills, automation, the UI) are covered by the instance's run monitoring instead (dagster.yaml). It runs
before each asset's MLflow run, from the `recover_dead_runs` sensor (daemon), and as

    python -m vfusion3d_pipeline.recovery
"""

import os
import socket

import dagster as dg

from vfusion3d_core.data.files import pid_alive
from vfusion3d_pipeline.resources import default_resources

HOST_TAG = "vfusion3d/host"
ENDED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}




def run_process_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The pid of the process that started the run (its RUN_START event), if recorded."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_START, limit=1).records
    event = records[0].event_log_entry.dagster_event if records else None
    return event.pid if event is not None else None


def _local(instance: dg.DagsterInstance, run: dg.DagsterRun) -> bool:
    """Whether the run's process ran on this machine (pids are only meaningful there)."""
    host = run.tags.get(HOST_TAG)
    if host is not None:
        return host == socket.gethostname()
    return "sqlite" in type(instance.run_storage).__name__.lower()  # a local instance: same machine


def recover_dead_runs(instance: dg.DagsterInstance, tracking_uri: str | None = None,
                      current_run_id: str | None = None) -> dict[str, list[str]]:
    """Fail STARTED runs whose process died and free their pool slots; mark MLflow runs of ended Dagster
    runs KILLED. Returns {"dagster": [run ids failed], "mlflow": [run ids killed]}."""
    failed = []
    for run in instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
        if run.run_id == current_run_id or not _local(instance, run):
            continue
        pid = run_process_pid(instance, run.run_id)
        if pid is None or pid == os.getpid() or pid_alive(pid):
            continue
        instance.report_run_failed(run, f"run process {pid} is gone (killed); marked failed by vfusion3d recovery")
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        failed.append(run.run_id)
    killed = _kill_orphan_mlflow_runs(instance, tracking_uri) if tracking_uri else []
    return {"dagster": failed, "mlflow": killed}


def recover_at_run_start(context: dg.AssetExecutionContext, tracking_uri: str) -> None:
    """Where a materialization starts: tag the run with this host (so recovery elsewhere leaves it alone) and
    recover the runs killed before it (their pool slots, their MLflow runs)."""
    context.instance.add_run_tags(context.run.run_id, {HOST_TAG: socket.gethostname()})
    recovered = recover_dead_runs(context.instance, tracking_uri, current_run_id=context.run.run_id)
    if any(recovered.values()):
        context.log.warning(f"recovered from killed runs: {recovered}")


def _kill_orphan_mlflow_runs(instance: dg.DagsterInstance, tracking_uri: str) -> list[str]:
    import mlflow

    from vfusion3d_pipeline.tracking import store_lock

    with store_lock(tracking_uri):  # the first use of a sqlite store migrates its schema: one process at a time
        client = mlflow.MlflowClient(tracking_uri)
        experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    killed = []
    for run in client.search_runs(experiments, filter_string="attributes.status = 'RUNNING'", max_results=1000):
        dagster_run_id = run.data.tags.get("dagster.run_id")
        if not dagster_run_id:
            continue
        dagster_run = instance.get_run_by_id(dagster_run_id)
        if dagster_run is None or dagster_run.status in ENDED:
            client.set_tag(run.info.run_id, "vfusion3d.recovery", f"dagster run {dagster_run_id} ended without "
                                                                   "ending this run (process killed)")
            client.set_terminated(run.info.run_id, status="KILLED")
            killed.append(run.info.run_id)
    return killed


@dg.sensor(name="recover_dead_runs", minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Fails runs whose process was killed outside the daemon's run monitoring (CLI runs), frees "
                       "their gpu pool slots and ends their orphan MLflow runs.")
def recover_dead_runs_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    result = recover_dead_runs(context.instance, default_resources()["mlflow"].uri())
    return dg.SkipReason(f"recovered: {result}")


def main() -> None:
    with dg.DagsterInstance.get() as instance:
        print(recover_dead_runs(instance, default_resources()["mlflow"].uri()))


if __name__ == "__main__":
    main()
