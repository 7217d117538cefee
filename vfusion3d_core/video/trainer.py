"""Fine-tuning the orbit-video model in three stages on rendered orbits and their captions.

stage "vae"   (from scratch only): reconstruction + KL on single frames;
stage "image" text -> first frame (stage-1 UNet, CFG dropout of the caption);
stage "video" first frame (+ text / CLIP context) -> whole orbit (SVD-style UNet, CFG dropout of the
              conditions); with pretrained weights only the temporal layers train (temporal.py).

Data streams (data.py): each stage reads its own seeded orbit stream in batches; VAE latents and caption
features are computed per batch on the device, so memory never depends on the number of objects. A
from-scratch VAE's latent scaling factor is fitted on the first ``scale_batches`` batches of frames.
One torch.Generator (CPU) drives frame choice, noise and dropout, and a stage's stream is a pure function
of (seed, batches consumed), so a run resumed from a checkpoint (checkpoint.py) continues bit-for-bit like
an uninterrupted one. Forward passes run under ``ComputeSettings.autocast()`` (bf16 where native).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from vfusion3d_core.compute import ComputeSettings
from vfusion3d_core.lrm.train.data import SKIP_COUNTS, StreamPosition, in_stream_order, stream_seed
from vfusion3d_core.steps import MetricLogger
from vfusion3d_core.video.checkpoint import TrainState, list_checkpoints, load_train_state, save_train_state
from vfusion3d_core.video.data import OrbitSource, OrbitStream, orbits_to_float
from vfusion3d_core.video.ema import EMA
from vfusion3d_core.video.model import OrbitVideoModel
from vfusion3d_core.video.networks import vae_encode
from vfusion3d_core.video.noise import TrainingNoise
from vfusion3d_core.video.temporal import freeze_spatial

STAGES = ("vae", "image", "video")
NETWORKS = {"vae": "vae", "image": "image_unet", "video": "video_unet"}


def default_compute(model: OrbitVideoModel) -> ComputeSettings:
    """fp32 on the device the model already sits on (what a caller gets without ComputeSettings)."""
    return ComputeSettings(device=str(model.device), precision="fp32")


class VideoTrainer:
    """Trains ``model`` on ``data`` (an orbit source: OrbitShards or OrbitData); ``checkpoint_dir`` (optional)
    receives periodic atomic checkpoints; ``compute`` sets device, precision and gradient checkpointing."""

    def __init__(self, model: OrbitVideoModel, data: OrbitSource, checkpoint_dir: str | Path | None = None,
                 log: MetricLogger | None = None, log_every: int = 10, compute: ComputeSettings | None = None
                 ) -> None:
        cfg = model.config
        if data.num_frames != cfg.num_frames or data.resolution != cfg.resolution:
            raise ValueError(f"data orbits ({data.num_frames} frames at {data.resolution}px) do not match the "
                             f"model ({cfg.num_frames} frames at {cfg.resolution}px)")
        self.compute = compute or default_compute(model)
        self.device = self.compute.torch_device
        model.to(self.device)
        model.set_gradient_checkpointing(self.compute.gradient_checkpointing)
        self.model, self.data, self.cfg = model, data, cfg
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.log, self.log_every = log, log_every
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.steps = {"vae": cfg.vae_steps if "vae" in cfg.random_components() else 0,
                      "image": cfg.image_steps, "video": cfg.video_steps}
        self.step = 0
        self.stage: str | None = None
        self.scale_fitted = self.steps["vae"] == 0  # a pretrained VAE keeps its own scaling factor
        self.orbits_read = 0  # orbits drawn from the streams by this process (reporting only)
        self.skipped = {name: 0 for name in SKIP_COUNTS.values()}  # bad samples / shards the streams skipped
        self._batches: Iterator[dict] | None = None
        self.history: dict[str, list[float]] = {s: [] for s in STAGES}
        self.noise = {"image": TrainingNoise(model.image_scheduler), "video": TrainingNoise(model.video_scheduler)}
        with torch.no_grad():
            self.null_tokens, _ = model.text_encoder([""])  # [1, L, D] the unconditional (empty prompt) input
        model.text_encoder.requires_grad_(False)

    # --- bookkeeping ------------------------------------------------------------------------------------
    @property
    def total_steps(self) -> int:
        return sum(self.steps.values())

    def stage_at(self, step: int) -> tuple[str, int]:
        """(stage, step within it) of global step ``step`` (< total_steps)."""
        for s in STAGES:
            if step < self.steps[s]:
                return s, step
            step -= self.steps[s]
        raise IndexError(step)

    def _stage_end(self, stage: str) -> int:
        return sum(self.steps[s] for s in STAGES[: STAGES.index(stage) + 1])

    def batch_size(self, stage: str) -> int:
        """Orbits per batch of a stage (the vae stage uses one random frame of each)."""
        return {"vae": self.cfg.vae_batch, "image": self.cfg.image_batch, "video": self.cfg.video_batch}[stage]

    def trainable(self, stage: str) -> dict[str, nn.Parameter]:
        """The parameters a stage trains (and sets requires_grad on them only)."""
        self.model.requires_grad_(False)
        net = getattr(self.model, NETWORKS[stage])
        net.requires_grad_(True)
        if stage == "video" and self.cfg.train_temporal_only:
            freeze_spatial(net)
        return {n: p for n, p in net.named_parameters() if p.requires_grad}

    def _loader(self, tag: str, batches_done: int, batch_size: int) -> Iterator[dict]:
        """Batches of a seeded orbit stream ``tag``, continuing after ``batches_done`` batches."""
        stream = self.data.stream(stream_seed(self.cfg.seed, "video-trainer", tag) % 2**62,
                                  StreamPosition(batches_done, batch_size))
        workers = self.cfg.data_workers if isinstance(stream, OrbitStream) else 0
        loader = iter(DataLoader(stream, batch_size=batch_size, num_workers=workers))
        return in_stream_order(loader, workers, batches_done)

    def _next_batch(self) -> dict:
        assert self._batches is not None
        batch = next(self._batches)
        self.orbits_read += len(batch["caption"])
        for name in SKIP_COUNTS.values():  # bad items the stream skipped before these orbits (OrbitStream only)
            self.skipped[name] += int(batch.pop(name).sum()) if name in batch else 0
        return batch

    def _enter(self, stage: str, step_in_stage: int = 0) -> None:
        cfg = self.cfg
        self.stage = stage
        if stage in ("image", "video") and not self.scale_fitted:
            self._fit_scale()
        params = self.trainable(stage)
        lr = {"vae": cfg.vae_lr, "image": cfg.image_lr,
              "video": cfg.temporal_lr if cfg.train_temporal_only else cfg.video_lr}[stage]
        self.params = params
        self.optimizer = torch.optim.AdamW(list(params.values()), lr=lr, weight_decay=cfg.weight_decay, foreach=True)
        n, warm = self.steps[stage], max(cfg.warmup_steps, 0)

        def schedule(i: int) -> float:
            if i < warm:
                return (i + 1) / (warm + 1)
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, (i - warm) / max(1, n - warm))))

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        self.ema = EMA(params, cfg.ema_decay) if cfg.ema_decay else None
        self._batches = self._loader(stage, step_in_stage, self.batch_size(stage))

    @torch.no_grad()
    def _fit_scale(self) -> None:
        """Scaling factor 1 / std of the VAE latents of the first ``scale_batches`` batches of frames (a bounded
        sample, never the whole data set); streamed, encoded batch by batch on the device."""
        vae = self.model.vae.eval()
        batches = self._loader("scale", 0, self.cfg.vae_batch)
        total = total_sq = count = 0.0
        for _ in range(self.cfg.scale_batches):
            x = orbits_to_float(next(batches)["frames"]).flatten(0, 1).to(self.device)  # [B*F, 3, S, S]
            with self.compute.autocast():
                z = (vae_encode(vae, x) / vae.config.scaling_factor).double()  # [B*F, C, h, w]
            total, total_sq, count = total + float(z.sum()), total_sq + float((z * z).sum()), count + z.numel()
        std = math.sqrt(max(total_sq / count - (total / count) ** 2, 0.0))
        vae.register_to_config(scaling_factor=float(1.0 / max(std, 1e-6)))
        self.scale_fitted = True

    @torch.no_grad()
    def _latents(self, x: torch.Tensor) -> torch.Tensor:
        """Scaled VAE latents (mode, fp32) of images [N, 3, S, S] in [-1, 1] -> [N, C, h, w]."""
        return vae_encode(self.model.vae.eval(), x).float()

    # --- losses -------------------------------------------------------------------------------------------
    def _loss(self, stage: str) -> torch.Tensor:
        cfg, g, dev = self.cfg, self.generator, self.device
        batch = self._next_batch()
        x = orbits_to_float(batch["frames"])  # [B, F, 3, S, S] (CPU)
        b, f = x.shape[:2]
        if stage == "vae":
            pick = torch.randint(0, f, (b,), generator=g)
            x = x[torch.arange(b), pick].to(dev)  # [B, 3, S, S]
            dist = self.model.vae.encode(x).latent_dist
            rec = self.model.vae.decode(dist.sample(g)).sample
            return (rec.float() - x).pow(2).mean() + cfg.vae_kl_weight * dist.kl().float().mean()
        tokens, pooled = self.model.text_encoder(list(batch["caption"]))  # [B, L, D], [B, D] on the device
        if stage == "image":
            drop = (torch.rand(b, generator=g) < cfg.cond_drop_prob).to(dev).view(-1, 1, 1)
            context = torch.where(drop, self.null_tokens, tokens)
            nb = self.noise["image"](self._latents(x[:, 0].to(dev)), g)  # [B, C, h, w]
            out = self.model.image_unet(nb.model_input, nb.timesteps, encoder_hidden_states=context).sample
            return nb.loss(out).mean()
        x = x.to(dev)
        first = x[:, 0]  # [B, 3, S, S]
        aug = torch.randn(first.shape, generator=g).to(dev) * cfg.noise_aug_strength
        keep = (torch.rand(b, generator=g) >= cfg.cond_drop_prob).to(dev).float()
        with torch.no_grad():
            latents = self._latents(x.flatten(0, 1)).unflatten(0, (b, f))  # [B, F, C, h, w]
            cond = self._latents(first + aug) / self.model.vae.config.scaling_factor  # [B, C, h, w]
            ctx = self.model.video_context(first, pooled)  # [B, 1, D]
        cond = (cond * keep.view(b, 1, 1, 1))[:, None].expand(b, f, *cond.shape[1:])  # [B, F, C, h, w]
        ctx = ctx * keep.view(b, 1, 1)
        nb = self.noise["video"](latents, g)
        out = self.model.video_unet(torch.cat([nb.model_input, cond], 2), nb.timesteps, ctx,
                                    self.model.added_time_ids(b)).sample
        return nb.loss(out).mean()

    # --- loop ---------------------------------------------------------------------------------------------
    def train(self, until: int | None = None) -> dict[str, list[float]]:
        """Run to global step ``until`` (default: the end); returns per-stage loss histories."""
        end = self.total_steps if until is None else min(until, self.total_steps)
        while self.step < end:
            stage, _ = self.stage_at(self.step)
            if stage != self.stage:
                self._enter(stage)
            getattr(self.model, NETWORKS[stage]).train()
            with self.compute.autocast():
                loss = self._loss(stage)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(list(self.params.values()), self.cfg.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update()
            self.step += 1
            self.history[stage].append(float(loss.detach()))
            if self.step == self._stage_end(stage) and self.ema is not None:
                self.ema.copy_to_params()
            if self.log and (self.step % self.log_every == 0 or self.step == end):
                self.log({f"loss/{stage}": float(loss.detach()), f"grad_norm/{stage}": float(grad_norm),
                          f"lr/{stage}": self.scheduler.get_last_lr()[0]}, self.step)
            if self.checkpoint_dir and (self.step % self.cfg.checkpoint_every == 0 or self.step == end):
                self.save_checkpoint()
        self.model.eval()
        if self.step >= self.total_steps:
            self._batches = None  # release the stream (and any DataLoader workers)
        return self.history

    # --- checkpoints --------------------------------------------------------------------------------------
    def model_state(self) -> dict[str, torch.Tensor]:
        return {f"{net}.{k}": v for net in NETWORKS.values() for k, v in getattr(self.model, net).state_dict().items()}

    def save_checkpoint(self) -> Path:
        assert self.checkpoint_dir is not None and self.stage is not None
        info = {"stage": self.stage, "scaling_factor": float(self.model.vae.config.scaling_factor),
                "scale_fitted": self.scale_fitted}
        state = TrainState(self.step, self.model_state(), self.optimizer.state_dict(), self.scheduler.state_dict(),
                           self.generator.get_state(), self.ema.state_dict() if self.ema else None, info)
        return save_train_state(self.checkpoint_dir, state)

    def resume(self) -> bool:
        """Continue from the newest complete checkpoint in ``checkpoint_dir``; False when there is none."""
        found = list_checkpoints(self.checkpoint_dir) if self.checkpoint_dir else []
        if not found:
            return False
        state = load_train_state(found[-1])
        for net in NETWORKS.values():
            prefix = f"{net}."
            getattr(self.model, net).load_state_dict({k[len(prefix):]: v for k, v in state.model.items()
                                                      if k.startswith(prefix)})
        self.model.vae.register_to_config(scaling_factor=state.info["scaling_factor"])
        self.scale_fitted = bool(state.info.get("scale_fitted", self.scale_fitted))
        self.step = state.step
        self.generator.set_state(state.generator)
        if self.step < self.total_steps:
            stage, in_stage = self.stage_at(self.step)
            self._enter(stage, in_stage)  # the stage's stream continues after the batches already consumed
            if stage == state.info["stage"]:  # mid-stage: continue its optimizer, schedule and EMA
                self.optimizer.load_state_dict(state.optimizer)
                self.scheduler.load_state_dict(state.scheduler)
                if self.ema is not None and state.ema is not None:
                    self.ema.load_state_dict(state.ema)
        return True
