"""`video_model` (orbit-video model fine-tuned on renders_3d) and `synthetic_videos` (one partition per
prompt shard). GPU work lives in vfusion3d_core.video; this module only wires configs, artifacts and lineage.

(No `from __future__ import annotations` in Dagster modules: Dagster resolves config and resource
annotations at decoration time.)
"""

import hashlib
import itertools
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import torch

from vfusion3d_core.data import Manifest, ManifestError, file_entries, sha256_file
from vfusion3d_core.data.video_sample import iter_video_samples
from vfusion3d_core.prompts.shards import PromptShardError, read_prompt_shard, shard_relpath
from vfusion3d_core.video.config import VideoModelConfig
from vfusion3d_core.video.data import orbit_sheet
from vfusion3d_core.video.finetune import CODE_VERSION as MODEL_CODE_VERSION
from vfusion3d_core.video.finetune import FinetuneResult, finetune_video_model
from vfusion3d_core.video.model import OrbitVideoModel
from vfusion3d_core.video.sampler import SampleSettings
from vfusion3d_core.video.synthesis import CODE_VERSION as SYNTH_CODE_VERSION
from vfusion3d_core.video.synthesis import SynthesisResult, synthesize_shard
from vfusion3d_core.video.trainer import MetricLogger
from vfusion3d_pipeline.assets.renders import ASSET as RENDERS
from vfusion3d_pipeline.gpu_steps import check_execution, step_report
from vfusion3d_pipeline.lineage import array_markdown, materialize_result, require_latest
from vfusion3d_pipeline.partitions import prompt_shards
from vfusion3d_pipeline.resources import ArtifactStoreResource, MLflowResource, PresetResource

MODEL = "video_model"
SYNTHETIC = "synthetic_videos"
PROMPT_SET = "prompt_set"
MODEL_DIR = "model"


def set_threads(n: int | None) -> None:
    """Set torch's intra-op CPU threads for this process when configured."""
    if n is not None:
        if n < 1:
            raise dg.Failure(f"torch_threads must be >= 1, got {n}")
        torch.set_num_threads(n)


class VideoModelAssetConfig(dg.Config):
    """Unset fields take the preset's value (tiny: random-init networks, ~500 training steps on CPU)."""

    vae_steps: int | None = None
    image_steps: int | None = None
    video_steps: int | None = None
    ema_decay: float | None = None
    svd_path: str | None = None  # paper: local Stable Video Diffusion directory
    image_model_path: str | None = None  # paper: local diffusers text-to-image pipeline directory
    text_encoder_path: str | None = None
    scheduler: str | None = None  # euler | dpmpp (default sampler recorded with the model)
    sample_steps: int | None = None
    seed: int = 0
    eval_count: int = 8  # training captions used for the closeness metric
    torch_threads: int | None = None  # CPU threads (1 is fastest on an oversubscribed machine)
    overrides_json: str = "{}"  # any other VideoModelConfig field, as JSON (e.g. micro sizes in tests)
    execution: str = "in_process"  # in_process | pipes (an external process: the preset resource's gpu_steps)

    def to_core(self, preset: str) -> VideoModelConfig:
        fields = {k: v for k, v in self.model_dump().items()
                  if v is not None and k not in ("eval_count", "overrides_json", "torch_threads", "execution")}
        try:
            return VideoModelConfig.preset(preset, **{**fields, **json.loads(self.overrides_json)})
        except (TypeError, ValueError) as exc:
            raise dg.Failure(f"invalid video_model config: {exc}") from exc


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
                preset: PresetResource, mlflow: MLflowResource) -> dg.MaterializeResult:
    cfg = config.to_core(preset.validated())
    check_execution(config.execution)
    set_threads(config.torch_threads)
    store = artifacts.store()
    renders = require_latest(store, RENDERS)
    shards = renders.files_under("train")
    store.clean_staging(MODEL)
    run_key = hashlib.sha256(json.dumps([cfg.to_dict(), renders.digest, MODEL_CODE_VERSION], sort_keys=True,
                                        default=str).encode()).hexdigest()[:16]
    checkpoints = store.asset_dir(MODEL) / ".checkpoints" / run_key  # survives a killed run: the rerun resumes
    with mlflow.run_for(context) as run, store.staging(MODEL) as staging:
        run.log_params({**cfg.to_dict(), "eval_count": config.eval_count})
        run.log_input(RENDERS, renders)
        to_mlflow = run.metric_logger()

        def log(metrics: dict, step: int) -> None:
            to_mlflow(metrics, step)
            if step % 50 == 0:
                context.log.info(f"step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))

        pipes_metadata: dict = {}
        if config.execution == "pipes":
            result, pipes_metadata = _finetune_pipes(context, preset, artifacts, cfg, config, shards,
                                                     staging / MODEL_DIR, {RENDERS: renders.digest}, checkpoints, log)
        else:
            result = finetune_video_model(cfg, shards, staging / MODEL_DIR, {RENDERS: renders.digest}, checkpoints,
                                          log, config.eval_count, context.log.info)
        files = [f"{MODEL_DIR}/{f}" for f in result.files]
        manifest = Manifest(MODEL, file_entries(staging, files), result.counts,
                            {**cfg.to_dict(), "eval_count": config.eval_count}, inputs={RENDERS: renders.digest},
                            code_version=MODEL_CODE_VERSION, run_id=context.run.run_id)
        version = store.commit(staging, manifest, MODEL)
        run.log_metrics({k.replace("/", "_"): v for k, v in result.metrics.items()})
        run.log_output(MODEL, version)
    shutil.rmtree(checkpoints, ignore_errors=True)
    m = result.metrics
    closeness = {k: round(v, 6) for k, v in m.items() if k.startswith(("untrained/", "finetuned/"))}
    context.log.info(f"committed {MODEL} version {version.path.name}: text->video MSE "
                     f"{m['untrained/text_to_video_mse']:.4f} untrained -> {m['finetuned/text_to_video_mse']:.4f}")
    return materialize_result(version, {
        "closeness": dg.MetadataValue.json(closeness),
        "text_to_video_mse/untrained": m["untrained/text_to_video_mse"],
        "text_to_video_mse/finetuned": m["finetuned/text_to_video_mse"],
        "image_to_video_mse/untrained": m["untrained/image_to_video_mse"],
        "image_to_video_mse/finetuned": m["finetuned/image_to_video_mse"],
        "finetuned_closer": m["finetuned/text_to_video_mse"] < m["untrained/text_to_video_mse"],
        "resumed_from_step": result.resumed_from_step,
        "model_card": dg.MetadataValue.path(str(version.path / MODEL_DIR / "README.md")),
        "mlflow_run_id": run.run_id,
        "execution": config.execution, **pipes_metadata,
    })


def _finetune_pipes(context: dg.AssetExecutionContext, preset: PresetResource, artifacts: ArtifactStoreResource,
                    cfg: VideoModelConfig, config: VideoModelAssetConfig, shards: list[str | Path], out_dir: Path,
                    training_data: dict[str, str], checkpoints: Path, log: MetricLogger
                    ) -> tuple[FinetuneResult, dict]:
    """Fine-tune in an external process (vfusion3d_core.video.finetune_pipes_entry) launched through Dagster
    Pipes; its per-step metrics go to ``log`` (MLflow), its result becomes this asset's."""
    extras = {"config": cfg.to_dict(), "render_shards": [str(s) for s in shards], "out_dir": str(out_dir),
              "training_data": training_data, "checkpoint_dir": str(checkpoints), "eval_count": config.eval_count,
              "torch_threads": config.torch_threads}
    invocation = preset.gpu_steps.run(context, "vfusion3d_core.video.finetune_pipes_entry", extras,
                                      artifacts.subprocess_env())
    messages, reported = step_report(invocation)
    for message in messages:
        log(message["metrics"], message["step"])
    if "files" not in reported or not out_dir.is_dir():
        raise dg.Failure("the Pipes fine-tuning step ended without reporting its model")
    result = FinetuneResult(list(reported["files"]), dict(reported["counts"]), dict(reported["metrics"]),
                            int(reported["resumed_from_step"]))
    return result, {"pipes/reported_steps": len(messages)}


class SyntheticVideosConfig(dg.Config):
    """Unset sampler fields take the values saved with the video model."""

    scheduler: str | None = None  # euler | dpmpp
    sample_steps: int | None = None
    image_guidance: float | None = None
    video_guidance_first: float | None = None
    video_guidance_last: float | None = None
    base_seed: int = 0  # a prompt's seed = hash(base_seed, prompt_id)
    batch_size: int | None = None
    samples_per_shard: int = 64
    torch_threads: int | None = None  # CPU threads (1 is fastest on an oversubscribed machine)
    execution: str = "in_process"  # in_process | pipes (an external process: the preset resource's gpu_steps)

    def settings(self, model: OrbitVideoModel) -> SampleSettings:
        s = SampleSettings.from_model(model)
        guidance = (self.video_guidance_first if self.video_guidance_first is not None else s.video_guidance[0],
                    self.video_guidance_last if self.video_guidance_last is not None else s.video_guidance[1])
        out = SampleSettings(self.scheduler or s.scheduler, self.sample_steps or s.steps,
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
    description="Orbit videos generated by video_model for the prompts of one prompt shard (partition): "
                "WebDataset shards of frames + prompt + seed + model digest.",
)
def synthetic_videos(context: dg.AssetExecutionContext, config: SyntheticVideosConfig,
                     artifacts: ArtifactStoreResource, mlflow: MLflowResource, preset: PresetResource
                     ) -> dg.MaterializeResult:
    key = context.partition_key
    set_threads(config.torch_threads)
    store = artifacts.store()
    model_version, prompts = store.latest(MODEL), store.latest(PROMPT_SET)
    if model_version is None or prompts is None:
        raise dg.Failure(f"missing input: video_model={model_version is not None}, prompt_set={prompts is not None}")
    try:
        rel = shard_relpath(key)
        entry = prompts.manifest.file(rel)
    except (KeyError, PromptShardError) as exc:
        raise dg.Failure(f"prompt_set version {prompts.path.name} has no shard {key!r}") from exc
    shard_path = prompts.path / rel
    if sha256_file(shard_path) != entry.sha256:
        raise ManifestError(f"{shard_path} does not match its manifest hash")
    records = read_prompt_shard(shard_path)
    removed = store.clean_staging(SYNTHETIC, key)
    if removed:
        context.log.info(f"removed {removed} staging dir(s) left by interrupted runs")
    check_execution(config.execution)
    if config.execution == "pipes":  # the external step loads the weights; here only the sampler defaults
        model = SimpleNamespace(config=VideoModelConfig.load(model_version.path / MODEL_DIR / "vfusion3d_config.json"))
    else:
        model = OrbitVideoModel.from_pretrained(model_version.path / MODEL_DIR)
    settings = config.settings(model)
    inputs = {MODEL: model_version.digest, f"{PROMPT_SET}/{key}": entry.sha256}

    def progress(done: int, total: int) -> None:
        context.log.info(f"{key}: generated {done}/{total} videos")

    with mlflow.run_for(context) as run, store.staging(SYNTHETIC, key) as staging:
        run_config = {"shard": key, "scheduler": settings.scheduler, "steps": settings.steps,
                      "image_guidance": settings.image_guidance, "video_guidance": list(settings.video_guidance),
                      "base_seed": config.base_seed, "samples_per_shard": config.samples_per_shard}
        run.log_params(run_config)
        run.log_input(MODEL, model_version)
        pipes_metadata: dict = {}
        if config.execution == "pipes":
            extras = {"model_dir": str(model_version.path / MODEL_DIR), "model_digest": model_version.digest,
                      "prompt_shard": str(shard_path), "shard": key, "out_dir": str(staging),
                      "settings": {"scheduler": settings.scheduler, "steps": settings.steps,
                                   "image_guidance": settings.image_guidance,
                                   "video_guidance": list(settings.video_guidance)},
                      "base_seed": config.base_seed, "samples_per_shard": config.samples_per_shard,
                      "batch_size": config.batch_size, "torch_threads": config.torch_threads}
            invocation = preset.gpu_steps.run(context, "vfusion3d_core.video.pipes_entry", extras,
                                              artifacts.subprocess_env())
            messages, reported = step_report(invocation)
            if "files" not in reported:
                raise dg.Failure("the Pipes synthesis step ended without reporting its files")
            result = SynthesisResult(list(reported["files"]), dict(reported["counts"]))
            run.log_metrics({"seconds_per_video": float(reported["seconds_per_video"])})
            pipes_metadata = {"execution": "pipes", "pipes/seconds_per_video": reported["seconds_per_video"],
                              "pipes/progress_messages": len(messages)}
        else:
            result = synthesize_shard(model, model_version.digest, records, key, staging, settings,
                                      config.base_seed, config.samples_per_shard, config.batch_size, progress)
        manifest = Manifest(SYNTHETIC, file_entries(staging, result.files), result.counts, run_config, inputs=inputs,
                            code_version=SYNTH_CODE_VERSION, run_id=context.run.run_id)
        version = store.commit(staging, manifest, SYNTHETIC, key)
        run.log_metrics({f"count_{k}": v for k, v in result.counts.items()})
        run.log_output(SYNTHETIC, version)
    context.log.info(f"committed {SYNTHETIC}/{key} version {version.path.name} ({result.counts['videos']} videos)")
    first = list(itertools.islice(iter_video_samples(sorted(
        version.path / f.path for f in version.manifest.files if f.path.endswith(".tar"))), 4))
    preview = {"preview": array_markdown(orbit_sheet([v.frames for v in first]), "first videos (one per row)")} \
        if first else {}
    return materialize_result(version, {"partition": key, "mlflow_run_id": run.run_id,
                                        "prompt_shard_sha256": entry.sha256, **preview, **pipes_metadata})
