"""`quality_models` (DINO featurizer + quality SVM + elevation MLP, trained once) and
`filtered_multiview_dataset` (one partition per prompt shard: kept synthetic videos as posed multi-view
samples in the renders_3d schema). The maths lives in vfusion3d_core.filtering.

(No `from __future__ import annotations` in Dagster modules: Dagster resolves config and resource
annotations at decoration time.)
"""

import json
import tarfile
from collections.abc import Iterator
from typing import TYPE_CHECKING

import dagster as dg
import numpy as np
from pydantic import Field

from vfusion3d_core.code_versions import FILTERED_MULTIVIEW as FILTER_CODE_VERSION
from vfusion3d_core.compute import ComputeSettings, set_torch_threads
from vfusion3d_core.data.artifacts import ArtifactStore, ArtifactVersion
from vfusion3d_core.data.bad_items import SkipReport
from vfusion3d_core.data.manifest import ManifestError, sha256_file
from vfusion3d_core.filtering.bootstrap import MAX_BOOTSTRAP_ORBITS
from vfusion3d_core.pretrained import PRETRAINED_PRESETS, MissingPretrainedError, require_pretrained
from vfusion3d_pipeline.asset_keys import FILTERED, QUALITY, RENDERS, SYNTHETIC
from vfusion3d_pipeline.assets.renders import CommittedRenders, committed_renders
from vfusion3d_pipeline.automation import FILTER_UPDATED_SHARDS
from vfusion3d_pipeline.metadata import image_markdown, materialize_result
from vfusion3d_pipeline.partitions import prompt_shards
from vfusion3d_pipeline.publish import publishing
from vfusion3d_pipeline.resources import (
    ArtifactStoreResource,
    ComputeResource,
    MLflowResource,
    PresetResource,
    StepComputeConfig,
)

if TYPE_CHECKING:
    from vfusion3d_core.data.video_sample import SyntheticVideoSample
    from vfusion3d_core.filtering.features import DinoConfig
    from vfusion3d_core.filtering.models import Orbit, QualityModels, QualityTrainConfig

MODELS_DIR = "models"
QUALITY_CODE_VERSION = "quality_models-v2"
DINO_HINT = "a local Dinov2Model folder with its image processor (preprocessor_config.json) saved alongside"




class QualityModelsConfig(StepComputeConfig):
    """Labels, featurizer and classifier settings (tiny: a random 2-layer DINOv2 at 32 px). ``device`` /
    ``precision`` override the compute resource for DINO featurizing."""

    labels_csv: str | None = Field(None, description="video_key,label (good/bad) rows appended by `vfusion3d "
                                                     "label`.")
    dino_path: str | None = Field(None, description="A local pretrained Dinov2Model folder + image processor "
                                                    "(required at small / paper).")
    from_scratch: bool = Field(False, description="small / paper: allow a RANDOM DINOv2 instead of refusing without "
                                                  "dino_path.")
    feature_batch: int = Field(16, description="Videos featurized at a time (render orbits and user-labelled videos "
                                               "are streamed).")
    max_bootstrap_orbits: int | None = Field(None, description="Render orbits bootstrapped (+ their corruptions); "
                                                               "unset: the preset's.")
    dino_image_size: int = Field(32, description="Random DINOv2 (no dino_path): input image size in pixels.")
    dino_patch_size: int = Field(8, description="Random DINOv2: patch size in pixels.")
    dino_hidden_size: int = Field(64, description="Random DINOv2: hidden size.")
    dino_layers: int = Field(2, description="Random DINOv2: transformer layers.")
    dino_heads: int = Field(4, description="Random DINOv2: attention heads.")
    svm_c: float = Field(10.0, description="C of the quality SVM.")
    appearance_pca: int = Field(16, description="PCA components of the appearance features.")
    mlp_hidden: int = Field(64, description="Hidden units of the elevation MLP.")
    mlp_alpha: float = Field(10.0, description="L2 penalty of the elevation MLP.")
    user_holdout_fraction: float = Field(0.25, description="Share of user labels held out to score the SVM.")
    seed: int = Field(0, description="Seed of the random DINOv2, the corruptions and the splits.")
    torch_threads: int | None = Field(None, description="CPU threads for torch (unset: torch's default).")

    def dino(self) -> "DinoConfig":
        from vfusion3d_core.filtering.features import DinoConfig

        return DinoConfig(self.dino_path, self.dino_image_size, self.dino_patch_size, self.dino_hidden_size,
                          self.dino_layers, self.dino_heads, self.seed)

    def train(self) -> "QualityTrainConfig":
        from vfusion3d_core.filtering.models import QualityTrainConfig

        return QualityTrainConfig(self.svm_c, self.appearance_pca, self.mlp_hidden, self.mlp_alpha,
                                  user_holdout_fraction=self.user_holdout_fraction, seed=self.seed)

    def check_pretrained(self, preset: str) -> None:
        """Refuse (dg.Failure) a small / paper run without ``dino_path`` unless ``from_scratch``."""
        try:
            require_pretrained(preset, QUALITY, {"dino_path": self.dino_path}, self.from_scratch,
                               {"dino_path": DINO_HINT})
        except MissingPretrainedError as exc:
            raise dg.Failure(str(exc)) from exc




def render_orbits(renders: CommittedRenders, split: str, limit: int | None = None) -> Iterator["Orbit"]:
    """The first ``limit`` (all when None) orbits of a renders_3d split, read lazily shard by shard."""
    from vfusion3d_core.filtering.models import read_orbits

    return read_orbits(renders.files_under(split), limit)


def synthetic_partitions(store: ArtifactStore) -> Iterator[tuple[str, ArtifactVersion]]:
    """(partition key, latest version) of every synthesized prompt shard, in key order."""
    for key in store.partitions(SYNTHETIC):
        version = store.latest(SYNTHETIC, key)
        if version is not None:
            yield key, version


def labelled_frames(version: ArtifactVersion, labels: dict[str, int], found: list[str]) -> Iterator[np.ndarray]:
    """Frames uint8 [F, S, S, 3] of the labelled videos of a synthetic_videos version, streamed; appends each
    yielded video's key to ``found``."""
    for v in iter_partition_videos(version):
        if v.key in labels:
            found.append(v.key)
            yield v.frames


def iter_partition_videos(version: ArtifactVersion) -> Iterator["SyntheticVideoSample"]:
    from vfusion3d_core.data.video_sample import iter_video_samples

    yield from iter_video_samples(version.shards())


@dg.asset(
    name=QUALITY,
    group_name="filtering",
    deps=[RENDERS],
    kinds={"scikitlearn", "pytorch"},
    code_version=QUALITY_CODE_VERSION,
    description="DINOv2 featurizer, quality SVM (bootstrap labels from renders_3d orbits + the user's labels "
                "CSV) and elevation MLP (renders' known elevations), trained once for every partition of "
                "filtered_multiview_dataset; held-out accuracy in metadata.",
)
def quality_models(context: dg.AssetExecutionContext, config: QualityModelsConfig, artifacts: ArtifactStoreResource,
                   preset: PresetResource, compute: ComputeResource, mlflow: MLflowResource) -> dg.MaterializeResult:
    from vfusion3d_core.filtering.features import DinoFeaturizer
    from vfusion3d_core.filtering.models import (
        LabelsError,
        match_labels,
        read_labels_csv,
        stream_video_features,
        train_quality_models,
    )

    config.check_pretrained(preset.validated())
    settings = compute.settings(config)
    set_torch_threads(config.torch_threads)
    featurizer = DinoFeaturizer.build(config.dino(), settings)
    store = artifacts.store()
    renders = committed_renders(store)
    inputs = dict(renders.inputs)
    labels: dict[str, int] = {}
    label_rows = SkipReport(what="reading labels")
    if config.labels_csv:
        try:
            labels = read_labels_csv(config.labels_csv, report=label_rows)
        except LabelsError as exc:
            raise dg.Failure(f"bad labels file: {exc}") from exc
        inputs["labels_csv"] = sha256_file(config.labels_csv)
    user_features, user_labels, found_keys = [], [], []
    for key, version in synthetic_partitions(store) if labels else []:
        found: list[str] = []
        # streamed: only each labelled video's feature vector is kept, never its frames
        feats = stream_video_features(featurizer, labelled_frames(version, labels, found), config.feature_batch)
        if found:
            inputs[f"{SYNTHETIC}/{key}"] = version.digest
            user_features.append(feats)
        user_labels += [labels[k] for k in found]
        found_keys += found
    _, unknown = match_labels(labels, found_keys)
    if unknown:  # named, never trained on
        context.log.warning(f"{len(unknown)} labelled video key(s) not found in synthetic_videos: {unknown[:10]}")
    limit = config.max_bootstrap_orbits or MAX_BOOTSTRAP_ORBITS[preset.validated()]
    train, heldout = render_orbits(renders, "train", limit), render_orbits(renders, "heldout", limit)
    rc = renders.config
    elevation_range = (float(rc.get("elevation_min_deg", 0.0)), float(rc.get("elevation_max_deg", 45.0)))
    with publishing(context, store, mlflow, QUALITY, QUALITY_CODE_VERSION) as pub:
        run, staging = pub.run, pub.staging
        x_user = np.concatenate(user_features) if user_features else []
        models = train_quality_models(featurizer, train, heldout, x_user, user_labels, config.train(),
                                      elevation_range, config.feature_batch)
        files = [f"{MODELS_DIR}/{f}" for f in models.save(staging / MODELS_DIR)]
        m = models.info["metrics"]
        counts = {"bootstrap_orbits": m["bootstrap_orbits"], "heldout_orbits": m["heldout_orbits"],
                  "user_labels": len(user_labels), "skipped_rows": label_rows.skipped("row")}
        run_config = {**config.model_dump(), "compute": settings.describe(), "dino_weights": featurizer.weights}
        version = pub.commit(files, counts, run_config, inputs=inputs)
        run.log_params(run_config)
        renders.log_inputs(run)
        run.log_metrics({k: v for k, v in m.items() if isinstance(v, int | float)})
    context.log.info(f"committed {QUALITY} {version.path.name} (DINOv2: {featurizer.weights}; "
                     f"{settings.describe()['resolved_device']} {settings.describe()['resolved_precision']}): "
                     f"held-out accuracy {m.get('heldout_accuracy')}, "
                     f"balanced {m.get('heldout_balanced_accuracy')}, elevation MAE "
                     f"{m.get('elevation_heldout_mae_deg')} (baseline {m.get('elevation_baseline_mae_deg')})")
    return materialize_result(version, {
        "heldout_accuracy": m.get("heldout_accuracy", float("nan")),
        "heldout_balanced_accuracy": m.get("heldout_balanced_accuracy", float("nan")),
        "metrics": dg.MetadataValue.json(m),
        "dino_model": featurizer.weights,
        "compute": dg.MetadataValue.json(settings.describe()),
        "mlflow_run_id": run.run_id,
    })


class FilteredDatasetConfig(StepComputeConfig):
    """Threshold and output settings; ``device`` / ``precision`` override the compute resource for DINO
    featurizing."""

    threshold: float = Field(0.0, description="Keep a video when its SVM decision value is above this.")
    min_keep_fraction: float | None = Field(None, description="Also keep the shard's best videos up to this fraction "
                                                              "(unset: the preset's, 0.25 at tiny, else 0).")
    samples_per_shard: int = Field(64, description="Samples per output WebDataset shard.")
    batch_size: int = Field(16, description="Videos featurized at a time (pass 1 streams the shards).")
    max_bad_fraction: float = Field(0.01, description="Bad videos / shards are skipped and counted; above this share "
                                                      "the run fails.")
    from_scratch: bool = Field(False, description="small / paper: accept quality models built on a RANDOM DINOv2.")
    torch_threads: int | None = Field(None, description="CPU threads for torch (unset: torch's default).")


def verified_quality_models(store: ArtifactStore) -> ArtifactVersion:
    """The latest quality_models version, its files verified against the manifest (the joblib files are pickles:
    never load unverified bytes)."""
    version = store.latest(QUALITY)
    if version is None:
        raise dg.Failure("quality_models has no committed version; materialize it first")
    problems = version.manifest.verify(version.path)
    if problems:
        raise ManifestError(f"{version.path}: quality models do not match their manifest: {problems[:5]}")
    return version


def load_quality_models(store: ArtifactStore, compute: ComputeSettings | None = None
                        ) -> tuple[ArtifactVersion, "QualityModels"]:
    """The latest quality_models version (verified first) and its models loaded onto ``compute``'s device."""
    from vfusion3d_core.filtering.models import QualityModels

    version = verified_quality_models(store)
    return version, QualityModels.load(version.path / MODELS_DIR, compute)


@dg.asset(
    name=FILTERED,
    group_name="filtering",
    deps=[SYNTHETIC, QUALITY],
    partitions_def=prompt_shards,
    kinds={"scikitlearn", "webdataset"},
    code_version=FILTER_CODE_VERSION,
    automation_condition=FILTER_UPDATED_SHARDS,
    description="Synthetic videos of one prompt shard scored by the quality SVM; kept ones become posed "
                "multi-view samples (frame i at azimuth i*360/F, MLP-predicted elevation, renders' radius and "
                "intrinsics) in the renders_3d WebDataset schema; scores.csv, histogram, examples.",
)
def filtered_multiview_dataset(context: dg.AssetExecutionContext, config: FilteredDatasetConfig,
                               artifacts: ArtifactStoreResource, preset: PresetResource, compute: ComputeResource,
                               mlflow: MLflowResource) -> dg.MaterializeResult:
    from vfusion3d_core.filtering.extract import (
        EXAMPLES_FILE,
        HISTOGRAM_FILE,
        MIN_KEEP_FRACTION,
        FilterRequest,
        run_filter,
    )
    from vfusion3d_core.filtering.models import INFO_FILE

    key = context.partition_key
    name = preset.validated()
    floor = config.min_keep_fraction if config.min_keep_fraction is not None else MIN_KEEP_FRACTION[name]
    settings = compute.settings(config)
    set_torch_threads(config.torch_threads)
    store = artifacts.store()
    models_version = verified_quality_models(store)
    info = json.loads((models_version.path / MODELS_DIR / INFO_FILE).read_text())
    dino_weights = str(info.get("dino_weights", "unknown (quality_models older than v2)"))
    if name in PRETRAINED_PRESETS and not config.from_scratch and not dino_weights.startswith("pretrained"):
        raise dg.Failure(f"{FILTERED} at preset {name!r} needs pretrained weights: dino_path of {QUALITY} is not set "
                         f"(its version {models_version.path.name} uses DINOv2 {dino_weights}); materialize "
                         f"{QUALITY} with dino_path ({DINO_HINT}), or set from_scratch=True")
    synth = store.latest(SYNTHETIC, key)
    if synth is None:
        raise dg.Failure(f"synthetic_videos/{key} has no committed version; synthesize it first")
    problems = synth.manifest.verify(synth.path)
    if problems:
        raise ManifestError(f"{synth.path}: does not match its manifest: {problems[:5]}")
    with publishing(context, store, mlflow, FILTERED, FILTER_CODE_VERSION, key) as pub:
        run, staging = pub.run, pub.staging
        request = FilterRequest(partition=key, video_shards=[str(p) for p in synth.shards()],
                                quality_models_dir=str(models_version.path / MODELS_DIR), output_dir=str(staging),
                                threshold=config.threshold, min_keep_fraction=floor,
                                samples_per_shard=config.samples_per_shard, batch_size=config.batch_size,
                                max_bad_fraction=config.max_bad_fraction, compute=settings)
        result, models = run_filter(request, progress=lambda n: context.log.info(f"{key}: scored {n} videos"))
        run_config = {**config.model_dump(), "min_keep_fraction": floor, "partition": key,
                      "compute": settings.describe(), "dino_weights": dino_weights}
        run_config.pop("torch_threads")
        version = pub.commit(result.files, result.counts, run_config,
                             inputs={QUALITY: models_version.digest, f"{SYNTHETIC}/{key}": synth.digest})
        run.log_params(run_config)
        run.log_input(QUALITY, models_version)
        run.log_input(f"{SYNTHETIC}/{key}", synth)
        run.log_metrics({f"count_{k}": v for k, v in result.counts.items()})
        run.log_metrics(result.skipped)  # skipped_samples, skipped_shards (bad-item policy)
        masks = mask_quality(store)
        run.log_metrics({f"mask_{k.replace('/', '_')}": v for k, v in masks.items()})
    c = result.counts
    context.log.info(f"committed {FILTERED}/{key} {version.path.name}: kept {c['kept']} ({c['kept_by_floor']} by the "
                     f"{floor:.0%} floor), rejected {c['rejected']}")
    metrics = models.info["metrics"]
    kept = [k for k, _, keep, _ in result.scores if keep]
    rejected = [k for k, _, keep, _ in result.scores if not keep]
    return materialize_result(version, {
        "partition": key, "kept": c["kept"], "rejected": c["rejected"], "kept_by_floor": c["kept_by_floor"],
        **result.skipped, "skipped_items": dg.MetadataValue.json(result.skipped_items[:50]),
        "classifier_heldout_accuracy": metrics.get("heldout_accuracy", float("nan")),
        "classifier_heldout_balanced_accuracy": metrics.get("heldout_balanced_accuracy", float("nan")),
        "score_histogram": image_markdown(version.path / HISTOGRAM_FILE, "SVM score histogram (line: threshold)"),
        "examples": image_markdown(version.path / EXAMPLES_FILE, "kept (green) and rejected (red) videos"),
        "kept_examples": dg.MetadataValue.json(kept[:8]),
        "rejected_examples": dg.MetadataValue.json(rejected[:8]),
        "dino_model": dino_weights,
        **mask_metadata(masks),
        "compute": dg.MetadataValue.json(settings.describe()),
        "mlflow_run_id": run.run_id,
    })


MASK_EVAL_ORBITS = 2


def mask_quality(store: ArtifactStore) -> dict[str, float]:
    """The old (ramp) and current (segment) alpha estimators' error on the first ``MASK_EVAL_ORBITS`` held-out
    renders_3d orbits (exact alpha), composited on white, clean and with 8/255 noise (``render_mask_quality``);
    empty when no renders_3d partition is current (the estimate is metadata, not an input of the dataset)."""
    from vfusion3d_core.filtering.masks import render_mask_quality

    try:
        renders = committed_renders(store)
    except dg.Failure:
        return {}
    shards = renders.shard_locations("heldout") or renders.shard_locations("train")
    return render_mask_quality(shards, MASK_EVAL_ORBITS) if shards else {}


def mask_metadata(masks: dict[str, float]) -> dict:
    """The mask-quality table and its headline numbers (noisy frames) as asset metadata."""
    if not masks:
        return {"mask_quality": "not measured (no current renders_3d partition)"}
    return {"mask_quality": dg.MetadataValue.json(masks),
            **{f"mask_{k}/noise8/{est}": masks[f"{est}/noise8/{k}"] for k in ("alpha_mae", "iou")
               for est in ("ramp", "segment")}}


def tar_keys(path) -> set[str]:
    """Sample keys of a WebDataset tar, from member names only (no decoding)."""
    with tarfile.open(path, "r:") as tf:
        return {m.name.split(".", 1)[0] for m in tf if m.isfile()}
