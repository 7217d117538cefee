"""`eval_metrics`: every LRM checkpoint scored on held-out 3D objects, and the data-source ablation table.

Checkpoints: the same architecture untrained, lrm_pretrained (synthetic only), lrm_finetuned (synthetic
then 3D) and lrm_3d_only (3D only). Metrics per checkpoint: novel-view PSNR / SSIM / LPIPS, CLIP image
similarity to the ground-truth views and CLIP text similarity to the object's caption
(vfusion3d_core.metrics). Held-out objects never appear in any checkpoint's training data -- neither their ids
nor their captions (exactly or as MiniLM near duplicates, vfusion3d_core/metrics/leakage.py): the asset refuses to
run otherwise and the blocking check `eval_heldout_disjoint` re-proves it from the manifests.

(No `from __future__ import annotations` in Dagster modules: Dagster resolves config and resource
annotations at decoration time.)
"""

import json
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

from vfusion3d_core.data import ArtifactStore, ArtifactVersion, Manifest
from vfusion3d_core.pretrained import PRETRAINED_PRESETS, MissingPretrainedError, require_pretrained
from vfusion3d_core.thresholds import NEAR_DUP_THRESHOLD
from vfusion3d_pipeline.asset_keys import EVAL_METRICS, FILTERED, RENDERS
from vfusion3d_pipeline.assets.lrm import FINETUNED, MODEL_DIR, PRETRAINED, THREE_D_ONLY
from vfusion3d_pipeline.assets.renders import committed_renders, objects_csv_rows
from vfusion3d_pipeline.metadata import materialize_result, png_markdown, require_latest
from vfusion3d_pipeline.publish import publishing
from vfusion3d_pipeline.resources import (
    ArtifactStoreResource,
    ComputeResource,
    MLflowResource,
    PresetResource,
    StepComputeConfig,
)
from vfusion3d_pipeline.tracking import MLflowRun, model_id_of

if TYPE_CHECKING:  # the metrics and MiniLM (torch, transformers) are imported inside the functions that use them
    from vfusion3d_core.metrics.leakage import LeakageReport
    from vfusion3d_core.prompts.dedup import Embedder

ASSET = EVAL_METRICS
CODE_VERSION = "eval_metrics-v2"
UNTRAINED = "untrained"
CHECKPOINTS = (UNTRAINED, PRETRAINED, FINETUNED, THREE_D_ONLY)
ARMS = {THREE_D_ONLY: "3D only", PRETRAINED: "synthetic only", FINETUNED: "synthetic then 3D fine-tune"}
PAPER_LPIPS = {THREE_D_ONLY: 0.161, PRETRAINED: 0.160, FINETUNED: 0.143}  # the paper's ablation (arXiv 2403.12034)
CLIP_HINT = "a local CLIP folder: CLIPModel + tokenizer + image processor (CLIPProcessor.save_pretrained)"
CHAMPION = "champion"  # the registered-model alias eval_metrics moves (champion_checkpoint)


class EvalConfig(StepComputeConfig):
    """Unset fields take the preset's value (tiny: 64 px renders, random CLIP and LPIPS backbones). At small /
    paper a CLIP folder and the LPIPS AlexNet weights are required unless ``from_scratch``. ``device`` /
    ``precision`` override the compute resource for every model of the evaluation."""

    max_objects: int = Field(8, description="Held-out objects scored.")
    novel_views: int = Field(4, description="Novel views scored per object.")
    render_size: int | None = Field(None, description="Render size in pixels (unset: the preset's).")
    clip_path: str | None = Field(None, description="A local CLIP folder (model, tokenizer, image processor); unset "
                                                    "at tiny = RANDOM CLIP.")
    lpips_random_backbone: bool | None = Field(None, description="LPIPS on a random backbone (unset: random at tiny "
                                                                 "and with from_scratch, else the real AlexNet).")
    from_scratch: bool = Field(False, description="small / paper: evaluate with RANDOM CLIP / LPIPS instead of "
                                                  "refusing.")
    turntable_frames: int = Field(8, description="Frames of each checkpoint's turntable preview.")
    seed: int = Field(0, description="Seed of the object and view choice.")

    def check_pretrained(self, preset: str) -> None:
        """Refuse (dg.Failure) a small / paper run without its metric models (see ``check_metric_models``)."""
        check_metric_models(preset, self)


@dataclass
class TrainingSource:
    """What one training input of a checkpoint contributed: sample ids and the captions / prompts they carry."""

    kind: str  # "3d": a renders_3d partition's train split; "synthetic": a filtered partition's kept samples
    uids: set[str]
    captions: list[str]


def training_sources(store: ArtifactStore, manifest: Manifest) -> dict[str, TrainingSource]:
    """Training inputs of a checkpoint by input name, recursively.

    a renders_3d partition contributes its train split (objects.csv uid + caption); a filtered partition its kept
    videos (scores.csv ``kept``) and their prompts (the ``caption.txt`` of the kept samples: the prompt each video
    was generated from); an upstream checkpoint (lrm_pretrained) everything it was trained on, named
    ``<checkpoint> <- <input>``.
    """
    out: dict[str, TrainingSource] = {}
    for name, digest in manifest.inputs.items():
        asset, _, partition = name.partition("/")
        if asset == RENDERS:
            rows = [r for r in objects_csv_rows(store.version(RENDERS, digest, partition or None))
                    if r["split"] == "train"]
            out[name] = TrainingSource("3d", {r["uid"] for r in rows}, [r["caption"] for r in rows])
        elif asset == FILTERED:
            version = store.version(FILTERED, digest, partition)
            kept = {r["video_key"] for r in version.csv_rows("scores.csv") if r["kept"] == "1"}
            out[name] = TrainingSource("synthetic", kept, sample_captions(version, kept))
        elif asset in (PRETRAINED, FINETUNED, THREE_D_ONLY):
            for sub, source in training_sources(store, store.version(asset, digest).manifest).items():
                out[f"{name} <- {sub}"] = source
    return out


def sample_captions(version: ArtifactVersion, keys: set[str]) -> list[str]:
    """``caption.txt`` of the samples ``keys`` in a version's WebDataset tars (member headers and the caption
    members only: the views are not decoded)."""
    captions = []
    for shard in version.shards():
        with tarfile.open(shard, "r:") as tf:
            for member in tf:
                key, _, suffix = member.name.partition(".")
                if member.isfile() and suffix == "caption.txt" and key in keys:
                    captions.append(tf.extractfile(member).read().decode("utf-8"))  # type: ignore[union-attr]
    return captions


def training_steps(store: ArtifactStore, version: ArtifactVersion) -> int:
    """Optimizer steps behind a checkpoint: its own, plus those of the checkpoint it started from."""
    steps = int(version.manifest.counts.get("steps", 0))
    for name in (PRETRAINED, FINETUNED, THREE_D_ONLY):
        if name in version.manifest.inputs:
            steps += training_steps(store, store.version(name, version.manifest.inputs[name]))
    return steps


def heldout_uids(renders: Iterable[ArtifactVersion]) -> set[str]:
    """The held-out uids of renders_3d partition versions."""
    return {r["uid"] for v in renders for r in objects_csv_rows(v) if r["split"] == "heldout"}


def heldout_captions(renders: Iterable[ArtifactVersion]) -> list[str]:
    """The held-out captions of renders_3d partition versions."""
    return [r["caption"] for v in renders for r in objects_csv_rows(v) if r["split"] == "heldout"]


def recorded_renders(store: ArtifactStore, inputs: dict[str, str]) -> list[ArtifactVersion]:
    """The renders_3d partition versions a manifest recorded as inputs (``renders_3d/<partition>``)."""
    return [store.version(RENDERS, digest, name.partition("/")[2] or None) for name, digest in inputs.items()
            if name.partition("/")[0] == RENDERS]


@dataclass
class HeldoutLeakage:
    """Held-out objects found in the checkpoints' training data, by ``<checkpoint> <- <input>``.

    What fails: a held-out uid in any input; a caption of a held-out object found exactly (after prompt
    normalization, case folded) in any input; a near duplicate (MiniLM cosine >= threshold) among the prompts of
    synthetic data. Near duplicates among the 3D training captions are reported only: distinct 3D objects often
    have similar captions (in the procedural world attribute swaps, "a red torus on a blue box" vs "a blue torus
    on a red box", score ~0.99), and the 3D objects themselves are compared by id.
    """

    uids: dict[str, list[str]]
    captions: "LeakageReport | None"  # None: captions not compared
    kinds: dict[str, str] = field(default_factory=dict)  # source -> TrainingSource.kind
    sizes: dict[str, int] = field(default_factory=dict)  # source -> training samples

    def failing(self) -> "LeakageReport | None":
        """The caption matches that fail the check (None when captions were not compared)."""
        from vfusion3d_core.metrics.leakage import LeakageReport, SourceLeaks

        if self.captions is None:
            return None
        sources = {n: SourceLeaks(s.captions, s.exact, s.near if self.kinds[n] == "synthetic" else [])
                   for n, s in self.captions.sources.items()}
        return LeakageReport(self.captions.heldout, self.captions.threshold, sources)

    def reported(self) -> "LeakageReport | None":
        """Near duplicates among 3D training captions: reported, not failing."""
        from vfusion3d_core.metrics.leakage import LeakageReport, SourceLeaks

        if self.captions is None:
            return None
        sources = {n: SourceLeaks(s.captions, [], s.near) for n, s in self.captions.sources.items()
                   if self.kinds[n] == "3d"}
        return LeakageReport(self.captions.heldout, self.captions.threshold, sources)

    @property
    def leaked(self) -> bool:
        failing = self.failing()
        return bool(self.uids) or bool(failing and failing.leaking())

    def describe(self) -> str:
        """The leak in words (one line per leaking source), or what was compared when nothing leaks."""
        lines = [f"{name}: {len(uids)} held-out object id(s) in the training data, e.g. {uids[:3]}"
                 for name, uids in self.uids.items()]
        failing, reported = self.failing(), self.reported()
        if failing is not None and failing.leaking():
            lines.append("held-out captions in the training data:\n" + failing.describe())
        if lines:
            return "Held-out objects leak into training data.\n" + "\n".join(lines)
        text = (f"Held-out objects are disjoint from the training data of every checkpoint: ids of "
                f"{len(self.sizes)} training input(s) compared")
        if self.captions is not None:
            text += (f", {self.captions.heldout} held-out caption(s) compared exactly and by MiniLM cosine >= "
                     f"{self.captions.threshold}")
        if reported is not None and reported.leaking():
            text += ("; reported, not failing (near duplicates among 3D training captions):\n"
                     + reported.describe())
        return text + "."

    def metadata(self) -> dict:
        meta: dict = {"overlap": dg.MetadataValue.json(self.uids),
                      "training_sources": dg.MetadataValue.json(self.sizes)}
        if self.captions is not None:
            failing, reported = self.failing(), self.reported()
            meta["caption_leaks"] = dg.MetadataValue.json(
                {n: s.summary() for n, s in failing.leaking().items()})  # type: ignore[union-attr]
            meta["caption_near_duplicates_reported"] = dg.MetadataValue.json(
                {n: s.summary() for n, s in reported.leaking().items()})  # type: ignore[union-attr]
            meta["heldout_captions"] = self.captions.heldout
            meta["near_duplicate_threshold"] = self.captions.threshold
        return meta


def heldout_leakage(store: ArtifactStore, renders: Iterable[ArtifactVersion], checkpoints: dict[str, ArtifactVersion],
                    embed: "Embedder | None" = None, compare_captions: bool = True,
                    threshold: float = NEAR_DUP_THRESHOLD) -> HeldoutLeakage:
    """Held-out ids and captions (of the renders_3d partitions ``renders``) in each checkpoint's training data,
    recursively through the manifests. ``embed`` defaults to MiniLM (loaded only when captions are compared)."""
    from vfusion3d_core.metrics.leakage import caption_leaks

    renders = list(renders)
    held = heldout_uids(renders)
    sources = {f"{name} <- {source}": s for name, version in checkpoints.items()
               for source, s in training_sources(store, version.manifest).items()}
    uids = {name: sorted(held & s.uids) for name, s in sources.items() if held & s.uids}
    report = None
    if compare_captions:
        if embed is None and sources:  # the model loads in seconds: not for a checkpoint without inputs
            embed = minilm_embedder()
        report = caption_leaks(heldout_captions(renders), {n: s.captions for n, s in sources.items()}, embed,
                               threshold)
    return HeldoutLeakage(uids, report, {n: s.kind for n, s in sources.items()},
                          {n: len(s.uids) for n, s in sources.items()})


def minilm_embedder() -> "Embedder":
    """The MiniLM embedder of caption near duplicates, imported on first use (tests may stand in for this
    function)."""
    from vfusion3d_core.prompts.dedup import minilm_embedder as load

    return load()


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
    from vfusion3d_core.metrics.evaluate import EVAL_RENDER_SIZE, EvaluateRequest, run_evaluation

    name = preset.validated()
    random_lpips = check_metric_models(name, config)
    settings = compute.settings(config)
    store = artifacts.store()
    renders = committed_renders(store)
    versions = {n: require_latest(store, n) for n in CHECKPOINTS if n != UNTRAINED}
    leakage = heldout_leakage(store, renders.versions.values(), versions)
    if leakage.leaked:
        raise dg.Failure(f"refusing to evaluate: {leakage.describe()}", metadata=leakage.metadata())
    size = config.render_size or EVAL_RENDER_SIZE[name]

    with publishing(context, store, mlflow, ASSET, CODE_VERSION) as pub:
        run, staging = pub.run, pub.staging
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
        registered = _registered_checkpoints(run, versions)  # their LoggedModels: this run's inputs
        for ckpt in CHECKPOINTS:
            run.log_metrics({f"{ckpt}.{k}": v for k, v in result.means[ckpt].items()},
                            model_id=model_id_of(registered[ckpt]) if registered.get(ckpt) else None)
        ablation = _ablation_rows(store, versions, result.means)
        described = settings.describe()
        notes = f"{result.objects} held-out objects, {config.novel_views} novel views each at {size} px. " \
                f"CLIP: {result.labels['clip']}. LPIPS: {result.labels['lpips']}. Computed on " \
                f"{described['resolved_device']} ({described['resolved_precision']})."
        files = [*result.files, *_write_summaries(staging, result.means, result.labels, ablation, notes)]
        run_config = {**config.model_dump(), "render_size": size, "lpips_random_backbone": random_lpips,
                      "clip": result.labels["clip"], "lpips": result.labels["lpips"], "compute": described}
        counts = {"checkpoints": len(CHECKPOINTS), "heldout_objects": result.objects}
        version = pub.commit(files, counts, run_config,
                             inputs={**renders.inputs, **{n: v.digest for n, v in versions.items()}})
        run.log_params(run_config)
        renders.log_inputs(run, context="evaluation")
        for n, v in versions.items():
            run.log_input(n, v, context="evaluation")
        for f in ("metrics.csv", "ablation.md", "per_object.csv"):
            run.log_artifact(version.path / f)
        run.log_artifact(version.path / "turntables", "turntables")
        champion = _move_champion(context, run, registered, result.means)
    return _evaluation_result(version, result.means, result.labels, ablation, notes, described, run.run_id, champion)


def champion_checkpoint(means: dict[str, dict[str, float]]) -> str:
    """The rule for ``@champion``: of the trained checkpoints evaluated (``ARMS``), the one with the lowest held-out
    LPIPS; a tie goes to the higher PSNR, then to the earlier in ``ARMS`` order (3D only, synthetic only, synthetic
    then 3D)."""
    return min(ARMS, key=lambda c: (means[c]["lpips"], -means[c]["psnr"]))


def _registered_checkpoints(run: MLflowRun, versions: dict[str, ArtifactVersion]) -> dict:
    """The registered model version of each evaluated checkpoint (None: its artifact was never registered); the
    LoggedModel behind each (none for a version registered from a plain runs:/ folder) is logged as an input of the
    evaluation run."""
    registered = {c: run.registered_version(c, v.digest) for c, v in versions.items()}
    for mv in registered.values():
        if mv is not None and model_id_of(mv):
            run.log_model_input(model_id_of(mv))  # type: ignore[arg-type]
    return registered


def _move_champion(context: dg.AssetExecutionContext, run: MLflowRun, registered: dict,
                   means: dict[str, dict[str, float]]) -> str:
    """Point ``models:/<champion>@champion`` at the evaluated version of ``champion_checkpoint(means)`` and take the
    alias off the other LRM models, so exactly one of them holds it. Returns ``models:/NAME/VERSION``, or "" when
    that checkpoint has no registered version (the alias is left as it was)."""
    best = champion_checkpoint(means)
    if registered.get(best) is None:
        context.log.warning(f"{best} has the best held-out LPIPS but its evaluated version is not a registered "
                            f"model version; @{CHAMPION} left unchanged")
        return ""
    uri = run.set_alias(best, registered[best].version, CHAMPION, rivals=tuple(ARMS))
    context.log.info(f"@{CHAMPION}: {uri} (LPIPS {means[best]['lpips']:.4f}, PSNR {means[best]['psnr']:.2f})")
    return uri


ABLATION_HEADER = ["training data", "checkpoint", "optimizer steps", "LPIPS", "SSIM", "PSNR", "CLIP image",
                   "CLIP text", "paper LPIPS"]


def _ablation_rows(store: ArtifactStore, versions: dict[str, ArtifactVersion], means: dict[str, dict[str, float]]
                  ) -> list[list]:
    """The data-source ablation table (``ABLATION_HEADER``): one row per trained arm, with the paper's LPIPS."""
    return [[ARMS[c], c, training_steps(store, versions[c]), means[c]["lpips"], means[c]["ssim"], means[c]["psnr"],
             means[c]["clip_image"], means[c]["clip_text"], PAPER_LPIPS[c]]
            for c in (THREE_D_ONLY, PRETRAINED, FINETUNED)]


def _write_summaries(staging: Path, means: dict[str, dict[str, float]], labels: dict[str, str], ablation: list[list],
                    notes: str) -> list[str]:
    """ablation.md (the table and ``notes``) and metrics.json (means and metric-model labels) in ``staging``."""
    (staging / "ablation.md").write_text("# Data-source ablation\n\n" + _markdown_table(ABLATION_HEADER, ablation)
                                         + f"\n\n{notes}\n", encoding="utf-8")
    (staging / "metrics.json").write_text(json.dumps({"means": means, "labels": labels}, indent=2, sort_keys=True))
    return ["ablation.md", "metrics.json"]


def _evaluation_result(version: ArtifactVersion, means: dict[str, dict[str, float]], labels: dict[str, str],
                      ablation: list[list], notes: str, described: dict, run_id: str, champion: str = ""
                      ) -> dg.MaterializeResult:
    """The materialization: metrics table, ablation table, turntable previews, metric models, compute."""
    from vfusion3d_core.metrics.novel_views import METRICS

    header = ["checkpoint", *METRICS]
    rows = [[c, *(means[c][m] for m in METRICS)] for c in CHECKPOINTS]
    schema = dg.TableSchema(columns=[dg.TableColumn("checkpoint", "string"),
                                     *(dg.TableColumn(m, "float") for m in METRICS)])
    previews = "\n\n".join(f"**{c}** (input view, then turntable)\n\n"
                            + png_markdown(version.path / "turntables" / f"{c}.png", c) for c in CHECKPOINTS)
    return materialize_result(version, {
        "metrics": dg.MetadataValue.table([dg.TableRecord(dict(zip(header, r, strict=True))) for r in rows], schema),
        "ablation": dg.MetadataValue.md(_markdown_table(ABLATION_HEADER, ablation) + f"\n\n{notes}"),
        "turntables": dg.MetadataValue.md(previews),
        "clip_model": labels["clip"], "lpips_backbone": labels["lpips"],
        "compute": dg.MetadataValue.json(described),
        **{f"{c}/lpips": means[c]["lpips"] for c in CHECKPOINTS},
        "mlflow_run_id": run_id, CHAMPION: dg.MetadataValue.text(champion or "none registered"),
    })


@dg.asset_check(asset=ASSET, blocking=True,
                description="The materialized version's held-out objects are disjoint from every evaluated "
                            "checkpoint's training data "
                            "(recursively through its manifests): no held-out id, no held-out caption (exact after "
                            "prompt normalization), no MiniLM near duplicate among the synthetic data's prompts.")
def eval_heldout_disjoint(context: dg.AssetCheckExecutionContext,
                          artifacts: ArtifactStoreResource) -> dg.AssetCheckResult:
    """Judges the eval_metrics version the latest materialization recorded (the store's current one when the
    check runs alone)."""
    from vfusion3d_pipeline.checks import checked_version, materialized_digest, missing_result

    store = artifacts.store()
    version, why = checked_version(store, ASSET, None, materialized_digest(context, ASSET))
    if version is None:
        return missing_result(why)
    inputs = version.manifest.inputs
    renders = recorded_renders(store, inputs)
    checkpoints = {n: store.version(n, d) for n, d in inputs.items() if n.partition("/")[0] != RENDERS}
    leakage = heldout_leakage(store, renders, checkpoints)
    return dg.AssetCheckResult(passed=not leakage.leaked, description=leakage.describe(),
                               metadata={"heldout_objects": len(heldout_uids(renders)), **leakage.metadata()})
