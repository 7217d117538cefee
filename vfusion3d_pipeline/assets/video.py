"""`video_model` (orbit-video model fine-tuned on renders_3d) and `synthetic_videos` (one partition per
prompt shard). GPU work lives in vfusion3d_core.video; this module only wires configs, artifacts and lineage.

(No `from __future__ import annotations` in Dagster modules: Dagster resolves config and resource
annotations at decoration time.)
"""

import hashlib
import itertools
import json
import shutil
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field

from vfusion3d_core.code_versions import SYNTHETIC_VIDEOS as SYNTH_CODE_VERSION
from vfusion3d_core.code_versions import VIDEO_MODEL as MODEL_CODE_VERSION
from vfusion3d_core.compute import set_torch_threads
from vfusion3d_core.data import ArtifactVersion, ManifestError, sha256_file
from vfusion3d_pipeline.asset_keys import PROMPT_SET, RENDERS, SYNTHETIC, VIDEO_MODEL
from vfusion3d_pipeline.assets.renders import committed_renders
from vfusion3d_pipeline.automation import SYNTHESIZE_NEW_SHARDS
from vfusion3d_pipeline.gpu_steps import EXECUTION_HELP, Execution, check_execution, json_overrides, step_report
from vfusion3d_pipeline.metadata import array_markdown, image_markdown, materialize_result
from vfusion3d_pipeline.partitions import prompt_shards
from vfusion3d_pipeline.publish import publishing
from vfusion3d_pipeline.resources import (
    ArtifactStoreResource,
    ComputeResource,
    MLflowResource,
    PresetResource,
    StepComputeConfig,
)
from vfusion3d_pipeline.tracking import MLflowRun

if TYPE_CHECKING:
    from vfusion3d_core.video.config import VideoModelConfig
    from vfusion3d_core.video.finetune import FinetuneResult
    from vfusion3d_core.video.requests import FinetuneRequest, SynthesisRequest
    from vfusion3d_core.video.sampler import SampleSettings
    from vfusion3d_core.video.synthesis import SynthesisResult
    from vfusion3d_core.video.trainer import MetricLogger

MODEL = VIDEO_MODEL
MODEL_DIR = "model"


class Scheduler(StrEnum):
    """The video sampler (an enum: Dagster config has no optional Literal; a StrEnum equals its string)."""

    euler = "euler"
    dpmpp = "dpmpp"


class VideoModelAssetConfig(StepComputeConfig):
    """Unset fields take the preset's value (tiny: random-init networks, ~500 training steps on CPU).
    ``small``/``paper`` need ``svd_path`` and ``image_model_path`` (local pretrained pipeline folders) unless
    ``from_scratch`` is set; device / precision / gradient_checkpointing override the compute resource."""

    vae_steps: int | None = Field(None, description="VAE fine-tuning steps (unset: the preset's).")
    image_steps: int | None = Field(None, description="Text-to-image model training steps (unset: the preset's).")
    video_steps: int | None = Field(None, description="Orbit-video model training steps (unset: the preset's).")
    ema_decay: float | None = Field(None, description="EMA decay of the video model weights (unset: the preset's).")
    svd_path: str | None = Field(None, description="small/paper: a local Stable Video Diffusion directory.")
    image_model_path: str | None = Field(None, description="small/paper: a local diffusers text-to-image pipeline "
                                                           "directory.")
    text_encoder_path: str | None = Field(None, description="Text encoder folder (unset: image_model_path's own "
                                                            "text_encoder/tokenizer, else MiniLM).")
    from_scratch: bool = Field(False, description="small/paper: train randomly initialised networks instead of "
                                                  "pretrained folders.")
    scheduler: Scheduler | None = Field(None, description="Default sampler recorded with the model "
                                                                          "(unset: the preset's).")
    sample_steps: int | None = Field(None, description="Default sampling steps recorded with the model (unset: the "
                                                       "preset's).")
    seed: int = Field(0, description="Seed of initialisation, data order and evaluation samples.")
    eval_count: int = Field(8, description="Training captions used for the closeness metric.")
    heldout_count: int = Field(4, description="Held-out orbits of the image -> orbit quality (PSNR, LPIPS, colour, "
                                              "consistency).")
    torch_threads: int | None = Field(None, description="CPU threads for torch (1 is fastest on an oversubscribed "
                                                        "machine; unset: torch's default).")
    overrides: dict[str, Any] = Field(default_factory=dict, description="Any other VideoModelConfig field by name "
                                                                        "(e.g. micro sizes in tests).")
    overrides_json: str = Field("{}", description="Deprecated: overrides as a JSON string (overrides wins on a "
                                                  "shared key).")
    execution: Execution = Field("in_process", description=EXECUTION_HELP)

    def to_core(self, preset: str) -> "VideoModelConfig":
        from vfusion3d_core.video.config import VideoModelConfig

        skip = ("eval_count", "heldout_count", "overrides", "overrides_json", "torch_threads", "execution",
                "from_scratch", "device", "precision", "gradient_checkpointing")
        fields = {k: v for k, v in self.model_dump(mode="json").items() if v is not None and k not in skip}
        try:
            return VideoModelConfig.preset(preset, **{**fields, **json_overrides(self.overrides_json, self.overrides)})
        except (TypeError, ValueError) as exc:
            raise dg.Failure(f"invalid video_model config: {exc}") from exc

    def check_pretrained(self, preset: str) -> None:
        """Refuse (dg.Failure) before any work: missing pretrained folders at small/paper, random networks that
        would train 0 steps."""
        from vfusion3d_core.video.finetune import check_pretrained

        try:
            check_pretrained(self.to_core(preset), preset, self.from_scratch)
        except ValueError as exc:
            raise dg.Failure(str(exc)) from exc


@dg.asset(
    name=MODEL,
    group_name="video",
    deps=[RENDERS],
    pool="gpu",
    kinds={"pytorch", "diffusers"},
    code_version=MODEL_CODE_VERSION,
    description="Text -> first frame -> 16-frame orbit video model (diffusers UNet2DConditionModel + "
                "UNetSpatioTemporalConditionModel) fine-tuned on renders_3d orbits; diffusers layout + model card.",
)
def video_model(context: dg.AssetExecutionContext, config: VideoModelAssetConfig, artifacts: ArtifactStoreResource,
                preset: PresetResource, mlflow: MLflowResource, compute: ComputeResource) -> dg.MaterializeResult:
    from vfusion3d_core.video.finetune import HELDOUT_SHEET, finetune_video_model
    from vfusion3d_core.video.requests import FinetuneRequest

    preset_name = preset.validated()
    config.check_pretrained(preset_name)
    cfg = config.to_core(preset_name)
    check_execution(config.execution)
    settings = compute.settings(config)
    set_torch_threads(config.torch_threads)
    store = artifacts.store()
    renders = committed_renders(store)
    shards = renders.files_under("train")
    heldout = renders.files_under("heldout")  # image -> orbit quality on objects the model never trains on
    run_key = hashlib.sha256(json.dumps([cfg.to_dict(), settings.to_dict(), renders.digest, MODEL_CODE_VERSION],
                                        sort_keys=True, default=str).encode()).hexdigest()[:16]
    checkpoints = store.asset_dir(MODEL) / ".checkpoints" / run_key  # survives a killed run: the rerun resumes
    described = settings.describe()
    with publishing(context, store, mlflow, MODEL, MODEL_CODE_VERSION) as pub:
        run, staging = pub.run, pub.staging
        run.log_params({**cfg.to_dict(), "eval_count": config.eval_count, "heldout_count": config.heldout_count,
                        "from_scratch": config.from_scratch, "compute": settings.describe()})
        renders.log_inputs(run)
        to_mlflow = run.metric_logger()

        def log(metrics: dict, step: int) -> None:
            to_mlflow(metrics, step)
            if step % 50 == 0:
                context.log.info(f"step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))

        request = FinetuneRequest(cfg, [str(s) for s in shards], str(staging / MODEL_DIR), renders.inputs,
                                  str(checkpoints), preset_name, config.from_scratch, config.eval_count,
                                  config.torch_threads, settings, [str(s) for s in heldout], config.heldout_count)
        pipes_metadata: dict = {}
        if config.execution == "pipes":
            result, pipes_metadata = _finetune_pipes(context, preset, artifacts, request, log)
        else:
            result = finetune_video_model(request, log, context.log.info)
        files = [f"{MODEL_DIR}/{f}" for f in result.files]
        version = pub.commit(files, result.counts,
                             {**cfg.to_dict(), "eval_count": config.eval_count, "heldout_count": config.heldout_count,
                              "from_scratch": config.from_scratch,
                              "compute": described, "random_init": result.info.get("random_init", [])},
                             inputs=renders.inputs)
        run.log_metrics({k.replace("/", "_"): v for k, v in result.metrics.items()})
    shutil.rmtree(checkpoints, ignore_errors=True)
    m = result.metrics
    closeness = {k: round(v, 6) for k, v in m.items() if k.startswith(("untrained/", "finetuned/"))}
    context.log.info(f"committed {MODEL} version {version.path.name}: text->video MSE "
                     f"{m['untrained/text_to_video_mse']:.4f} untrained -> {m['finetuned/text_to_video_mse']:.4f}")
    info = result.info
    return materialize_result(version, {
        "closeness": dg.MetadataValue.json(closeness),
        "text_to_video_mse/untrained": m["untrained/text_to_video_mse"],
        "text_to_video_mse/finetuned": m["finetuned/text_to_video_mse"],
        "image_to_video_mse/untrained": m["untrained/image_to_video_mse"],
        "image_to_video_mse/finetuned": m["finetuned/image_to_video_mse"],
        "finetuned_closer": m["finetuned/text_to_video_mse"] < m["untrained/text_to_video_mse"],
        **heldout_metadata(m, info, version.path / MODEL_DIR / HELDOUT_SHEET),
        **{k: int(m.get(k, 0)) for k in ("skipped_samples", "skipped_shards")},  # bad training samples skipped
        "resumed_from_step": result.resumed_from_step,
        "random_init": dg.MetadataValue.json({"networks": info.get("random_init", [])}),
        "text_encoder": dg.MetadataValue.json(info.get("text_encoder", {})),
        "temporal_only": bool(info.get("temporal_only", False)),
        "video_trainable_parameters": int(info.get("video_trainable_parameters", 0)),
        "compute": dg.MetadataValue.json(described),
        "counts": dg.MetadataValue.json(result.counts),
        "model_card": dg.MetadataValue.path(str(version.path / MODEL_DIR / "README.md")),
        "mlflow_run_id": run.run_id,
        "execution": config.execution, **pipes_metadata,
    })


HELDOUT_HEADLINES = ("psnr", "lpips", "colour_mean_distance", "colour_hist_distance", "consistency_gap")


def heldout_metadata(metrics: dict[str, float], info: dict, sheet: Path) -> dict:
    """The held-out image -> orbit quality (untrained vs finetuned) as metadata: a JSON table, the headline
    numbers and the generated-vs-true preview sheet; a note when no held-out orbit was measured."""
    table = {f"{when}/{k.split('/', 2)[2]}": round(v, 6) for when in ("untrained", "finetuned")
             for k, v in metrics.items() if k.startswith(f"{when}/heldout/")}
    if not table:
        return {"heldout_quality": "not measured (renders_3d has no held-out shards)"}
    out = {"heldout_quality": dg.MetadataValue.json(table),
           "heldout_lpips_backbone": str(info.get("heldout_lpips", "")),
           **{f"heldout_{k}/{when}": table[f"{when}/{k}"] for k in HELDOUT_HEADLINES for when in
              ("untrained", "finetuned") if f"{when}/{k}" in table}}
    if sheet.is_file():
        out["heldout_orbits"] = image_markdown(sheet, "held-out image -> orbit: untrained, finetuned, true (rows)")
    return out


def _finetune_pipes(context: dg.AssetExecutionContext, preset: PresetResource, artifacts: ArtifactStoreResource,
                    request: "FinetuneRequest", log: "MetricLogger") -> tuple["FinetuneResult", dict]:
    """Fine-tune in an external process (vfusion3d_core.video.finetune_pipes_entry) launched through Dagster
    Pipes with ``request``; its per-step metrics go to ``log`` (MLflow), its result becomes this asset's."""
    from vfusion3d_core.video.finetune import FinetuneResult

    out_dir = Path(request.out_dir)
    invocation = preset.gpu_steps.run(context, "vfusion3d_core.video.finetune_pipes_entry",
                                      {"request": request.to_dict()}, artifacts.subprocess_env())
    messages, reported = step_report(invocation)
    for message in messages:
        log(message["metrics"], message["step"])
    if "files" not in reported or not out_dir.is_dir():
        raise dg.Failure("the Pipes fine-tuning step ended without reporting its model")
    result = FinetuneResult(list(reported["files"]), dict(reported["counts"]), dict(reported["metrics"]),
                            int(reported["resumed_from_step"]), dict(reported.get("info") or {}))
    return result, {"pipes/reported_steps": len(messages)}


class SyntheticVideosConfig(StepComputeConfig):
    """Unset sampler fields take the values saved with the video model; device / precision override the
    compute resource."""

    scheduler: Scheduler | None = Field(None, description="Sampler (unset: the model's).")
    sample_steps: int | None = Field(None, description="Sampling steps (unset: the model's).")
    image_guidance: float | None = Field(None, description="Classifier-free guidance of the text-to-image stage "
                                                           "(unset: the model's).")
    video_guidance_first: float | None = Field(None, description="Video guidance at the first frame (unset: the "
                                                                 "model's).")
    video_guidance_last: float | None = Field(None, description="Video guidance at the last frame (unset: the "
                                                                "model's).")
    base_seed: int = Field(0, description="A prompt's seed = hash(base_seed, prompt_id).")
    batch_size: int | None = Field(None, description="Prompts sampled at a time (unset: the model's default).")
    samples_per_shard: int = Field(64, description="Videos per output WebDataset shard.")
    torch_threads: int | None = Field(None, description="CPU threads for torch (1 is fastest on an oversubscribed "
                                                        "machine; unset: torch's default).")
    execution: Execution = Field("in_process", description=EXECUTION_HELP)

    def settings(self, model_config: "VideoModelConfig") -> "SampleSettings":
        """The sampler settings: these fields over the defaults saved with the model (no weights loaded)."""
        from vfusion3d_core.video.sampler import SampleSettings

        s = SampleSettings.from_config(model_config)
        guidance = (self.video_guidance_first if self.video_guidance_first is not None else s.video_guidance[0],
                    self.video_guidance_last if self.video_guidance_last is not None else s.video_guidance[1])
        out = SampleSettings(str(self.scheduler or s.scheduler), self.sample_steps or s.steps,
                             s.image_guidance if self.image_guidance is None else self.image_guidance, guidance)
        if out.scheduler not in ("euler", "dpmpp") or out.steps < 1:
            raise dg.Failure(f"invalid sampler settings {out}")
        return out


@dg.asset(
    name=SYNTHETIC,
    group_name="video",
    deps=[MODEL, PROMPT_SET],
    partitions_def=prompt_shards,
    pool="gpu",
    kinds={"pytorch", "diffusers", "webdataset"},
    code_version=SYNTH_CODE_VERSION,
    automation_condition=SYNTHESIZE_NEW_SHARDS,
    description="Orbit videos generated by video_model for the prompts of one prompt shard (partition): "
                "WebDataset shards of frames + prompt + seed + model digest.",
)
def synthetic_videos(context: dg.AssetExecutionContext, config: SyntheticVideosConfig,
                     artifacts: ArtifactStoreResource, mlflow: MLflowResource, preset: PresetResource,
                     compute: ComputeResource) -> dg.MaterializeResult:
    from vfusion3d_core.video.config import VideoModelConfig
    from vfusion3d_core.video.requests import SynthesisRequest
    from vfusion3d_core.video.synthesis import run_synthesis

    key = context.partition_key
    compute_settings = compute.settings(config)
    set_torch_threads(config.torch_threads)
    store = artifacts.store()
    model_version, prompts = store.latest(MODEL), store.latest(PROMPT_SET)
    if model_version is None or prompts is None:
        raise dg.Failure(f"missing input: video_model={model_version is not None}, prompt_set={prompts is not None}")
    shard_path, shard_sha256 = _verified_prompt_shard(prompts, key)
    check_execution(config.execution)
    settings = config.settings(VideoModelConfig.load(model_version.path / MODEL_DIR / "vfusion3d_config.json"))
    inputs = {MODEL: model_version.digest, f"{PROMPT_SET}/{key}": shard_sha256}

    def progress(done: int, total: int) -> None:
        context.log.info(f"{key}: generated {done}/{total} videos")

    with publishing(context, store, mlflow, SYNTHETIC, SYNTH_CODE_VERSION, key) as pub:
        run, staging = pub.run, pub.staging
        run_config = {"shard": key, "scheduler": settings.scheduler, "steps": settings.steps,
                      "image_guidance": settings.image_guidance, "video_guidance": list(settings.video_guidance),
                      "base_seed": config.base_seed, "samples_per_shard": config.samples_per_shard}
        run.log_params({**run_config, "compute": compute_settings.describe()})
        run.log_input(MODEL, model_version)
        request = SynthesisRequest(str(model_version.path / MODEL_DIR), model_version.digest, str(shard_path), key,
                                   str(staging), settings, config.base_seed, config.samples_per_shard,
                                   config.batch_size, config.torch_threads, compute_settings)
        pipes_metadata: dict = {}
        if config.execution == "pipes":
            result, pipes_metadata = _synthesis_pipes(context, preset, artifacts, request, run)
        else:
            result = run_synthesis(request, progress)
        version = pub.commit(result.files, result.counts, {**run_config, "compute": compute_settings.describe()},
                             inputs=inputs)
        run.log_metrics({f"count_{k}": v for k, v in result.counts.items()})
    context.log.info(f"committed {SYNTHETIC}/{key} version {version.path.name} ({result.counts['videos']} videos)")
    return materialize_result(version, {"partition": key, "mlflow_run_id": run.run_id,
                                        "compute": dg.MetadataValue.json(compute_settings.describe()),
                                        "prompt_shard_sha256": shard_sha256, **_first_videos_preview(version),
                                        **pipes_metadata})


def _verified_prompt_shard(prompts: ArtifactVersion, key: str) -> tuple[Path, str]:
    """(path, sha256) of prompt shard ``key`` of the prompt_set version, checked against its manifest and read
    once, so a missing or damaged shard fails before any model loading."""
    from vfusion3d_core.prompts.shards import PromptShardError, read_prompt_shard, shard_relpath

    try:
        rel = shard_relpath(key)
        entry = prompts.manifest.file(rel)
    except (KeyError, PromptShardError) as exc:
        raise dg.Failure(f"prompt_set version {prompts.path.name} has no shard {key!r}") from exc
    shard_path = prompts.path / rel
    if sha256_file(shard_path) != entry.sha256:
        raise ManifestError(f"{shard_path} does not match its manifest hash")
    read_prompt_shard(shard_path)
    return shard_path, entry.sha256


def _synthesis_pipes(context: dg.AssetExecutionContext, preset: PresetResource, artifacts: ArtifactStoreResource,
                     request: "SynthesisRequest", run: MLflowRun) -> tuple["SynthesisResult", dict]:
    """Synthesize in an external process (vfusion3d_core.video.pipes_entry) launched through Dagster Pipes with
    ``request``; returns its result and the Pipes metadata of the materialization."""
    from vfusion3d_core.video.synthesis import SynthesisResult

    invocation = preset.gpu_steps.run(context, "vfusion3d_core.video.pipes_entry",
                                      {"request": request.to_dict()}, artifacts.subprocess_env())
    messages, reported = step_report(invocation)
    if "files" not in reported:
        raise dg.Failure("the Pipes synthesis step ended without reporting its files")
    run.log_metrics({"seconds_per_video": float(reported["seconds_per_video"])})
    return SynthesisResult(list(reported["files"]), dict(reported["counts"])), {
        "execution": "pipes", "pipes/seconds_per_video": reported["seconds_per_video"],
        "pipes/progress_messages": len(messages)}


def _first_videos_preview(version: ArtifactVersion) -> dict:
    """A sheet of the version's first 4 videos (one per row) as materialization metadata (none when empty)."""
    from vfusion3d_core.data.video_sample import iter_video_samples
    from vfusion3d_core.video.data import orbit_sheet

    first = list(itertools.islice(iter_video_samples(version.shards()), 4))
    return {"preview": array_markdown(orbit_sheet([v.frames for v in first]), "first videos (one per row)")} \
        if first else {}
