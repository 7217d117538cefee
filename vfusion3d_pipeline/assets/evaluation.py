"""`eval_metrics`: every LRM checkpoint scored on held-out 3D objects, and the data-source ablation table.

Checkpoints: the same architecture untrained, lrm_pretrained (synthetic only), lrm_finetuned (synthetic
then 3D) and lrm_3d_only (3D only). Metrics per checkpoint: novel-view PSNR / SSIM / LPIPS, CLIP image
similarity to the ground-truth views and CLIP text similarity to the object's caption
(vfusion3d_core.metrics). Held-out objects never appear in any checkpoint's training data: the asset
refuses to run otherwise and the blocking check `eval_heldout_disjoint` re-proves it from the manifests.

(No `from __future__ import annotations` in Dagster modules: Dagster resolves config and resource
annotations at decoration time.)
"""

import csv
import io
import json
from collections.abc import Iterable

import dagster as dg

from vfusion3d_core.data import ArtifactStore, ArtifactVersion, Manifest, file_entries
from vfusion3d_core.metrics.evaluate import EvaluateRequest, run_evaluation
from vfusion3d_core.metrics.novel_views import METRICS
from vfusion3d_core.pretrained import PRETRAINED_PRESETS, MissingPretrainedError, require_pretrained
from vfusion3d_pipeline.assets.lrm import FINETUNED, MODEL_DIR, PRETRAINED, THREE_D_ONLY
from vfusion3d_pipeline.assets.renders import ASSET as RENDERS
from vfusion3d_pipeline.assets.renders import committed_renders, objects_csv_rows
from vfusion3d_pipeline.lineage import materialize_result, png_markdown, require_latest
from vfusion3d_pipeline.resources import (
    ArtifactStoreResource,
    ComputeResource,
    MLflowResource,
    PresetResource,
    StepComputeConfig,
)

ASSET = "eval_metrics"
CODE_VERSION = "eval_metrics-v2"
FILTERED = "filtered_multiview_dataset"
UNTRAINED = "untrained"
CHECKPOINTS = (UNTRAINED, PRETRAINED, FINETUNED, THREE_D_ONLY)
ARMS = {THREE_D_ONLY: "3D only", PRETRAINED: "synthetic only", FINETUNED: "synthetic then 3D fine-tune"}
PAPER_LPIPS = {THREE_D_ONLY: 0.161, PRETRAINED: 0.160, FINETUNED: 0.143}  # the paper's ablation (DESIGN.md)
RENDER_SIZE = {"tiny": 64, "small": 128, "paper": 256}
CLIP_HINT = "a local CLIP folder: CLIPModel + tokenizer + image processor (CLIPProcessor.save_pretrained)"


class EvalConfig(StepComputeConfig):
    """Unset fields take the preset's value (tiny: 64 px renders, random CLIP and LPIPS backbones). At small /
    paper a CLIP folder and the LPIPS AlexNet weights are required unless ``from_scratch``. ``device`` /
    ``precision`` override the compute resource for every model of the evaluation."""

    max_objects: int = 8
    novel_views: int = 4
    render_size: int | None = None
    clip_path: str | None = None  # local CLIP folder (model, tokenizer, image processor); unset at tiny = RANDOM CLIP
    lpips_random_backbone: bool | None = None  # unset: random at tiny (and with from_scratch), else real
    from_scratch: bool = False  # small / paper: evaluate with RANDOM CLIP / LPIPS instead of refusing
    turntable_frames: int = 8
    seed: int = 0

    def check_pretrained(self, preset: str) -> None:
        """Refuse (dg.Failure) a small / paper run without its metric models (see ``check_metric_models``)."""
        check_metric_models(preset, self)


def training_uids(store: ArtifactStore, manifest: Manifest) -> dict[str, set[str]]:
    """Sample uids each training input of a checkpoint contributed, by input name.

    a renders_3d partition contributes its train split (objects.csv); a filtered partition its kept videos
    (scores.csv); an upstream checkpoint (lrm_pretrained) everything it was trained on, recursively.
    """
    out: dict[str, set[str]] = {}
    for name, digest in manifest.inputs.items():
        asset, _, partition = name.partition("/")
        if asset == RENDERS:
            out[name] = {r["uid"] for r in objects_csv_rows(store.version(RENDERS, digest, partition or None))
                         if r["split"] == "train"}
        elif asset == FILTERED:
            out[name] = {r["video_key"] for r in _csv_rows(store.version(FILTERED, digest, partition), "scores.csv")
                         if r["kept"] == "1"}
        elif asset in (PRETRAINED, FINETUNED, THREE_D_ONLY):
            for sub, uids in training_uids(store, store.version(asset, digest).manifest).items():
                out[f"{name} <- {sub}"] = uids
    return out


def heldout_uids(renders: Iterable[ArtifactVersion]) -> set[str]:
    """The held-out uids of renders_3d partition versions."""
    return {r["uid"] for v in renders for r in objects_csv_rows(v) if r["split"] == "heldout"}


def recorded_renders(store: ArtifactStore, inputs: dict[str, str]) -> list[ArtifactVersion]:
    """The renders_3d partition versions a manifest recorded as inputs (``renders_3d/<partition>``)."""
    return [store.version(RENDERS, digest, name.partition("/")[2] or None) for name, digest in inputs.items()
            if name.partition("/")[0] == RENDERS]


def _csv_rows(version: ArtifactVersion, name: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO((version.path / name).read_text(encoding="utf-8"))))


def overlap_report(store: ArtifactStore, renders: Iterable[ArtifactVersion], checkpoints: dict[str, ArtifactVersion]
                   ) -> dict[str, list[str]]:
    """Held-out uids (of the renders_3d partitions ``renders``) found in a checkpoint's training data, by
    checkpoint and input (empty = disjoint)."""
    held = heldout_uids(renders)
    report = {}
    for name, version in checkpoints.items():
        for source, uids in training_uids(store, version.manifest).items():
            if held & uids:
                report[f"{name} <- {source}"] = sorted(held & uids)
    return report


def _markdown_table(header: list[str], rows: list[list]) -> str:
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                     + ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows])


def check_metric_models(preset: str, config: EvalConfig) -> bool:
    """Whether LPIPS uses a random backbone; refuses (dg.Failure naming every missing path) a small / paper run
    without a CLIP folder or the LPIPS AlexNet weights, unless ``from_scratch``."""
    from vfusion3d_core.lrm.train.losses import lpips_backbone_path

    pretrained = preset in PRETRAINED_PRESETS
    if config.lpips_random_backbone is not None:
        random_lpips = config.lpips_random_backbone
    else:
        random_lpips = not pretrained or config.from_scratch
    problems = []
    try:
        require_pretrained(preset, ASSET, {"clip_path": config.clip_path}, config.from_scratch,
                           {"clip_path": CLIP_HINT})
    except MissingPretrainedError as exc:
        problems.append(str(exc))
    backbone = lpips_backbone_path("alex")
    if not random_lpips and not backbone.is_file():
        problems.append(f"the LPIPS backbone {backbone} (torchvision AlexNet weights in the torch hub cache, "
                        "TORCH_HOME) is missing; copy it there"
                        + (", or set from_scratch=True for a RANDOM backbone" if pretrained else
                           ", or set lpips_random_backbone=True"))
    if pretrained and random_lpips and not config.from_scratch:
        problems.append(f"lpips_random_backbone=True at preset {preset!r} needs from_scratch=True")
    if problems:
        raise dg.Failure(f"{ASSET}: " + "; ".join(problems))
    return random_lpips


@dg.asset(
    name=ASSET,
    group_name="evaluation",
    deps=[RENDERS, PRETRAINED, FINETUNED, THREE_D_ONLY],
    kinds={"pytorch", "mlflow"},
    code_version=CODE_VERSION,
    description="PSNR / SSIM / LPIPS / CLIP-image / CLIP-text of every LRM checkpoint (untrained, synthetic only, "
                "synthetic then 3D, 3D only) on held-out renders_3d objects, turntable previews, and the paper's "
                "data-source ablation table.",
)
def eval_metrics(context: dg.AssetExecutionContext, config: EvalConfig, artifacts: ArtifactStoreResource,
                 preset: PresetResource, compute: ComputeResource, mlflow: MLflowResource) -> dg.MaterializeResult:
    from vfusion3d_core.lrm.train.losses import LPIPSUnavailable

    name = preset.validated()
    random_lpips = check_metric_models(name, config)
    settings = compute.settings(config)
    store = artifacts.store()
    renders = committed_renders(store)
    versions = {n: require_latest(store, n) for n in CHECKPOINTS if n != UNTRAINED}
    overlap = overlap_report(store, renders.versions.values(), versions)
    if overlap:
        raise dg.Failure("held-out objects appear in training data; refusing to evaluate",
                         metadata={"overlap": dg.MetadataValue.json(overlap)})
    size = config.render_size or RENDER_SIZE[name]

    store.clean_staging(ASSET)
    with mlflow.run_for(context) as run, store.staging(ASSET) as staging:
        request = EvaluateRequest(
            checkpoints={c: None if c == UNTRAINED else str(versions[c].path / MODEL_DIR) for c in CHECKPOINTS},
            heldout_shards=[str(p) for p in renders.files_under("heldout")], output_dir=str(staging),
            untrained_config_from=PRETRAINED, max_objects=config.max_objects, novel_views=config.novel_views,
            render_size=size, turntable_frames=config.turntable_frames, clip_path=config.clip_path,
            lpips_random_backbone=random_lpips, seed=config.seed, compute=settings)
        try:
            result = run_evaluation(request, log=context.log.info)
        except LPIPSUnavailable as exc:
            raise dg.Failure(str(exc)) from exc
        means, labels = result.means, result.labels
        for ckpt in CHECKPOINTS:
            run.log_metrics({f"{ckpt}.{k}": v for k, v in means[ckpt].items()})
        header = ["checkpoint", *METRICS]
        rows = [[c, *(means[c][m] for m in METRICS)] for c in CHECKPOINTS]
        ablation_header = ["training data", "checkpoint", "LPIPS", "SSIM", "PSNR", "CLIP image", "CLIP text",
                           "paper LPIPS"]
        ablation = [[ARMS[c], c, means[c]["lpips"], means[c]["ssim"], means[c]["psnr"], means[c]["clip_image"],
                     means[c]["clip_text"], PAPER_LPIPS[c]] for c in (THREE_D_ONLY, PRETRAINED, FINETUNED)]
        described = settings.describe()
        notes = f"{result.objects} held-out objects, {config.novel_views} novel views each at {size} px. " \
                f"CLIP: {labels['clip']}. LPIPS: {labels['lpips']}. Computed on {described['resolved_device']} " \
                f"({described['resolved_precision']})."
        (staging / "ablation.md").write_text("# Data-source ablation\n\n" + _markdown_table(ablation_header, ablation)
                                             + f"\n\n{notes}\n", encoding="utf-8")
        (staging / "metrics.json").write_text(json.dumps({"means": means, "labels": labels}, indent=2,
                                                         sort_keys=True))
        files = [*result.files, "ablation.md", "metrics.json"]
        run_config = {**config.model_dump(), "render_size": size, "lpips_random_backbone": random_lpips,
                      "clip": labels["clip"], "lpips": labels["lpips"], "compute": described}
        counts = {"checkpoints": len(CHECKPOINTS), "heldout_objects": result.objects}
        manifest = Manifest(ASSET, file_entries(staging, files), counts, run_config,
                            inputs={**renders.inputs, **{n: v.digest for n, v in versions.items()}},
                            code_version=CODE_VERSION, run_id=context.run.run_id)
        version = store.commit(staging, manifest, ASSET)
        run.log_params(run_config)
        renders.log_inputs(run, context="evaluation")
        for n, v in versions.items():
            run.log_input(n, v, context="evaluation")
        for f in ("metrics.csv", "ablation.md", "per_object.csv"):
            run.log_artifact(version.path / f)
        run.log_artifact(version.path / "turntables", "turntables")
        run.log_output(ASSET, version)
    schema = dg.TableSchema(columns=[dg.TableColumn("checkpoint", "string"),
                                     *(dg.TableColumn(m, "float") for m in METRICS)])
    previews = "\n\n".join(f"**{c}** (input view, then turntable)\n\n"
                           + png_markdown(version.path / "turntables" / f"{c}.png", c) for c in CHECKPOINTS)
    return materialize_result(version, {
        "metrics": dg.MetadataValue.table([dg.TableRecord(dict(zip(header, r, strict=True))) for r in rows], schema),
        "ablation": dg.MetadataValue.md(_markdown_table(ablation_header, ablation) + f"\n\n{notes}"),
        "turntables": dg.MetadataValue.md(previews),
        "clip_model": labels["clip"], "lpips_backbone": labels["lpips"],
        "compute": dg.MetadataValue.json(described),
        **{f"{c}/lpips": means[c]["lpips"] for c in CHECKPOINTS},
        "mlflow_run_id": run.run_id,
    })


@dg.asset_check(asset=ASSET, blocking=True,
                description="Held-out objects are disjoint from every evaluated checkpoint's training data "
                            "(recursively through its manifests).")
def eval_heldout_disjoint(artifacts: ArtifactStoreResource) -> dg.AssetCheckResult:
    store = artifacts.store()
    version = store.latest(ASSET)
    if version is None:
        return dg.AssetCheckResult(passed=False, metadata={"error": "eval_metrics has no committed version"})
    inputs = version.manifest.inputs
    renders = recorded_renders(store, inputs)
    checkpoints = {n: store.version(n, d) for n, d in inputs.items() if n.partition("/")[0] != RENDERS}
    overlap = overlap_report(store, renders, checkpoints)
    sources = {f"{n} <- {s}": len(u) for n, v in checkpoints.items()
               for s, u in training_uids(store, v.manifest).items()}
    return dg.AssetCheckResult(passed=not overlap, metadata={"heldout_objects": len(heldout_uids(renders)),
                                                             "training_sources": dg.MetadataValue.json(sources),
                                                             "overlap": dg.MetadataValue.json(overlap)})
