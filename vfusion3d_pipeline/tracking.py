"""MLflow lineage glue: one MLflow run per asset materialization, tagged with its Dagster identity and nested
under one MLflow run per Dagster run (``dagster_parent_run``).

Every input artifact is logged as an MLflow dataset whose digest is the input's manifest digest, so MLflow alone
can answer "which data produced this". Outputs: an LRM checkpoint is logged as an MLflow 3 LoggedModel (a pyfunc
model over the ``LRM.save_pretrained`` folder, ``vfusion3d_core.lrm.pyfunc``), which MLflow records as the run's
output, and registered as a model version; MLflow's run outputs hold LoggedModels only (``mlflow.log_outputs``
takes no datasets), so any other output artifact is logged as a dataset input with context "output" plus
``output.digest`` / ``output.path`` tags. Tracking defaults to a sqlite store under the artifact root; nothing to
start.
"""

from __future__ import annotations

import fcntl
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vfusion3d_core.data import ArtifactVersion
from vfusion3d_core.redact import redact


def is_remote(version: ArtifactVersion) -> bool:
    return bool(getattr(version, "url", ""))


def location(version: ArtifactVersion) -> str:
    """Where a committed version lives: its s3:// URL on an S3 artifact root, else its local directory."""
    return version.url if is_remote(version) else str(version.path)


def _dataset(name: str, version: ArtifactVersion):
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        uri = location(version) if is_remote(version) else Path(version.path).resolve().as_uri()
        source = resolve_dataset_source(uri)
    return MetaDataset(source, name=name, digest=version.digest[:32])


class MLflowRun:
    """The active run of one materialization: log params, metrics, inputs, outputs."""

    def __init__(self, mlflow_module: Any, run: Any) -> None:
        self._mlflow = mlflow_module
        self.run = run

    @property
    def run_id(self) -> str:
        return self.run.info.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        """Params as strings, nested dicts flattened to ``parent.key`` (e.g. ``compute.resolved_device``);
        credential-like keys, URL passwords and env secret values become ``***``."""
        self._mlflow.log_params({k: str(v)[:500] for k, v in flat_params(redact(params)).items()})

    def log_metrics(self, metrics: dict[str, float], step: int | None = None, model_id: str | None = None) -> None:
        """``model_id``: also link the metrics to that LoggedModel (shown on its page in the Models tab)."""
        self._mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step, model_id=model_id)

    def metric_logger(self) -> Callable[[dict[str, float], int], None]:
        """A callback for core training loops: ``log(metrics, step)``."""
        return lambda metrics, step: self.log_metrics(metrics, step)

    def log_input(self, name: str, version: ArtifactVersion, context: str = "training") -> None:
        self._log_dataset(_dataset(name, version), context)
        self._mlflow.set_tag(f"input.{name}", version.digest)

    def log_output(self, name: str, version: ArtifactVersion) -> None:
        self._log_dataset(_dataset(name, version), "output")
        self._mlflow.set_tags({"output.digest": version.digest, "output.path": location(version)})

    def _log_dataset(self, dataset: Any, context: str, attempts: int = 3) -> None:
        """``mlflow.log_input``, retried when another process inserted the same dataset row at the same moment:
        MLflow's SQL store looks a dataset up, then inserts it, so two runs logging one digest at once race to a
        unique-constraint error; the retry finds the row the other run wrote."""
        for attempt in range(attempts):
            try:
                self._mlflow.log_input(dataset, context=context)
                return
            except Exception as exc:
                if attempt == attempts - 1 or not _is_unique_violation(exc):
                    raise

    def log_lrm_model(self, model_dir: str | Path, name: str = "model") -> str:
        """Log the LRM folder ``model_dir`` (written by ``LRM.save_pretrained``) as a LoggedModel of this run: a
        pyfunc model whose ``load_model`` gives back the LRM (``vfusion3d_core.lrm.pyfunc``). MLflow records it as
        the run's output. Returns its model id."""
        from vfusion3d_core.lrm.pyfunc import log_lrm_model

        with warnings.catch_warnings():  # cloudpickle / type-hint notices about the wrapper class
            warnings.simplefilter("ignore")
            return log_lrm_model(model_dir, name=name).model_id

    def register_model(self, name: str, model_id: str, version: ArtifactVersion) -> str:
        """Register the LoggedModel ``model_id`` as a new version of model ``name``; the version's tags (and the
        LoggedModel's) point back at the committed artifact (path + manifest digest), which is what `vfusion3d
        audit` follows. The newest version is ``models:/NAME/latest`` (MLflow reserves the alias ``latest``).
        Returns ``models:/NAME/VERSION``."""
        client = self._mlflow.MlflowClient()
        with store_lock(self._mlflow.get_tracking_uri()):
            if not _registered(client, name):
                client.create_registered_model(name, description="vfusion3d LRM checkpoints (Dagster asset "
                                                                  f"{name}); audit with `vfusion3d audit`")
        tags = {"vfusion3d.artifact_path": location(version), "vfusion3d.digest": version.digest,
                "vfusion3d.asset": version.manifest.asset, "dagster.run_id": version.manifest.run_id or ""}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mv = self._mlflow.register_model(f"models:/{model_id}", name, tags=tags)
        self._mlflow.set_logged_model_tags(model_id, {k: v for k, v in tags.items() if k.startswith("vfusion3d.")})
        self._mlflow.set_tag("registered_model", f"models:/{name}/{mv.version}")
        return f"models:/{name}/{mv.version}"

    def log_model_input(self, model_id: str) -> None:
        """Record the LoggedModel ``model_id`` as an input of this run (e.g. a checkpoint an evaluation scored)."""
        from mlflow.entities import LoggedModelInput

        self._mlflow.log_input(model=LoggedModelInput(model_id))

    def set_alias(self, name: str, version: str | int, alias: str, rivals: tuple[str, ...] = ()) -> str:
        """Point ``models:/NAME@ALIAS`` at ``version`` and remove ``alias`` from the registered models ``rivals``
        (so one of them holds it); tags this run ``alias.ALIAS``. Returns ``models:/NAME/VERSION``."""
        client = self._mlflow.MlflowClient()
        with store_lock(self._mlflow.get_tracking_uri()):
            client.set_registered_model_alias(name, alias, str(version))
            for other in rivals:
                if other != name and _registered(client, other):
                    client.delete_registered_model_alias(other, alias)  # a no-op when it has no such alias
        self._mlflow.set_tag(f"alias.{alias}", f"models:/{name}/{version}")
        return f"models:/{name}/{version}"

    def registered_version(self, name: str, digest: str) -> Any | None:
        """The newest version of registered model ``name`` made from the committed artifact ``digest`` (its
        ``vfusion3d.digest`` tag), or None when that artifact was never registered."""
        client = self._mlflow.MlflowClient()
        if not _registered(client, name):
            return None
        found = client.search_model_versions(f"name = '{name}' and tags.`vfusion3d.digest` = '{digest}'")
        return max(found, key=lambda mv: int(mv.version), default=None)

    def log_child(self, name: str, params: dict[str, Any], metrics: dict[str, float]) -> str:
        """A nested run under this one (e.g. one arm and seed of an experiment) with ``params`` and ``metrics``;
        returns its run id."""
        with self._mlflow.start_run(run_name=name, nested=True, experiment_id=self.run.info.experiment_id,
                                    tags={"mlflow.parentRunId": self.run_id}) as child:
            self.log_params(params)  # the fluent API logs to the active run: the child, inside this block
            self.log_metrics(metrics)
            return child.info.run_id

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Log a file, or a directory's contents, under ``artifact_path``."""
        if Path(path).is_dir():
            self._mlflow.log_artifacts(str(path), artifact_path)
        else:
            self._mlflow.log_artifact(str(path), artifact_path)


def model_id_of(model_version: Any) -> str | None:
    """The LoggedModel id behind a model version (its ``models:/<model_id>`` source), if it has one."""
    source = getattr(model_version, "source", "") or ""
    return getattr(model_version, "model_id", None) or (
        source[len("models:/"):] if source.startswith("models:/m-") else None)


def _registered(client: Any, name: str) -> bool:
    try:
        client.get_registered_model(name)
    except Exception as exc:  # MlflowException RESOURCE_DOES_NOT_EXIST
        if "RESOURCE_DOES_NOT_EXIST" in str(getattr(exc, "error_code", "")) or "not found" in str(exc).lower():
            return False
        raise
    return True


@contextmanager
def store_lock(tracking_uri: str) -> Iterator[None]:
    """An exclusive file lock next to a sqlite tracking store (no-op for other stores)."""
    if not tracking_uri.startswith("sqlite:///"):
        yield
        return
    db = Path(tracking_uri[len("sqlite:///"):])
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_suffix(db.suffix + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def local_artifact_location(tracking_uri: str, artifact_root: str) -> str | None:
    """Where a new experiment keeps its artifacts: ``ROOT/mlflow-artifacts`` for a store this process writes
    itself (sqlite, a database, a local folder), None for a tracking server (http(s), databricks), whose own
    artifact root (or proxied ``mlflow-artifacts:``) then applies."""
    if tracking_uri.lower().startswith(("http://", "https://", "databricks")):
        return None
    return "file://" + os.path.abspath(os.path.join(artifact_root, "mlflow-artifacts"))


DAGSTER_RUN_TAG = "vfusion3d.dagster_run"  # on the MLflow run that stands for one Dagster run


def dagster_parent_run(client: Any, experiment_id: str, dagster_run_id: str, job: str) -> str:
    """The MLflow run standing for one Dagster run, created by its first materialization: each asset's MLflow run
    is nested under it, so MLflow shows a Dagster run (the whole graph's backfill runs, a multi-asset job) as one
    run with a child per asset. It is a grouping record, FINISHED when created (an asset has no end-of-run hook);
    call under ``store_lock`` so parallel steps of one run find the same one."""
    found = client.search_runs([experiment_id], filter_string=f"tags.`{DAGSTER_RUN_TAG}` = '{dagster_run_id}'",
                               max_results=1)
    if found:
        return found[0].info.run_id
    parent = client.create_run(experiment_id, run_name=f"{job} {dagster_run_id[:8]}",
                               tags={DAGSTER_RUN_TAG: dagster_run_id, "dagster.job": job})
    client.set_terminated(parent.info.run_id, status="FINISHED")
    return parent.info.run_id


@contextmanager
def mlflow_run(tracking_uri: str, experiment: str, run_name: str, tags: dict[str, str],
               artifact_location: str | None = None, dagster_run: tuple[str, str] | None = None
               ) -> Iterator[MLflowRun]:
    """Start an MLflow run (creating the experiment if needed); failed blocks end it as FAILED. ``dagster_run``
    (run id, job name): nest it under the Dagster run's MLflow run (``dagster_parent_run``)."""
    import mlflow

    saved = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(tracking_uri)
    # set_tracking_uri also exports MLFLOW_TRACKING_URI; left there, every later default_resources() and
    # child process of this process would log to this run's store instead of its own.
    if saved is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = saved
    with store_lock(tracking_uri):
        # First use of a sqlite store runs schema migrations; two steps of one run (the multiprocess
        # executor) creating it at once collide ("table _alembic_tmp_experiments already exists").
        client = mlflow.MlflowClient(tracking_uri)
        exp = client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp else client.create_experiment(experiment, artifact_location=artifact_location)
        if dagster_run is not None:
            tags = {**tags, "mlflow.parentRunId": dagster_parent_run(client, exp_id, *dagster_run)}
    with mlflow.start_run(experiment_id=exp_id, run_name=run_name, tags=tags) as run:
        yield MLflowRun(mlflow, run)


def flat_params(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one level of ``parent.key`` entries."""
    out: dict[str, Any] = {}
    for k, v in params.items():
        if isinstance(v, dict):
            out.update(flat_params(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _is_unique_violation(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what caused it) is a database unique-constraint violation."""
    while exc is not None:
        text = str(exc)
        if type(exc).__name__ == "IntegrityError" or "UNIQUE constraint failed" in text or "duplicate key" in text:
            return True
        exc = exc.__cause__ or exc.__context__
    return False
