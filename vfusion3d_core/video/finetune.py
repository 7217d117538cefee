"""Fine-tune the orbit-video model on render orbits and save it (the core of the `video_model` asset)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from vfusion3d_core import code_versions
from vfusion3d_core.compute import set_torch_threads
from vfusion3d_core.pretrained import require_pretrained
from vfusion3d_core.video.card import model_card
from vfusion3d_core.video.config import VideoModelConfig
from vfusion3d_core.video.data import OrbitShards, orbit_sheet
from vfusion3d_core.video.metrics import image_to_video_quality, orbit_closeness
from vfusion3d_core.video.model import OrbitVideoModel, text_encoder_reference
from vfusion3d_core.video.requests import FinetuneRequest
from vfusion3d_core.video.trainer import MetricLogger, VideoTrainer

CODE_VERSION = code_versions.VIDEO_MODEL  # vfusion3d_core/code_versions.py: bump it there
HELDOUT_SHEET = "eval/heldout_orbits.png"  # in the model folder: untrained, finetuned, true orbit per object
PRETRAINED_HINTS = {
    "svd_path": "a StableVideoDiffusionPipeline folder: unet/ vae/ image_encoder/ feature_extractor/ scheduler/",
    "image_model_path": "a StableDiffusionPipeline-style folder: unet/ vae/ text_encoder/ tokenizer/ scheduler/",
    "prior_path": "an orbit-video model folder written by OrbitVideoModel.save_pretrained (model_index.json)",
}


@dataclass
class FinetuneResult:
    files: list[str]  # relative to the output directory
    counts: dict[str, int]
    metrics: dict[str, float]  # untrained/* and finetuned/* closeness (heldout/* quality), final losses
    resumed_from_step: int
    info: dict[str, Any] = field(default_factory=dict)  # random components, text encoder, compute, trainable


def check_pretrained(cfg: VideoModelConfig, preset: str, from_scratch: bool) -> None:
    """Refuse to start before any work: ``small``/``paper`` without ``svd_path`` / ``image_model_path``
    (unless ``from_scratch``; MissingPretrainedError naming each path), and any randomly initialised network
    that its stage would train for 0 steps (ValueError)."""
    if cfg.prior_path:  # a whole orbit-video model: nothing else is needed, but it must exist
        require_pretrained(preset, "video_model", {"prior_path": cfg.prior_path}, True, PRETRAINED_HINTS)
    else:
        require_pretrained(preset, "video_model", {"svd_path": cfg.svd_path, "image_model_path": cfg.image_model_path},
                           from_scratch, PRETRAINED_HINTS)
    steps = {"vae": cfg.vae_steps, "image_unet": cfg.image_steps, "video_unet": cfg.video_steps}
    untrained = [f"{name} ({name.split('_')[0]}_steps=0)" for name in cfg.random_components() if steps[name] == 0]
    if untrained:
        raise ValueError("randomly initialised networks would be trained 0 steps: " + ", ".join(untrained)
                         + "; give their pretrained folder or a positive step count")


def load_prior(cfg: VideoModelConfig) -> OrbitVideoModel:
    """The model saved in ``cfg.prior_path``, carrying ``cfg`` (training settings) from now on; ValueError naming
    every architecture field on which the two differ."""
    if not cfg.prior_path:
        raise ValueError("load_prior needs prior_path")
    model = OrbitVideoModel.from_pretrained(cfg.prior_path)
    prior, wanted = model.config.architecture(), cfg.architecture()
    differ = {k: (prior[k], wanted[k]) for k in wanted if prior[k] != wanted[k]}
    if differ:
        raise ValueError(f"prior {cfg.prior_path} has another architecture (prior, config): {differ}")
    model.config = cfg
    return model


def heldout_evaluation(request: FinetuneRequest) -> tuple[OrbitShards | None, torch.nn.Module | None, str]:
    """The held-out orbits of the image -> orbit quality (None without held-out shards), the LPIPS module and its
    label. LPIPS uses the torchvision AlexNet weights of the local torch hub cache when present, otherwise a
    seeded RANDOM backbone (labelled so: a perceptual-ish distance only); nothing is downloaded."""
    from vfusion3d_core.lrm.train.losses import build_lpips, lpips_weights_problem

    if not request.heldout_shards:
        return None, None, "not measured"
    cfg = request.config
    heldout = OrbitShards(request.heldout_shards, cfg.num_frames, cfg.resolution, cfg.shuffle_buffer)
    random_backbone = lpips_weights_problem("alex") is not None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)  # a random backbone comes from torch's RNG: same seed, same scores
        net = build_lpips("alex", random_backbone=random_backbone).to(request.compute.torch_device)
    return heldout, net, "alex (RANDOM backbone)" if random_backbone else "alex"


def finetune_video_model(request: FinetuneRequest, log: MetricLogger | None = None,
                         progress: Callable[[str], None] | None = None) -> FinetuneResult:
    """Train all stages on the orbits streamed from ``request.render_shards``; ``save_pretrained`` into
    ``request.out_dir``.

    The closeness of generated orbits to the real orbits of the first ``eval_count`` training objects
    (only those are read) is measured before (untrained / pretrained weights) and after fine-tuning, with
    the same seeds; so is the image -> orbit quality on the first ``heldout_count`` held-out orbits
    (``heldout/*`` metrics, a preview sheet ``HELDOUT_SHEET`` in the model folder). A run that finds a checkpoint
    in ``checkpoint_dir`` resumes from it exactly.
    """
    cfg, compute = request.config, request.compute
    check_pretrained(cfg, request.preset, request.from_scratch)
    say = progress or (lambda _msg: None)
    set_torch_threads(request.torch_threads or None)
    data = OrbitShards(request.render_shards, cfg.num_frames, cfg.resolution, cfg.shuffle_buffer)
    torch.manual_seed(cfg.seed)
    model = (load_prior(cfg) if cfg.prior_path else OrbitVideoModel.build(cfg)).to(compute.torch_device)
    say(f"model on {compute.torch_device} ({compute.describe()['resolved_precision']}); random init: "
        f"{model.random_components() or 'none'}; measuring the untrained model on {request.eval_count} orbits")
    before = orbit_closeness(model, data, request.eval_count, compute=compute)
    heldout, lpips_net, lpips_label = heldout_evaluation(request)
    if heldout is not None:
        say(f"measuring image -> orbit quality on {request.heldout_count} held-out orbits (LPIPS {lpips_label})")
        q_before, gen_before, true = image_to_video_quality(model, heldout, request.heldout_count, compute=compute,
                                                            lpips_net=lpips_net)
        before.update({f"heldout/{k}": v for k, v in q_before.items()})
    trainer = VideoTrainer(model, data, request.checkpoint_dir, log, compute=compute)
    resumed = trainer.step if trainer.resume() else 0
    if resumed:
        say(f"resumed from checkpoint at step {resumed}")
    say(f"training {trainer.total_steps} steps {trainer.steps}")
    history = trainer.train()
    after = orbit_closeness(model, data, request.eval_count, compute=compute)
    if heldout is not None:
        q_after, gen_after, _ = image_to_video_quality(model, heldout, request.heldout_count, compute=compute,
                                                       lpips_net=lpips_net)
        after.update({f"heldout/{k}": v for k, v in q_after.items()})
    metrics = {**{f"untrained/{k}": v for k, v in before.items()}, **{f"finetuned/{k}": v for k, v in after.items()}}
    metrics.update({f"final_loss/{s}": sum(h[-10:]) / len(h[-10:]) for s, h in history.items() if h})
    metrics.update({k: float(v) for k, v in trainer.skipped.items()})  # bad training samples skipped (this run)
    text_ref = text_encoder_reference(model.text_encoder)
    video_trainable = trainer.trainable("video") if cfg.video_steps else {}
    info = {"random_init": model.random_components(), "text_encoder": text_ref, "compute": compute.describe(),
            "temporal_only": cfg.train_temporal_only, "latent_size": model.latent_size,
            "video_trainable_parameters": sum(p.numel() for p in video_trainable.values()),
            "video_parameters": sum(p.numel() for p in model.video_unet.parameters()),
            "heldout_lpips": lpips_label if heldout is not None else "not measured (no held-out shards)"}
    model.requires_grad_(False)
    card = model_card(cfg, request.training_data, metrics, CODE_VERSION, text_ref, info)
    out = model.save_pretrained(request.out_dir, card)
    if heldout is not None:
        sheet = orbit_sheet([v for i in range(len(true)) for v in (gen_before[i], gen_after[i], true[i])])
        (out / HELDOUT_SHEET).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(sheet).save(out / HELDOUT_SHEET)
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    n = data.count()
    counts = {"training_orbits": n, "frames": n * cfg.num_frames, "orbits_streamed": trainer.orbits_read,
              "heldout_orbits": len(true) if heldout is not None else 0,
              **{f"steps_{s}": k for s, k in trainer.steps.items()}}
    return FinetuneResult(files, counts, metrics, resumed, info)
