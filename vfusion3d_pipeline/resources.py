"""Dagster resources: where artifacts live and which scale preset runs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from vfusion3d_core.data import ArtifactStore
from vfusion3d_core.data.audit_cli import default_tracking_uri
from vfusion3d_pipeline.tracking import MLflowRun, mlflow_run

DEFAULT_ARTIFACT_ROOT = "artifacts"
PRESETS = ("tiny", "small", "paper")


class ArtifactStoreResource(dg.ConfigurableResource):
    """The artifact root every asset writes its immutable versions under (a local directory)."""

    root: str = DEFAULT_ARTIFACT_ROOT

    def store(self) -> ArtifactStore:
        return ArtifactStore(os.path.abspath(self.root))


class PresetResource(dg.ConfigurableResource):
    """Scale preset (tiny | small | paper) that supplies every default an asset config leaves unset."""

    name: str = "tiny"

    def validated(self) -> str:
        if self.name not in PRESETS:
            raise dg.Failure(f"unknown preset {self.name!r}; choose one of {PRESETS}")
        return self.name


class MLflowResource(dg.ConfigurableResource):
    """MLflow tracking: a sqlite store under the artifact root unless ``tracking_uri`` is set."""

    tracking_uri: str | None = None
    experiment: str = "vfusion3d"
    artifact_root: str = DEFAULT_ARTIFACT_ROOT

    def uri(self) -> str:
        return self.tracking_uri or default_tracking_uri(self.artifact_root)

    @contextmanager
    def run_for(self, context: dg.AssetExecutionContext, run_name: str | None = None) -> Iterator[MLflowRun]:
        """An MLflow run tagged with the Dagster run id, asset key(s) and partition key."""
        keys = ",".join(k.to_user_string() for k in context.selected_asset_keys)
        tags = {"dagster.run_id": context.run.run_id, "dagster.asset_key": keys,
                "dagster.job": context.run.job_name}
        if context.has_partition_key:
            tags["dagster.partition_key"] = context.partition_key
        location = "file://" + os.path.abspath(os.path.join(self.artifact_root, "mlflow-artifacts"))
        with mlflow_run(self.uri(), self.experiment, run_name or keys, tags, location) as run:
            context.log.info(f"MLflow run {run.run_id} ({self.uri()})")
            yield run


def default_resources() -> dict[str, dg.ConfigurableResource]:
    """Resources from the environment: VFUSION3D_ARTIFACT_ROOT (default ./artifacts), VFUSION3D_PRESET,
    MLFLOW_TRACKING_URI (default: sqlite under the artifact root)."""
    root = os.environ.get("VFUSION3D_ARTIFACT_ROOT", DEFAULT_ARTIFACT_ROOT)
    return {
        "artifacts": ArtifactStoreResource(root=root),
        "preset": PresetResource(name=os.environ.get("VFUSION3D_PRESET", "tiny")),
        "mlflow": MLflowResource(tracking_uri=os.environ.get("MLFLOW_TRACKING_URI"), artifact_root=root),
    }
