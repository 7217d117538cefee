"""The data-source ablation, end to end: does synthetic multi-view data from a video model with a prior the 3D set
lacks train a better LRM than the scarce 3D set alone? (docs/ablation.md)

Stages (each resumable, stages.py), in order:

1. ``populations``: held-out, validation, 3D set, clip population and prompt objects, disjoint (populations.py);
2. ``renders``: posed 16-view orbits of the held-out, validation, 3D-set and prompt objects (the last are the
   oracle arm's data: clean renders of exactly the objects the prompts describe);
3. ``clips``: unposed clips of the clip population (video/clips.py);
4. ``video_prior``: the video model trained from scratch on the clips;
5. ``video_model``: the prior fine-tuned on the 3D set's posed orbits (temporal layers of stage 2, a short
   stage-1 adaptation), with held-out image -> orbit quality before (prior) and after;
6. ``synthesis``: one video per prompt (the prompt objects' captions);
7. ``quality_models`` and ``filtered``: the quality SVM and elevation MLP trained on the 3D set's orbits; the first
   ``dose`` videos filtered into posed multi-view shards, per dose; mask error on renders with exact alpha;
8. ``lr_search``: the 3D-only arm at each learning-rate candidate, scored on the validation objects;
9. ``arm-<name>-seed<k>``: every arm (arms.py) at every seed with the chosen learning rate;
10. ``evaluation``: every checkpoint (and the untrained architecture) on the held-out objects.

``run_ablation`` returns the numbers; report.py turns them into the table, the dose-response plot and the verdict.
"""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vfusion3d_core.ablation.arms import (
    THREE_D,
    Arm,
    ablation_arms,
    checkpoint_name,
    oracle_data,
    synthetic_data,
    train_arm,
)
from vfusion3d_core.ablation.config import AblationConfig
from vfusion3d_core.ablation.populations import Populations, build_populations, check_disjoint
from vfusion3d_core.ablation.stages import StageRunner, key_digest
from vfusion3d_core.compute import ComputeSettings, set_torch_threads
from vfusion3d_core.data.video_sample import iter_video_samples
from vfusion3d_core.filtering.extract import filter_videos
from vfusion3d_core.filtering.features import DinoConfig, DinoFeaturizer
from vfusion3d_core.filtering.masks import render_mask_quality
from vfusion3d_core.filtering.models import QualityModels, QualityTrainConfig, read_orbits, train_quality_models
from vfusion3d_core.lrm.train.losses import lpips_weights_problem
from vfusion3d_core.metrics.evaluate import EvaluateRequest, run_evaluation
from vfusion3d_core.prompts.dedup import Embedder, minilm_embedder
from vfusion3d_core.prompts.shards import PromptRecord
from vfusion3d_core.render.dataset import RenderSettings, render_objects
from vfusion3d_core.video.clips import ClipSettings, render_clips
from vfusion3d_core.video.config import VideoModelConfig
from vfusion3d_core.video.finetune import finetune_video_model
from vfusion3d_core.video.model import OrbitVideoModel
from vfusion3d_core.video.requests import FinetuneRequest
from vfusion3d_core.video.sampler import SampleSettings
from vfusion3d_core.video.synthesis import synthesize_shard

CODE_VERSION = "ablation-v1"
RENDERED_ROLES = ("heldout", "validation", "train3d", "prompts")
ELEVATION_RANGE = (0.0, 45.0)


@dataclass
class AblationRun:
    """What a run measured: per-stage results, the chosen learning rate, the held-out means per checkpoint
    (``checkpoint_name(arm, seed)`` and ``"untrained"``), per-arm training summaries, stage timings, reused stages."""

    config: AblationConfig
    work_dir: Path
    stages: dict[str, dict] = field(default_factory=dict)
    lr: float = 0.0
    heldout: dict[str, dict[str, float]] = field(default_factory=dict)
    arms: list[Arm] = field(default_factory=list)
    trained: dict[str, dict] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    reused: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)

    def stage_dir(self, name: str) -> Path:
        return self.work_dir / name


def shards_in(folder: Path) -> list[str]:
    """The tar shards of a folder, in name order."""
    return [str(p) for p in sorted(folder.glob("*.tar"))]


def run_ablation(cfg: AblationConfig, work_dir: str | Path, compute: ComputeSettings | None = None,
                 log: Callable[[str], None] | None = None, embed: Embedder | None = None) -> AblationRun:
    """Run (or resume) every stage under ``work_dir``; see the module docstring."""
    compute = compute or ComputeSettings()
    say = log or (lambda _m: None)
    set_torch_threads(cfg.torch_threads)
    runner = StageRunner(work_dir, say)
    run = AblationRun(cfg, runner.work)

    def stage(name: str, key: object, build: Callable[[Path], dict]) -> tuple[Path, dict]:
        path, result = runner.run(name, {"code": CODE_VERSION, "key": key}, build)
        run.stages[name] = result
        return path, result

    # 1. populations
    sizes = {"heldout": cfg.heldout_objects, "validation": cfg.validation_objects, "train3d": cfg.train_objects,
             "clips": cfg.clip_objects, "prompts": cfg.max_dose}

    def populations(tmp: Path) -> dict:
        embedder = embed or minilm_embedder()  # loaded only when the stage is built, not when it is reused
        pop = build_populations(sizes, cfg.world_seed, embedder)
        summary = check_disjoint(pop, embedder)  # blocking: LeakageError before any compute
        (tmp / "populations.json").write_text(json.dumps(pop.to_dict()))
        return summary

    pop_dir, _ = stage("populations", [sizes, cfg.world_seed], populations)
    pop = Populations.from_dict(json.loads((pop_dir / "populations.json").read_text()))
    pop_key = key_digest(pop.to_dict())

    # 2. posed renders (held-out / validation / 3D set / oracle) and 3. clips
    settings = RenderSettings(resolution=cfg.resolution, num_views=cfg.num_frames, seed=cfg.world_seed,
                              samples_per_shard=64)

    def renders(tmp: Path) -> dict:
        out = {}
        for role in RENDERED_ROLES:
            result = render_objects(pop.roles[role], settings, tmp / role, world_seed=cfg.world_seed,
                                    progress=_every(say, f"renders/{role}", 100))
            out[role] = {**result.counts, "skipped": [f"{s.path}: {s.reason}" for s in result.skipped]}
        return out

    render_dir, _ = stage("renders", [pop_key, settings.__dict__], renders)
    renders_key = key_digest(run.stages["renders"])
    shards = {role: shards_in(render_dir / role / ("heldout" if role == "heldout" else "train"))
              for role in RENDERED_ROLES}
    clip_settings = ClipSettings(resolution=cfg.resolution, num_frames=cfg.num_frames, seed=cfg.world_seed)

    def clips(tmp: Path) -> dict:
        counts, skipped = render_clips(pop.roles["clips"], clip_settings, tmp, cfg.world_seed,
                                       progress=_every(say, "clips", 100))
        return {**counts, "skipped_items": skipped}

    clip_dir, _ = stage("clips", [pop_key, clip_settings.__dict__], clips)

    # 4. video prior, 5. posed fine-tune
    video_dir = _video_stages(cfg, stage, runner, shards, shards_in(clip_dir), renders_key, compute, say)

    # 6. synthesis
    records = [PromptRecord(r.uid, r.caption) for r in pop.roles["prompts"]]
    video_key = key_digest(run.stages["video_model"])

    def synthesis(tmp: Path) -> dict:
        model = OrbitVideoModel.from_pretrained(video_dir / "model").to(compute.torch_device)
        sampling = SampleSettings.from_config(model.config)
        result = synthesize_shard(model, video_key, records, "ablation", tmp, sampling, base_seed=cfg.world_seed,
                                  samples_per_shard=64, compute=compute,
                                  progress=_every(say, "synthesis", max(1, len(records) // 10)))
        return result.counts

    synth_dir, _ = stage("synthesis", [video_key, [r.prompt_id for r in records]], synthesis)
    videos = shards_in(synth_dir)

    # 7. quality models + filtering per dose
    dino = DinoConfig(seed=cfg.world_seed)

    def quality(tmp: Path) -> dict:
        featurizer = DinoFeaturizer.build(dino, compute)
        models = train_quality_models(featurizer, read_orbits(shards[THREE_D]), read_orbits(shards["validation"]),
                                      [], [], QualityTrainConfig(seed=cfg.world_seed), ELEVATION_RANGE)
        models.save(tmp / "models")
        return models.info["metrics"]

    quality_dir, _ = stage("quality_models", [renders_key, dino.__dict__], quality)

    def filtered(tmp: Path) -> dict:
        models = QualityModels.load(quality_dir / "models", compute)
        out: dict = {"masks": render_mask_quality(shards["heldout"], count=4)}
        for dose in (d for d in cfg.doses if d > 0):
            result = filter_videos(lambda dose=dose: itertools.islice(iter_video_samples(videos), dose), models,
                                   tmp / f"dose-{dose}", f"dose-{dose}", cfg.filter_threshold, 64, 16,
                                   min_keep_fraction=cfg.filter_min_keep_fraction)
            out[f"dose-{dose}"] = result.counts
        return out

    filter_dir, _ = stage("filtered", [video_key, key_digest(run.stages["synthesis"]),
                                       key_digest(run.stages["quality_models"]), cfg.doses, cfg.filter_threshold,
                                       cfg.filter_min_keep_fraction], filtered)
    data = {THREE_D: shards[THREE_D]}
    for dose in (d for d in cfg.doses if d > 0):
        data[synthetic_data(dose)] = shards_in(filter_dir / f"dose-{dose}")
    data[oracle_data(cfg.max_dose)] = shards["prompts"]
    data_key = data_keys(data, run.stages)

    # 8. learning rate on the validation split, 9. arms x seeds, 10. held-out evaluation
    run.lr = _choose_lr(cfg, stage, runner, data, data_key, shards["validation"], compute, run)
    run.arms = ablation_arms(cfg)
    checkpoints: dict[str, str | None] = {}
    for arm, seed in itertools.product(run.arms, cfg.seeds):
        name = f"arm-{arm.name}-seed{seed}"
        path, result = stage(name, arm_key(cfg, arm, run.lr, seed, data_key),
                             lambda tmp, arm=arm, seed=seed, name=name: train_arm(
                                 arm, cfg, run.lr, seed, data, runner.work / "checkpoints" / name, tmp, compute))
        checkpoints[checkpoint_name(arm, seed)] = str(path / "final")
        run.trained[checkpoint_name(arm, seed)] = result
    checkpoints["untrained"] = None
    eval_key = {name: key_digest(result) for name, result in run.trained.items()}

    def evaluation(tmp: Path) -> dict:
        request = heldout_request(cfg, checkpoints, shards["heldout"], tmp, compute, cfg.heldout_objects)
        result = run_evaluation(request, say)
        return {"means": result.means, "labels": result.labels, "objects": result.objects}

    _, result = stage("evaluation", [eval_key, renders_key, cfg.heldout_objects,
                                     cfg.heldout_views, cfg.resolution], evaluation)
    run.heldout, run.labels = result["means"], result["labels"]
    run.timings, run.reused = runner.timings, runner.reused
    return run


def data_keys(data: dict[str, list[str]], stages: dict[str, dict]) -> dict[str, str]:
    """Each LRM data name keyed by the result of the stage that made it and its shard names, so an arm retrains
    only when its own data changed."""
    made_by = {name: "filtered" if name.startswith("synthetic") else "renders" for name in data}
    return {name: key_digest([key_digest(stages[made_by[name]]), [Path(s).name for s in shards]])
            for name, shards in data.items()}


def arm_key(cfg: AblationConfig, arm: Arm, lr: float, seed: int, data_key: dict[str, str]) -> list:
    """What an arm's checkpoint depends on: its phases' data, the recipe, the learning rate and the seed."""
    return [arm.phases, lr, seed, [data_key[p] for p in arm.phases], cfg.lrm_recipe(lr, seed).to_dict(),
            cfg.finetune_lr_scale]


def lr_search_key(cfg: AblationConfig, data_key: dict[str, str], stages: dict[str, dict]) -> list:
    """What the learning-rate choice depends on: the candidates, the 3D set, the validation renders, the recipe."""
    return [cfg.lr_candidates, cfg.seeds[0], data_key[THREE_D], key_digest(stages["renders"]), cfg.validation_objects,
            cfg.lrm_recipe(1.0, cfg.seeds[0]).to_dict()]


def _video_stages(cfg: AblationConfig, stage: Callable, runner: StageRunner, shards: dict[str, list[str]],
                  clip_shards: list[str], renders_key: str, compute: ComputeSettings, say: Callable[[str], None]
                  ) -> Path:
    """The video prior on the clips, then its posed fine-tune on the 3D set; returns the fine-tune's stage dir
    (the model in ``model/``). Keys name inputs by content (``renders_key``, the prior's result), never by path, so
    a moved work dir keeps its finished stages."""
    def train(name: str, config: VideoModelConfig, data: list[str]) -> Callable[[Path], dict]:
        def log_losses(metrics: dict[str, float], step: int) -> None:
            if step % 100 == 0:
                say(f"[{name}] step {step}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()
                                                          if k.startswith("loss")))

        def build(tmp: Path) -> dict:
            request = FinetuneRequest(config, data, str(tmp / "model"),
                                      checkpoint_dir=str(runner.work / "checkpoints" / name), eval_count=4,
                                      heldout_shards=shards["heldout"], heldout_count=cfg.video_heldout_orbits,
                                      compute=compute, torch_threads=cfg.torch_threads)
            result = finetune_video_model(request, log_losses, progress=lambda m: say(f"[{name}] {m}"))
            return {"metrics": result.metrics, "counts": result.counts, "info": result.info}
        return build

    prior_cfg = cfg.video_prior_config()
    prior_dir, prior = stage("video_prior", [prior_cfg.to_dict(), [Path(s).name for s in clip_shards], renders_key],
                             train("video_prior", prior_cfg, clip_shards))
    tuned_cfg = cfg.video_finetune_config(str(prior_dir / "model"))
    tuned_key = {**tuned_cfg.to_dict(), "prior_path": None}  # the prior enters by its result
    video_dir, _ = stage("video_model", [tuned_key, key_digest(prior), renders_key],
                         train("video_model", tuned_cfg, shards[THREE_D]))
    return video_dir


def heldout_request(cfg: AblationConfig, checkpoints: dict[str, str | None], shards: list[str], out: Path,
                    compute: ComputeSettings, objects: int) -> EvaluateRequest:
    """The evaluation of ``checkpoints`` (None = untrained) on the first ``objects`` objects of ``shards``."""
    first = next(k for k, v in checkpoints.items() if v is not None)
    return EvaluateRequest(checkpoints, shards, str(out), untrained_config_from=first, max_objects=objects,
                           novel_views=cfg.heldout_views, render_size=cfg.resolution, turntable_frames=8,
                           lpips_random_backbone=lpips_weights_problem("alex") is not None, seed=0, compute=compute)


def _choose_lr(cfg: AblationConfig, stage: Callable, runner: StageRunner, data: dict[str, list[str]],
               data_key: dict, validation: list[str], compute: ComputeSettings, run: AblationRun) -> float:
    """The learning rate of the 3D-only arm (first seed) with the best validation PSNR; never the held-out set."""
    arm = Arm("3d_only", (THREE_D,))
    seed = cfg.seeds[0]

    def search(tmp: Path) -> dict:
        scores = {}
        for lr in cfg.lr_candidates:
            work = tmp / f"lr-{lr:g}"
            train_arm(arm, cfg, lr, seed, data, runner.work / "checkpoints" / f"lr_search-{lr:g}", work, compute)
            request = heldout_request(cfg, {"candidate": str(work / "final")}, validation, work / "eval", compute,
                                    cfg.validation_objects)
            scores[f"{lr:g}"] = run_evaluation(request).means["candidate"]
            shutil.rmtree(work / "final")  # only the score is kept
        return {"scores": scores, "chosen": max(scores, key=lambda k: scores[k]["psnr"])}

    _, result = stage("lr_search", lr_search_key(cfg, data_key, run.stages), search)
    return float(result["chosen"])


def _every(say: Callable[[str], None], what: str, step: int) -> Callable[[int, int], None]:
    """A progress callback logging "[what] done/total" each time ``done`` passes a multiple of ``step``, and at the
    end."""
    logged = [0]

    def progress(done: int, total: int) -> None:
        if done // step > logged[0] or done == total:
            logged[0] = done // step
            say(f"[{what}] {done}/{total}")
    return progress
