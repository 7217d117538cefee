"""The 3D source data: `source_objects` (which objects, their split and partition) and `renders_3d` (each
partition's objects rendered as 16-view orbits into train / held-out shards).

`source_objects` registers one `object_shards` partition per ``objects_per_partition`` objects; `renders_3d`
renders one partition per run, so 100,000 objects render in parallel on many workers, a killed run redoes only
its unfinished partitions, and a partition already rendered for the same rows and settings is not redone.
Downstream assets read every committed, current partition through ``committed_renders``.

(No `from __future__ import annotations` in Dagster modules: Dagster resolves config and resource
annotations at decoration time.)
"""

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import dagster as dg
from pydantic import Field

from vfusion3d_core.code_versions import RENDERS_3D as CODE_VERSION
from vfusion3d_core.data import ArtifactStore, ArtifactVersion
from vfusion3d_core.data.s3_store import shard_locations
from vfusion3d_core.objects.listing import (
    ObjectListingConfig,
    build_listing,
    partition_digest,
    read_listing,
    write_listing,
)
from vfusion3d_pipeline.asset_keys import RENDERS, SOURCE_OBJECTS
from vfusion3d_pipeline.metadata import image_markdown, materialize_result, require_latest
from vfusion3d_pipeline.partitions import object_shards, register_partitions
from vfusion3d_pipeline.publish import publishing
from vfusion3d_pipeline.resources import ArtifactStoreResource, MLflowResource, PresetResource

if TYPE_CHECKING:
    from vfusion3d_core.render.dataset import RenderSettings

SOURCE = SOURCE_OBJECTS
ASSET = RENDERS
LISTING_FILE = "objects.parquet"
LISTING_CODE_VERSION = "source_objects-v1"


class SourceObjectsConfig(dg.Config):
    """Where the 3D objects come from. Unset sizes take the preset's value (tiny: 64 + 16 objects, partitions
    of 40; paper: 100,000 + 1,000, partitions of 1,000)."""

    source: Literal["procedural", "folder", "listing"] = Field(
        "procedural", description="procedural: the seeded procedural world | folder: mesh files | listing: a "
                                  "CSV/Parquet listing of paths or s3:// URIs with captions.")
    folder: str | None = Field(None, description="source=folder: .glb/.gltf/.obj/.ply files (recursive).")
    listing: str | None = Field(None, description="source=listing: CSV/Parquet with path|uri (local or s3://), uid, "
                                                  "caption.")
    captions_csv: str | None = Field(None, description="source=folder: uid,caption rows (default: captions.csv in "
                                                       "the folder).")
    num_objects: int | None = Field(None, description="Training objects (folder/listing: at most this many, 0 = "
                                                      "all; unset: the preset's).")
    num_heldout: int | None = Field(None, description="Held-out objects (unset: the preset's).")
    objects_per_partition: int | None = Field(None, description="Objects per object_shards partition (unset: the "
                                                                "preset's).")
    up_axis: Literal["y", "z"] = Field("y", description="OBJ/PLY files: y (Blender's importer default) or z; glTF "
                                                        "is always Y-up.")
    seed: int = Field(0, description="Seed of the procedural world and of the train/held-out split.")

    def to_core(self, preset: str) -> ObjectListingConfig:
        from vfusion3d_core.render.dataset import listing_preset

        overrides = {k: v for k, v in self.model_dump().items() if v is not None}
        try:
            return listing_preset(preset, **overrides)
        except (TypeError, ValueError) as exc:
            raise dg.Failure(f"invalid source_objects config: {exc}") from exc


class Renders3DConfig(dg.Config):
    """Unset fields take the preset's value (tiny: 16 views at 64x64; paper: 512x512)."""

    resolution: int | None = Field(None, description="Render width = height in pixels (unset: the preset's).")
    num_views: int | None = Field(None, description="Views per orbit (unset: the preset's).")
    elevation_min_deg: float | None = Field(None, description="Lowest camera elevation in degrees (unset: the "
                                                              "preset's).")
    elevation_max_deg: float | None = Field(None, description="Highest camera elevation in degrees (unset: the "
                                                              "preset's).")
    seed: int = Field(0, description="Seed of the per-object orbit elevation.")
    samples_per_shard: int | None = Field(None, description="Objects per WebDataset shard (unset: the preset's).")
    force: bool = Field(False, description="Re-render even when this partition is already rendered for the same rows "
                                           "and settings.")

    def to_core(self, preset: str) -> "RenderSettings":
        from vfusion3d_core.render.dataset import RenderSettings

        overrides = {k: v for k, v in self.model_dump().items() if v is not None and k != "force"}
        try:
            return RenderSettings.preset(preset, **overrides)
        except (TypeError, ValueError) as exc:
            raise dg.Failure(f"invalid renders_3d config: {exc}") from exc


@dg.asset(
    name=SOURCE,
    group_name="renders",
    kinds={"parquet"},
    code_version=LISTING_CODE_VERSION,
    description="The 3D source objects (procedural world, a mesh folder, or a CSV/Parquet listing of paths or "
                "s3:// URIs with captions): uid, location, caption, train/held-out split and object-shard "
                "partition. Registers one object_shards partition per objects_per_partition objects; growing the "
                "source appends partitions, published ones never change.",
)
def source_objects(context: dg.AssetExecutionContext, config: SourceObjectsConfig, artifacts: ArtifactStoreResource,
                   preset: PresetResource, mlflow: MLflowResource) -> dg.MaterializeResult:
    cfg = config.to_core(preset.validated())
    store = artifacts.store()
    previous = store.latest(SOURCE)
    grow = previous is not None and previous.manifest.config.get("split_settings") == cfg.split_settings()
    try:
        listing = build_listing(cfg, read_listing(previous.path / LISTING_FILE) if grow else None)
    except (FileNotFoundError, ValueError) as exc:
        raise dg.Failure(f"bad object source: {exc}") from exc
    if not any(r.split == "train" for r in listing.rows):
        raise dg.Failure("no usable training objects in the source",
                         metadata={"skipped": dg.MetadataValue.json([vars(s) for s in listing.skipped[:100]])})
    with publishing(context, store, mlflow, SOURCE, LISTING_CODE_VERSION) as pub:
        write_listing(listing, pub.staging / LISTING_FILE)
        pub.run.log_params(asdict(cfg))
        run_config = {**asdict(cfg), "split_settings": cfg.split_settings()}
        counts = {k: v for k, v in listing.counts().items() if k != "kept_from_previous"}
        version = pub.commit([LISTING_FILE], counts, run_config, inputs={})
        pub.run.log_metrics({f"count_{k}": v for k, v in listing.counts().items()})
    added = register_partitions(context.instance, object_shards, listing.partitions)
    for s in listing.skipped:
        context.log.warning(f"not listed {s.path}: {s.reason}")
    context.log.info(f"committed {SOURCE} version {version.path.name}: {len(listing.rows)} objects in "
                     f"{len(listing.partitions)} partition(s) ({listing.grown_from} kept from the previous listing); "
                     f"registered {len(added)} new partition(s)")
    return materialize_result(version, {
        "registered_partitions": dg.MetadataValue.json(added),
        "skipped_sources": dg.MetadataValue.json([vars(s) for s in listing.skipped[:100]]),
        "kept_from_previous": listing.grown_from,
        "mlflow_run_id": pub.run.run_id,
    })


def current_listing(store: ArtifactStore) -> tuple[ArtifactVersion, list]:
    """The latest source_objects version and its rows (a Failure naming the asset when there is none)."""
    version = require_latest(store, SOURCE)
    return version, read_listing(version.path / LISTING_FILE)


@dg.asset(
    name=ASSET,
    group_name="renders",
    deps=[SOURCE],
    partitions_def=object_shards,
    kinds={"pytorch", "opengl", "webdataset"},
    code_version=CODE_VERSION,
    description="One object shard of source_objects rendered as 16-view orbits with cameras (textured, upright, "
                "the same lights for every object), split into train and held-out WebDataset shards, plus "
                "objects.csv and a contact sheet. A partition already rendered for the same rows and settings "
                "is kept (config force=true re-renders).",
)
def renders_3d(context: dg.AssetExecutionContext, config: Renders3DConfig, artifacts: ArtifactStoreResource,
               preset: PresetResource, mlflow: MLflowResource) -> dg.MaterializeResult:
    from vfusion3d_core.render.dataset import render_objects

    key = context.partition_key
    settings = config.to_core(preset.validated())
    store = artifacts.store()
    listing_version, rows = current_listing(store)
    rows = [r for r in rows if r.partition == key]
    if not rows:
        raise dg.Failure(f"{ASSET}[{key}]: the current {SOURCE} lists no object in this partition "
                         f"(partitions: materialize {SOURCE} again after changing its source)")
    lcfg = listing_version.manifest.config
    run_config = {**asdict(settings), "partition": key, "rows_digest": partition_digest(rows),
                  "world_seed": lcfg["seed"], "up_axis": lcfg["up_axis"]}
    store.clean_staging(ASSET, key)  # also when the partition is kept below
    previous = store.latest(ASSET, key)
    if (previous is not None and not config.force
            and {k: v for k, v in previous.manifest.config.items() if k != "skipped"} == run_config
            and previous.manifest.code_version == CODE_VERSION and not previous.manifest.verify(previous.path)):
        context.log.info(f"{ASSET}[{key}] is already rendered for these {len(rows)} objects and settings "
                         f"(version {previous.path.name}); kept")
        return _result(previous, previous.manifest.config.get("skipped", []), reused=True)
    context.log.info(f"rendering {ASSET}[{key}]: {len(rows)} objects, {settings.num_views} views at "
                     f"{settings.resolution}px")
    step = {"next": 0.0}

    def progress(done: int, total: int) -> None:
        if done / total >= step["next"] or done == total:
            context.log.info(f"[{key}] rendered {done}/{total} objects")
            step["next"] += 0.1

    with publishing(context, store, mlflow, ASSET, CODE_VERSION, key) as pub:
        pub.run.log_params(run_config)
        pub.run.log_input(SOURCE, listing_version, context="source")
        result = render_objects(rows, settings, pub.staging, progress, world_seed=lcfg["seed"],
                                up_axis=lcfg["up_axis"])
        skipped = [vars(s) for s in result.skipped]
        version = pub.commit(result.files, result.counts, {**run_config, "skipped": skipped},
                             inputs={SOURCE: listing_version.digest})
        pub.run.log_metrics({f"count_{k}": v for k, v in result.counts.items()})
    for s in result.skipped:
        context.log.warning(f"skipped {s.path}: {s.reason}")
    context.log.info(f"committed {ASSET}[{key}] version {version.path.name} ({result.counts['objects']} objects)")
    return _result(version, skipped, reused=False, extra={"mlflow_run_id": pub.run.run_id})


def _result(version: ArtifactVersion, skipped: list[dict], reused: bool, extra: dict | None = None
            ) -> dg.MaterializeResult:
    meta = {"skipped_files": dg.MetadataValue.json(skipped), "reused_existing_version": reused,
            "objects_csv": dg.MetadataValue.path(str(version.path / "objects.csv")), **(extra or {})}
    if (version.path / "preview.png").is_file():
        meta["preview"] = image_markdown(version.path / "preview.png", "first view of the first objects")
    return materialize_result(version, meta)


@dataclass
class CommittedRenders:
    """Every current renders_3d partition, read as one dataset by the downstream assets.

    A partition is current when its version was rendered for the rows the latest source_objects lists for it;
    ``missing`` (never rendered) and ``stale`` (rendered for other rows) partitions are left out and reported."""

    listing: ArtifactVersion
    versions: dict[str, ArtifactVersion]  # partition key -> version
    missing: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)

    @property
    def named_versions(self) -> dict[str, ArtifactVersion]:
        """Versions by lineage name (``renders_3d/<partition>``, as manifests' inputs record them)."""
        return {f"{ASSET}/{k}": v for k, v in self.versions.items()}

    @property
    def inputs(self) -> dict[str, str]:
        return {name: v.digest for name, v in self.named_versions.items()}

    @property
    def digest(self) -> str:
        """One digest for the whole set (run keys, caches)."""
        return hashlib.sha256(json.dumps(sorted(self.inputs.items())).encode()).hexdigest()

    @property
    def config(self) -> dict:
        """The render settings every partition shares."""
        return next(iter(self.versions.values())).manifest.config

    def files_under(self, split: str) -> list[Path]:
        return [p for v in self.versions.values() for p in v.files_under(split)]

    def shard_locations(self, split: str) -> list[str]:
        """Paths, or s3:// URLs on an S3 artifact root, of every partition's ``split`` shards."""
        return [u for v in self.versions.values() for u in shard_locations(v, split)]

    def object_rows(self) -> list[dict[str, str]]:
        """The rows of every partition's objects.csv (uid, split, caption, elevation_deg)."""
        return [r for v in self.versions.values() for r in objects_csv_rows(v)]

    def log_inputs(self, run, context: str = "training") -> None:
        for name, version in self.named_versions.items():
            run.log_input(name, version, context=context)


def objects_csv_rows(version: ArtifactVersion) -> list[dict[str, str]]:
    """A renders_3d partition's objects.csv: uid, split, caption, elevation_deg."""
    return version.csv_rows("objects.csv")


def committed_renders(store: ArtifactStore, versions: dict[str, ArtifactVersion] | None = None) -> CommittedRenders:
    """The current renders_3d partitions (a Failure when there is none, or when their render settings differ).

    ``versions`` (partition -> version) overrides the latest ones, e.g. to rebuild the set a manifest recorded."""
    listing, rows = current_listing(store)
    by_partition: dict[str, list] = {}
    for r in rows:  # one pass over the listing (100,000 rows at paper), not one per partition
        by_partition.setdefault(r.partition, []).append(r)
    expected = {key: partition_digest(by_partition[key]) for key in sorted(by_partition)}
    found, missing, stale = {}, [], []
    for key, digest in expected.items():
        version = (versions or {}).get(key) or store.latest(ASSET, key)
        if version is None:
            missing.append(key)
        elif version.manifest.config.get("rows_digest") != digest:
            stale.append(key)
        else:
            found[key] = version
    if not found:
        raise dg.Failure(f"{ASSET} has no current partition ({len(missing)} never rendered, {len(stale)} rendered "
                         f"for an older {SOURCE}); materialize {ASSET} for the object_shards partitions "
                         f"{(missing + stale)[:5]}")
    settings = {json.dumps({k: v for k, v in v.manifest.config.items() if k in _SHARED}, sort_keys=True)
                for v in found.values()}
    if len(settings) > 1:
        raise dg.Failure(f"{ASSET} partitions were rendered with different settings ({sorted(settings)[:2]}); "
                         f"re-render them with one config (force=true)")
    return CommittedRenders(listing, found, missing, stale)


_SHARED = ("resolution", "num_views", "radius", "focal", "elevation_min_deg", "elevation_max_deg")

