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

import dagster as dg

from vfusion3d_core.data import ArtifactStore, ArtifactVersion, Manifest, file_entries
from vfusion3d_core.lrm import LRM
from vfusion3d_core.metrics import ClipScorer, load_heldout_objects, score_checkpoint, turntable_strip
from vfusion3d_core.metrics.novel_views import METRICS
from vfusion3d_pipeline.assets.lrm import FINETUNED, MODEL_DIR, PRETRAINED, THREE_D_ONLY
from vfusion3d_pipeline.assets.renders import ASSET as RENDERS
from vfusion3d_pipeline.lineage import materialize_result, png_markdown, require_latest
from vfusion3d_pipeline.resources import ArtifactStoreResource, MLflowResource, PresetResource

ASSET = "eval_metrics"
CODE_VERSION = "eval_metrics-v1"
FILTERED = "filtered_multiview_dataset"
UNTRAINED = "untrained"
CHECKPOINTS = (UNTRAINED, PRETRAINED, FINETUNED, THREE_D_ONLY)
ARMS = {THREE_D_ONLY: "3D only", PRETRAINED: "synthetic only", FINETUNED: "synthetic then 3D fine-tune"}
PAPER_LPIPS = {THREE_D_ONLY: 0.161, PRETRAINED: 0.160, FINETUNED: 0.143}  # the paper's ablation (DESIGN.md)
RENDER_SIZE = {"tiny": 64, "small": 128, "paper": 256}


class EvalConfig(dg.Config):
    """Unset fields take the preset's value (tiny: 64 px renders, random CLIP and LPIPS backbones)."""

    max_objects: int = 8
    novel_views: int = 4
    render_size: int | None = None
    clip_path: str | None = None  # local CLIP directory; unset = a small RANDOM CLIP (scores not meaningful)
    lpips_random_backbone: bool | None = None  # unset: random at tiny (no AlexNet weights offline), else real
    turntable_frames: int = 8
    seed: int = 0


def training_uids(store: ArtifactStore, manifest: Manifest) -> dict[str, set[str]]:
    """Sample uids each training input of a checkpoint contributed, by input name.

    renders_3d contributes its train split (objects.csv); a filtered partition its kept videos
    (scores.csv); an upstream checkpoint (lrm_pretrained) everything it was trained on, recursively.
    """
    out: dict[str, set[str]] = {}
    for name, digest in manifest.inputs.items():
        asset, _, partition = name.partition("/")
        if asset == RENDERS:
            out[name] = {r["uid"] for r in _csv_rows(store.version(RENDERS, digest), "objects.csv")
                         if r["split"] == "train"}
        elif asset == FILTERED:
            out[name] = {r["video_key"] for r in _csv_rows(store.version(FILTERED, digest, partition), "scores.csv")
                         if r["kept"] == "1"}
        elif asset in (PRETRAINED, FINETUNED, THREE_D_ONLY):
            for sub, uids in training_uids(store, store.version(asset, digest).manifest).items():
                out[f"{name} <- {sub}"] = uids
    return out


def heldout_uids(renders: ArtifactVersion) -> set[str]:
    return {r["uid"] for r in _csv_rows(renders, "objects.csv") if r["split"] == "heldout"}


def _csv_rows(version: ArtifactVersion, name: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO((version.path / name).read_text(encoding="utf-8"))))


def overlap_report(store: ArtifactStore, renders: ArtifactVersion, checkpoints: dict[str, ArtifactVersion]
                   ) -> dict[str, list[str]]:
    """Held-out uids found in a checkpoint's training data, by checkpoint and input (empty = disjoint)."""
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
                 preset: PresetResource, mlflow: MLflowResource) -> dg.MaterializeResult:
    import torch

    from vfusion3d_core.lrm.train.losses import LPIPSUnavailable, build_lpips

    store = artifacts.store()
    renders = require_latest(store, RENDERS)
    versions = {name: require_latest(store, name) for name in CHECKPOINTS if name != UNTRAINED}
    overlap = overlap_report(store, renders, versions)
    if overlap:
        raise dg.Failure("held-out objects appear in training data; refusing to evaluate",
                         metadata={"overlap": dg.MetadataValue.json(overlap)})
    name = preset.validated()
    size = config.render_size or RENDER_SIZE[name]
    random_lpips = config.lpips_random_backbone if config.lpips_random_backbone is not None else name == "tiny"
    torch.manual_seed(config.seed)  # a random LPIPS backbone comes from torch's RNG: same seed, same scores
    try:
        lpips_net = build_lpips("alex", random_backbone=random_lpips).eval()
    except LPIPSUnavailable as exc:
        raise dg.Failure(str(exc)) from exc
    clip = ClipScorer.from_pretrained(config.clip_path) if config.clip_path else ClipScorer.random(config.seed)
    objects = load_heldout_objects(renders.files_under("heldout"), config.max_objects, config.novel_views)
    models = {n: LRM.from_pretrained(v.path / MODEL_DIR) for n, v in versions.items()}
    torch.manual_seed(config.seed)
    models[UNTRAINED] = LRM(models[PRETRAINED].config)
    labels = {"clip": f"{clip.name} (RANDOM weights: CLIP scores not meaningful)" if clip.is_random else clip.name,
              "lpips": "alex (RANDOM backbone: LPIPS not meaningful)" if random_lpips else "alex"}
    context.log.info(f"evaluating {len(models)} checkpoints on {len(objects)} held-out objects at {size} px; "
                     f"CLIP: {labels['clip']}; LPIPS: {labels['lpips']}")

    store.clean_staging(ASSET)
    with mlflow.run_for(context) as run, store.staging(ASSET) as staging:
        means: dict[str, dict[str, float]] = {}
        per_object = []
        (staging / "turntables").mkdir()
        for ckpt in CHECKPOINTS:
            scores = score_checkpoint(models[ckpt], objects, size, lpips_net, clip)
            means[ckpt] = scores.mean()
            per_object += [{"checkpoint": ckpt, **r} for r in scores.rows]
            turntable_strip(models[ckpt], objects[0], config.turntable_frames, size).save(
                staging / "turntables" / f"{ckpt}.png")
            context.log.info(f"{ckpt}: " + ", ".join(f"{k}={v:.4f}" for k, v in means[ckpt].items()))
            run.log_metrics({f"{ckpt}.{k}": v for k, v in means[ckpt].items()})
        header = ["checkpoint", *METRICS]
        rows = [[c, *(means[c][m] for m in METRICS)] for c in CHECKPOINTS]
        ablation_header = ["training data", "checkpoint", "LPIPS", "SSIM", "PSNR", "CLIP image", "CLIP text",
                           "paper LPIPS"]
        ablation = [[ARMS[c], c, means[c]["lpips"], means[c]["ssim"], means[c]["psnr"], means[c]["clip_image"],
                     means[c]["clip_text"], PAPER_LPIPS[c]] for c in (THREE_D_ONLY, PRETRAINED, FINETUNED)]
        with open(staging / "metrics.csv", "w", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerows([header, *rows])
        with open(staging / "per_object.csv", "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=["checkpoint", "uid", *METRICS])
            writer.writeheader()
            writer.writerows(per_object)
        notes = f"{len(objects)} held-out objects, {config.novel_views} novel views each at {size} px. " \
                f"CLIP: {labels['clip']}. LPIPS: {labels['lpips']}."
        (staging / "ablation.md").write_text("# Data-source ablation\n\n" + _markdown_table(ablation_header, ablation)
                                             + f"\n\n{notes}\n", encoding="utf-8")
        (staging / "metrics.json").write_text(json.dumps({"means": means, "labels": labels}, indent=2,
                                                         sort_keys=True))
        files = ["metrics.csv", "per_object.csv", "ablation.md", "metrics.json"]
        files += [f"turntables/{c}.png" for c in CHECKPOINTS]
        run_config = {**config.model_dump(), "render_size": size, "lpips_random_backbone": random_lpips,
                      "clip": labels["clip"]}
        counts = {"checkpoints": len(CHECKPOINTS), "heldout_objects": len(objects)}
        manifest = Manifest(ASSET, file_entries(staging, files), counts, run_config,
                            inputs={RENDERS: renders.digest, **{n: v.digest for n, v in versions.items()}},
                            code_version=CODE_VERSION, run_id=context.run.run_id)
        version = store.commit(staging, manifest, ASSET)
        run.log_params(run_config)
        run.log_input(RENDERS, renders, context="evaluation")
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
    renders = store.version(RENDERS, inputs[RENDERS])
    checkpoints = {n: store.version(n, d) for n, d in inputs.items() if n != RENDERS}
    overlap = overlap_report(store, renders, checkpoints)
    sources = {f"{n} <- {s}": len(u) for n, v in checkpoints.items()
               for s, u in training_uids(store, v.manifest).items()}
    return dg.AssetCheckResult(passed=not overlap, metadata={"heldout_objects": len(heldout_uids(renders)),
                                                             "training_sources": dg.MetadataValue.json(sources),
                                                             "overlap": dg.MetadataValue.json(overlap)})
