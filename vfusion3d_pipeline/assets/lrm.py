"""The LRM checkpoints of the paper's data-source comparison:

- `lrm_pretrained`: trained on the filtered synthetic multi-view dataset (every partition) — "synthetic only";
- `lrm_finetuned`: lrm_pretrained fine-tuned on the renders_3d train split — "synthetic then 3D" (the same
  steps and stages again at 0.3x the learning rate);
- `lrm_3d_only`: the recipe trained on the renders_3d train split alone — the "3D only" baseline, compute-matched
  to synthetic then 3D: the same total optimizer steps in each resolution stage (the recipe stretched 2x).

Training runs in-process (one CPU/GPU) or as a `torchrun` subprocess for several GPUs; checkpoints go
to a work directory keyed by config + inputs, so a killed run resumes where it stopped when re-run.

(No `from __future__ import annotations` in Dagster modules: Dagster resolves config and resource
annotations at decoration time.)
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field

from vfusion3d_core.compute import ComputeSettings
from vfusion3d_core.data import ArtifactStore, ArtifactVersion, sha256_file
from vfusion3d_core.data.s3_store import S3ArtifactStore, shard_locations
from vfusion3d_core.pretrained import MissingPretrainedError
from vfusion3d_pipeline.asset_keys import FILTERED, FINETUNED, PRETRAINED, RENDERS, THREE_D_ONLY
from vfusion3d_pipeline.assets.renders import committed_renders
from vfusion3d_pipeline.gpu_steps import (
    EXECUTION_HELP,
    Execution,
    GpuStepsConfig,
    check_execution,
    json_overrides,
    step_report,
)
from vfusion3d_pipeline.metadata import materialize_result, require_latest
from vfusion3d_pipeline.publish import publishing
from vfusion3d_pipeline.resources import (
    ArtifactStoreResource,
    ComputeResource,
    MLflowResource,
    PresetResource,
    StepComputeConfig,
)

if TYPE_CHECKING:  # the LRM and its trainer (torch) are imported inside the functions that run them
    from vfusion3d_core.lrm.train import LRMTrainConfig
    from vfusion3d_core.lrm.train.request import LRMTrainRequest

CODE_VERSION = "lrm_train-v1"
MODEL_DIR = "model"
EVAL_OBJECTS = 8  # held-out objects scored after training


class LRMTrainAssetConfig(StepComputeConfig):
    """Unset fields take the preset's recipe (tiny: 200 steps, 32 -> 64 px, random-backbone LPIPS).

    device / precision / gradient_checkpointing (inherited) override the ``compute`` resource.
    dino_pretrained_path: the Dinov2Model.save_pretrained folder the encoder starts from; required at
    small/paper for a run without starting weights, unless from_scratch.
    """

    steps: int | None = Field(None, description="Optimizer steps (unset: the preset recipe's; lrm_3d_only: the "
                                                "compute-matched count).")
    batch_size: int | None = Field(None, description="Samples per optimizer step (unset: the preset recipe's).")
    seed: int = Field(0, description="Seed of initialisation and data order.")
    overrides: dict[str, Any] = Field(default_factory=dict, description="Any other LRMTrainConfig field by name "
                                                                        "(e.g. lr, warmup_steps, checkpoint_every).")
    overrides_json: str = Field("{}", description="Deprecated: overrides as a JSON string (overrides wins on a "
                                                  "shared key).")
    init_official: str | None = Field(None, description="Start from a released VFusion3D weight file instead of "
                                                        "the upstream checkpoint.")
    official_config: str | None = Field(None, description="init_official's config.json (unset: the released "
                                                          "`paper` config).")
    dataset_dir: str | None = Field(None, description="lrm_pretrained: train on the .tar shards in this folder (any "
                                                      "multi-view dataset) instead of filtered_multiview_dataset.")
    min_samples: int = Field(8, description="lrm_pretrained: fail unless the filtered dataset holds at least this "
                                            "many samples.")
    num_processes: int = Field(1, description="Processes of a torchrun launch (>1: DDP, one per GPU).")
    execution: Execution = Field("in_process", description=EXECUTION_HELP)
    dino_pretrained_path: str | None = Field(None, description="Dinov2Model.save_pretrained folder the encoder "
                                                               "starts from (small/paper: required unless "
                                                               "from_scratch or starting weights).")
    from_scratch: bool = Field(False, description="small/paper: allow a randomly initialised encoder.")
    compute_matched: bool = Field(True, description="lrm_3d_only: train as long as synthetic pretraining + "
                                                    "fine-tuning together (every stage twice as long) unless "
                                                    "`steps` is set; false: the plain recipe.")

    def recipe(self, preset: str) -> "LRMTrainConfig":
        from vfusion3d_core.lrm.train import LRMTrainConfig

        fields = {k: v for k, v in {"steps": self.steps, "batch_size": self.batch_size, "seed": self.seed}.items()
                  if v is not None}
        try:
            return LRMTrainConfig.preset(preset, **{**fields, **json_overrides(self.overrides_json, self.overrides)})
        except (TypeError, ValueError) as exc:
            raise dg.Failure(f"invalid LRM training config: {exc}") from exc

    def check_pretrained(self, preset: str, has_init: bool = False) -> None:
        """Refuse (dg.Failure) before any work: a random encoder at small/paper (no ``dino_pretrained_path``,
        no starting weights, no ``from_scratch``), a missing DINOv2 folder, missing LPIPS weights.
        ``has_init``: the asset starts from an upstream checkpoint (``lrm_finetuned``)."""
        from vfusion3d_core.lrm.train.losses import LPIPSUnavailable
        from vfusion3d_core.lrm.train.request import check_training_weights

        init = "upstream" if has_init else self.init_official
        try:
            check_training_weights(self.recipe(preset), init, None if init else self.dino_pretrained_path,
                                   self.from_scratch)
        except (MissingPretrainedError, LPIPSUnavailable) as exc:
            raise dg.Failure(str(exc).replace("from_scratch=True", "from_scratch: true")) from exc


def _external_shards(folder: str) -> tuple[list[Path], dict[str, str]]:
    shards = sorted(Path(folder).glob("**/*.tar"))
    if not shards:
        raise dg.Failure(f"dataset_dir {folder} holds no .tar shards")
    digest = hashlib.sha256("".join(sha256_file(s) for s in shards).encode()).hexdigest()
    return shards, {f"external:{folder}": digest}


def _initial_model(config: LRMTrainAssetConfig, upstream: ArtifactVersion | None) -> tuple[Path | None, dict]:
    """Directory of the starting weights (None = random init) and the lineage entry describing them."""
    if config.init_official:
        path = Path(config.init_official)
        if not path.is_file():
            raise dg.Failure(f"official weight file {path} not found")
        return path, {f"official:{path.name}": sha256_file(path)}
    if upstream is not None:
        return upstream.path / MODEL_DIR, {PRETRAINED: upstream.digest}
    return None, {}


def train_lrm_asset(context: dg.AssetExecutionContext, asset: str, config: LRMTrainAssetConfig,
                    recipe: "LRMTrainConfig", shards: list[str], heldout: list[Path], inputs: dict[str, str],
                    input_versions: dict[str, ArtifactVersion], init: Path | None,
                    artifacts: ArtifactStoreResource, mlflow: MLflowResource,
                    gpu_steps: GpuStepsConfig | None = None,
                    compute: ComputeResource | None = None) -> dg.MaterializeResult:
    """Shared body of the LRM assets: train (resumably), publish the model, log lineage. ``shards`` are
    local paths or s3:// URLs (streamed). The run is one ``LRMTrainRequest`` whichever way it executes."""
    check_execution(config.execution)
    settings = (compute or ComputeResource()).settings(config)
    store = artifacts.store()
    request = _train_request(store, asset, config, recipe, shards, inputs, init, settings)
    work = Path(request.work_dir)
    described = settings.describe()
    context.log.info(f"training {asset}: {recipe.steps} steps on {len(shards)} shard(s) (first {shards[0]}), "
                     f"work dir {work}, compute {described}")
    with publishing(context, store, mlflow, asset, CODE_VERSION) as pub:
        run, staging = pub.run, pub.staging
        run.log_params({**recipe.to_dict(), "num_processes": config.num_processes, "init": str(init),
                        "dino_pretrained_path": str(request.dino_pretrained_path),
                        "from_scratch": config.from_scratch, "compute": described})
        for name, version in input_versions.items():
            run.log_input(name, version)
        metrics, pipes_metadata = _train(context, request, config, gpu_steps, artifacts, run.metric_logger())
        evaluation = _evaluate(context, work / "final", heldout, recipe, settings)
        model_id = run.log_lrm_model(work / "final")  # a LoggedModel (pyfunc), the run's output
        run.log_metrics(evaluation, model_id=model_id)
        files = _stage_model(staging, work / "final", recipe, metrics, evaluation)
        counts = {"steps": recipe.steps, "training_shards": len(shards)}
        manifest_config = {**recipe.to_dict(), "compute": described,
                           "dino_pretrained_path": request.dino_pretrained_path,
                           "from_scratch": config.from_scratch}
        version = pub.commit(files, counts, manifest_config, inputs=inputs)
        run.log_metrics({f"final_{k}": v for k, v in metrics.items()}, model_id=model_id)
        registered = run.register_model(asset, model_id, version)
    shutil.rmtree(work, ignore_errors=True)
    return materialize_result(version, {"final_metrics": dg.MetadataValue.json(metrics),
                                        "heldout_psnr": evaluation["heldout_psnr"],
                                        **{k: int(metrics.get(k, 0)) for k in ("skipped_samples", "skipped_shards")},
                                        "heldout_evaluation": dg.MetadataValue.md(_heldout_table(asset, evaluation)),
                                        "mlflow_run_id": run.run_id, "mlflow_model_id": model_id,
                                        "registered_model": dg.MetadataValue.text(registered),
                                        "compute": dg.MetadataValue.json(described),
                                        "execution": config.execution, **pipes_metadata})


def _train_request(store: ArtifactStore, asset: str, config: LRMTrainAssetConfig, recipe: "LRMTrainConfig",
                   shards: list[str], inputs: dict[str, str], init: Path | None, settings: ComputeSettings
                   ) -> "LRMTrainRequest":
    """The run as one request, its work directory keyed by config + inputs (a killed run resumes there); its
    starting point is checked (dg.Failure) before any work."""
    from vfusion3d_core.lrm.train.losses import LPIPSUnavailable
    from vfusion3d_core.lrm.train.request import LRMTrainRequest

    run_key = hashlib.sha256(json.dumps([recipe.to_dict(), inputs, CODE_VERSION, config.init_official,
                                         config.dino_pretrained_path, config.from_scratch],
                                        sort_keys=True, default=str).encode()).hexdigest()[:16]
    work = store.asset_dir(asset) / ".work" / run_key
    request = LRMTrainRequest(recipe=recipe, shards=[str(s) for s in shards], work_dir=str(work),
                              init=str(init) if init else None, init_official=bool(config.init_official),
                              official_config=config.official_config,
                              dino_pretrained_path=None if init else config.dino_pretrained_path,
                              from_scratch=config.from_scratch, compute=settings)
    try:
        request.check_starting_point()
    except (MissingPretrainedError, LPIPSUnavailable) as exc:
        raise dg.Failure(str(exc).replace("from_scratch=True", "from_scratch: true")) from exc
    return request


def _train(context: dg.AssetExecutionContext, request: "LRMTrainRequest", config: LRMTrainAssetConfig,
           gpu_steps: GpuStepsConfig | None, artifacts: ArtifactStoreResource, log_fn
           ) -> tuple[dict[str, float], dict]:
    """Run ``request`` as ``config`` says (a Pipes step, torchrun, or in this process): final training metrics and
    the Pipes metadata of the materialization (empty unless a Pipes step)."""
    if config.execution == "pipes":
        return _train_pipes(context, gpu_steps or GpuStepsConfig(), request, config, artifacts.subprocess_env(),
                            log_fn)
    if config.num_processes > 1:
        return _train_torchrun(context, request, config.num_processes, artifacts.subprocess_env()), {}
    return _train_in_process(context, request, log_fn), {}


def _stage_model(staging: Path, model_dir: Path, recipe: "LRMTrainConfig", metrics: dict[str, float],
                 evaluation: dict[str, float]) -> list[str]:
    """The trained model, its recipe and its metrics (training and held-out) in ``staging``; their file names."""
    shutil.copytree(model_dir, staging / MODEL_DIR)
    recipe.save(staging / "train_config.json")
    (staging / "metrics.json").write_text(json.dumps({"train": metrics, "heldout": evaluation}, indent=2,
                                                     sort_keys=True))
    files = [f"{MODEL_DIR}/{p.name}" for p in sorted((staging / MODEL_DIR).iterdir())]
    return files + ["train_config.json", "metrics.json"]


def _heldout_table(asset: str, evaluation: dict[str, float]) -> str:
    """Markdown: held-out PSNR of the trained model, the same architecture untrained and a constant colour."""
    return "| model | held-out novel-view PSNR (dB) |\n|---|---|\n" + "\n".join(
        f"| {name} | {evaluation[key]:.2f} |" for name, key in
        [(asset, "heldout_psnr"), ("untrained (same config)", "heldout_psnr_untrained"),
         ("constant colour", "heldout_psnr_constant")])


def _train_pipes(context: dg.AssetExecutionContext, gpu_steps: GpuStepsConfig, request: "LRMTrainRequest",
                 config: LRMTrainAssetConfig, env: dict[str, str], log_fn) -> tuple[dict[str, float], dict]:
    """Train in an external process (vfusion3d_core.lrm.train.pipes_entry) launched through Dagster Pipes; its
    per-step metrics go to MLflow, its final metrics onto this materialization."""
    work = Path(request.work_dir)
    extras = {"request": request.to_dict()}
    invocation = gpu_steps.run(context, "vfusion3d_core.lrm.train.pipes_entry", extras, env, config.num_processes)
    messages, reported = step_report(invocation)
    for message in messages:
        log_fn(message["metrics"], message["step"])
    if "final_metrics" not in reported or not (work / "final").is_dir():
        raise dg.Failure("the Pipes training step ended without reporting its final metrics and model")
    curve = [{"step": m["step"], **{k: round(v, 6) for k, v in m["metrics"].items() if k in ("loss", "lr")}}
             for m in messages]
    metadata = {"pipes/reported_steps": len(messages), "pipes/step": reported.get("step"),
                "pipes/resumed_from_step": reported.get("resumed_from_step"),
                "pipes/world_size": reported.get("world_size"), "pipes/training_curve": dg.MetadataValue.json(curve)}
    return dict(reported["final_metrics"]), metadata


def _evaluate(context: dg.AssetExecutionContext, model_dir: Path, heldout: list[Path], recipe: "LRMTrainConfig",
              compute: ComputeSettings) -> dict[str, float]:
    """Held-out novel-view PSNR of the trained model, the same architecture untrained, and a constant colour,
    on the compute settings' device and precision."""
    import torch

    from vfusion3d_core.lrm import LRM
    from vfusion3d_core.lrm.train.evaluate import evaluate_novel_views

    device = compute.torch_device
    trained = LRM.from_pretrained(model_dir, device)
    torch.manual_seed(recipe.seed)
    untrained = LRM(trained.config).to(device)
    size = recipe.stages[0].patch_size or recipe.stages[0].render_size
    ours = evaluate_novel_views(trained, heldout, size, EVAL_OBJECTS, compute=compute)
    base = evaluate_novel_views(untrained, heldout, size, EVAL_OBJECTS, compute=compute)
    result = {"heldout_psnr": ours["psnr"], "heldout_psnr_untrained": base["psnr"],
              "heldout_psnr_constant": ours["baseline_constant_psnr"], "heldout_objects": ours["objects"]}
    context.log.info("held-out novel views: " + ", ".join(f"{k}={v:.3f}" for k, v in result.items()))
    return result


def _train_in_process(context: dg.AssetExecutionContext, request: "LRMTrainRequest", log_fn) -> dict[str, float]:
    def log(metrics: dict[str, float], step: int) -> None:
        log_fn(metrics, step)
        context.log.info(f"step {step}/{request.recipe.steps}: "
                         + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))

    from vfusion3d_core.lrm.train.request import run_train_request

    outcome = run_train_request(request, log, on_resume=lambda at: context.log.info(f"resuming from step {at}"))
    return outcome.result.last_metrics


def _train_torchrun(context: dg.AssetExecutionContext, request: "LRMTrainRequest", nproc: int, env: dict[str, str]
                    ) -> dict[str, float]:
    recipe = request.recipe
    overrides = [f"{k}={json.dumps(v)}" for k, v in recipe.to_dict().items()]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "vfusion3d_core.lrm.train", "--shards", *request.shards, "--out", request.work_dir,
           "--preset", recipe.model_preset, "--device", request.compute.device,
           "--precision", request.compute.precision, "--set", *overrides]
    if request.compute.gradient_checkpointing:
        cmd.append("--gradient-checkpointing")
    if request.init_official:
        raise dg.Failure("num_processes > 1 with init_official is not supported; convert the released weights "
                         "once (vfusion3d convert) and start from that LRM directory")
    if request.init is not None:
        cmd += ["--init-from", request.init]
    if request.dino_pretrained_path:
        cmd += ["--dino-pretrained", request.dino_pretrained_path]
    if request.from_scratch:
        cmd.append("--from-scratch")
    context.log.info("launching " + " ".join(cmd[:8]) + " ...")
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env})
    if proc.returncode != 0:
        raise dg.Failure(f"torchrun failed ({proc.returncode})", metadata={"stderr": proc.stderr[-5000:]})
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _latest_streamed(store: ArtifactStore, asset: str, partition: str | None = None) -> ArtifactVersion | None:
    """The latest version; on S3 without a local copy of its files (its shards are streamed by URL)."""
    if isinstance(store, S3ArtifactStore):
        return store.latest(asset, partition, materialize=False)
    return store.latest(asset, partition)


def filtered_training_data(store: ArtifactStore, min_samples: int
                           ) -> tuple[list[str], dict[str, str], dict[str, ArtifactVersion]]:
    """Kept-sample shards (paths, or s3:// URLs on S3) of every committed filtered_multiview_dataset partition,
    with their digests."""
    shards: list[str] = []
    inputs: dict[str, str] = {}
    versions: dict[str, ArtifactVersion] = {}
    kept = 0
    for key in store.partitions(FILTERED):
        version = _latest_streamed(store, FILTERED, key)
        if version is None:
            continue
        name = f"{FILTERED}/{key}"
        inputs[name], versions[name] = version.digest, version
        shards += shard_locations(version)
        kept += int(version.manifest.counts.get("kept", 0))
    if not inputs:
        raise dg.Failure(f"{FILTERED} has no committed partition; synthesize and filter at least one prompt shard "
                         f"(job synthesize_and_filter_shard), or set dataset_dir")
    if kept < min_samples:
        raise dg.Failure(f"{FILTERED}: {kept} kept sample(s) over {len(inputs)} partition(s), fewer than "
                         f"min_samples={min_samples}; synthesize more shards or lower the filter threshold")
    return shards, inputs, versions


@dg.asset(
    name=PRETRAINED,
    group_name="lrm",
    deps=[FILTERED, RENDERS],
    pool="gpu",
    kinds={"pytorch"},
    code_version=CODE_VERSION,
    description="Triplane LRM trained on the filtered synthetic multi-view dataset, every partition (or any "
                "shards in the shared schema via dataset_dir): the 'synthetic only' arm of the ablation.",
)
def lrm_pretrained(context: dg.AssetExecutionContext, config: LRMTrainAssetConfig, artifacts: ArtifactStoreResource,
                   preset: PresetResource, mlflow: MLflowResource, compute: ComputeResource) -> dg.MaterializeResult:
    store = artifacts.store()
    renders = committed_renders(store)  # its held-out split scores every model
    versions: dict[str, ArtifactVersion] = dict(renders.named_versions)
    if config.dataset_dir:
        shards, inputs = _external_shards(config.dataset_dir)
    else:
        shards, inputs, filtered = filtered_training_data(store, config.min_samples)
        versions.update(filtered)
        context.log.info(f"training on {len(filtered)} filtered partition(s): {sorted(filtered)}")
    init, init_inputs = _initial_model(config, None)
    return train_lrm_asset(context, PRETRAINED, config, config.recipe(preset.validated()), shards,
                           renders.files_under("heldout"), {**inputs, **renders.inputs, **init_inputs},
                           versions, init, artifacts, mlflow, preset.gpu_steps, compute)


@dg.asset(
    name=THREE_D_ONLY,
    group_name="lrm",
    deps=[RENDERS],
    pool="gpu",
    kinds={"pytorch"},
    code_version=CODE_VERSION,
    description="The LRM recipe trained on the renders_3d train split only, for as many steps per resolution "
                "stage as lrm_pretrained + lrm_finetuned together (compute-matched): the paper's '3D only' "
                "baseline of the data-source ablation.",
)
def lrm_3d_only(context: dg.AssetExecutionContext, config: LRMTrainAssetConfig, artifacts: ArtifactStoreResource,
                preset: PresetResource, mlflow: MLflowResource, compute: ComputeResource) -> dg.MaterializeResult:
    renders = committed_renders(artifacts.store())
    init, init_inputs = _initial_model(config, None)
    recipe = config.recipe(preset.validated())
    if config.compute_matched and config.steps is None:  # as many steps per stage as lrm_pretrained + lrm_finetuned
        recipe = recipe.stretched(2)
    return train_lrm_asset(context, THREE_D_ONLY, config, recipe,
                           renders.shard_locations("train"), renders.files_under("heldout"),
                           {**renders.inputs, **init_inputs}, renders.named_versions, init, artifacts, mlflow,
                           preset.gpu_steps, compute)


@dg.asset(
    name=FINETUNED,
    group_name="lrm",
    deps=[PRETRAINED, RENDERS],
    pool="gpu",
    kinds={"pytorch"},
    code_version=CODE_VERSION,
    description="lrm_pretrained fine-tuned on the renders_3d train split with the same steps and stages at 0.3x "
                "the learning rate (the paper's synthetic -> 3D recipe).",
)
def lrm_finetuned(context: dg.AssetExecutionContext, config: LRMTrainAssetConfig, artifacts: ArtifactStoreResource,
                  preset: PresetResource, mlflow: MLflowResource, compute: ComputeResource) -> dg.MaterializeResult:
    store = artifacts.store()
    renders = committed_renders(store)
    pretrained = None if config.init_official else require_latest(store, PRETRAINED)
    # the pretraining recipe's steps and stages again, at a reduced learning rate (FINETUNE_LR_SCALE)
    recipe = config.recipe(preset.validated()).finetune_recipe()
    init, init_inputs = _initial_model(config, pretrained)
    versions = {**renders.named_versions, **({PRETRAINED: pretrained} if pretrained else {})}
    return train_lrm_asset(context, FINETUNED, config, recipe, renders.shard_locations("train"),
                           renders.files_under("heldout"), {**renders.inputs, **init_inputs}, versions, init,
                           artifacts, mlflow, preset.gpu_steps, compute)
