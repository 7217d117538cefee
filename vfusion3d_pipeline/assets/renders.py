"""`renders_3d`: source 3D objects rendered into train / held-out 16-view orbit shards.

(No `from __future__ import annotations` in Dagster modules: Dagster resolves config and resource
annotations at decoration time.)
"""


from dataclasses import asdict

import dagster as dg

from vfusion3d_core.data import Manifest, file_entries
from vfusion3d_core.render.dataset import CODE_VERSION, RenderDatasetConfig, render_dataset
from vfusion3d_pipeline.lineage import image_markdown, materialize_result
from vfusion3d_pipeline.resources import ArtifactStoreResource, MLflowResource, PresetResource

ASSET = "renders_3d"


class Renders3DConfig(dg.Config):
    """Unset fields take the preset's value (tiny: 64 + 16 objects, 16 views at 64x64)."""

    source: str = "procedural"  # procedural | folder
    folder: str | None = None
    captions_csv: str | None = None
    num_objects: int | None = None
    num_heldout: int | None = None
    resolution: int | None = None
    num_views: int | None = None
    elevation_min_deg: float | None = None
    elevation_max_deg: float | None = None
    seed: int = 0
    samples_per_shard: int | None = None

    def to_core(self, preset: str) -> RenderDatasetConfig:
        overrides = {k: v for k, v in self.model_dump().items() if v is not None}
        try:
            return RenderDatasetConfig.preset(preset, **overrides)
        except (TypeError, ValueError) as exc:
            raise dg.Failure(f"invalid renders_3d config: {exc}") from exc


@dg.asset(
    name=ASSET,
    group_name="renders",
    kinds={"pytorch", "opengl", "webdataset"},
    code_version=CODE_VERSION,
    description="3D objects (procedural world or a mesh folder) rendered as 16-view orbits with cameras, "
                "split into train and held-out WebDataset shards, plus objects.csv and a contact sheet.",
)
def renders_3d(context: dg.AssetExecutionContext, config: Renders3DConfig, artifacts: ArtifactStoreResource,
               preset: PresetResource, mlflow: MLflowResource) -> dg.MaterializeResult:
    cfg = config.to_core(preset.validated())
    store = artifacts.store()
    removed = store.clean_staging(ASSET)
    if removed:
        context.log.info(f"removed {removed} staging dir(s) left by interrupted runs")
    context.log.info(f"rendering {cfg.source} objects: {cfg.num_objects} train + {cfg.num_heldout} held-out, "
                     f"{cfg.num_views} views at {cfg.resolution}px")
    step = {"next": 0.0}

    def progress(done: int, total: int) -> None:
        if done / total >= step["next"] or done == total:
            context.log.info(f"rendered {done}/{total} objects")
            step["next"] += 0.1

    with mlflow.run_for(context) as run, store.staging(ASSET) as staging:
        run.log_params(asdict(cfg))
        result = render_dataset(cfg, staging, progress)
        if result.counts.get("train_objects", 0) == 0:
            raise dg.Failure("no usable training objects", metadata={"skipped": [vars(s) for s in result.skipped]})
        manifest = Manifest(ASSET, file_entries(staging, result.files), result.counts, asdict(cfg),
                            inputs={}, code_version=CODE_VERSION, run_id=context.run.run_id)
        version = store.commit(staging, manifest, ASSET)
        run.log_metrics({f"count_{k}": v for k, v in result.counts.items()})
        run.log_output(ASSET, version)
    for s in result.skipped:
        context.log.warning(f"skipped {s.path}: {s.reason}")
    extra = {
        "skipped_files": dg.MetadataValue.json([vars(s) for s in result.skipped]),
        "objects_csv": dg.MetadataValue.path(str(version.path / "objects.csv")),
    }
    if (version.path / "preview.png").is_file():
        extra["preview"] = image_markdown(version.path / "preview.png", "first view of the first objects")
    context.log.info(f"committed {ASSET} version {version.path.name} ({result.counts['objects']} objects)")
    extra["mlflow_run_id"] = run.run_id
    return materialize_result(version, extra)
