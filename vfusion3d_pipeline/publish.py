"""The one publish path of every asset: an MLflow run and a staging directory, then one commit of the files
written there as an immutable version with its manifest (code version, Dagster run id, input digests), logged to
MLflow as the run's output.

    with publishing(context, store, mlflow, ASSET, CODE_VERSION, partition) as pub:
        ...write files into pub.staging, log to pub.run...
        version = pub.commit(files, counts, config, inputs)
    return materialize_result(version, extra)
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from vfusion3d_core.data import ArtifactStore, ArtifactVersion, Manifest, file_entries
from vfusion3d_pipeline.recovery import recover_at_run_start
from vfusion3d_pipeline.resources import MLflowResource
from vfusion3d_pipeline.tracking import MLflowRun


@dataclass
class Publication:
    """One materialization being published: write into ``staging``, log to ``run``, then ``commit`` once."""

    context: dg.AssetExecutionContext
    store: ArtifactStore
    run: MLflowRun
    staging: Path
    asset: str
    code_version: str
    partition: str | None = None
    version: ArtifactVersion | None = None

    def commit(self, files: list[str], counts: dict, config: dict, inputs: dict[str, str]) -> ArtifactVersion:
        """Publish ``files`` (relative to ``staging``) as the asset's new version and log it as the run's output."""
        if self.version is not None:
            raise RuntimeError(f"{self.asset}: a publication commits once")
        manifest = Manifest(self.asset, file_entries(self.staging, files), counts, config, inputs=inputs,
                            code_version=self.code_version, run_id=self.context.run.run_id)
        self.version = self.store.commit(self.staging, manifest, self.asset, self.partition)
        self.run.log_output(self.asset, self.version)
        return self.version


@contextmanager
def publishing(context: dg.AssetExecutionContext, store: ArtifactStore, mlflow: MLflowResource, asset: str,
               code_version: str, partition: str | None = None) -> Iterator[Publication]:
    """Recover runs killed before this one (``recover_at_run_start``), clean the staging they left, open the
    MLflow run and a fresh staging directory, and yield the publication. The block must ``commit``; when it
    raises, nothing is published and its staging is removed."""
    recover_at_run_start(context, mlflow.uri())
    removed = store.clean_staging(asset, partition)
    if removed:
        context.log.info(f"removed {removed} staging dir(s) left by interrupted runs")
    with mlflow.run_for(context) as run, store.staging(asset, partition) as staging:
        publication = Publication(context, store, run, staging, asset, code_version, partition)
        yield publication
        if publication.version is None:
            raise RuntimeError(f"{asset}: the publishing block ended without a commit")
