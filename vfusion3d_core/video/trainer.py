"""Fine-tuning the orbit-video model in three stages on rendered orbits and their captions.

stage "vae"   (from scratch only): reconstruction + KL on single frames;
stage "image" text -> first frame (stage-1 UNet, CFG dropout of the caption);
stage "video" first frame (+ text / CLIP context) -> whole orbit (SVD-style UNet, CFG dropout of the
              conditions); with pretrained weights only the temporal layers train (temporal.py).
One torch.Generator drives batch choice, noise and dropout, so a run resumed from a checkpoint
(checkpoint.py) continues bit-for-bit like an uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from vfusion3d_core.video.checkpoint import TrainState, list_checkpoints, load_train_state, save_train_state
from vfusion3d_core.video.data import OrbitData
from vfusion3d_core.video.ema import EMA
from vfusion3d_core.video.model import OrbitVideoModel
from vfusion3d_core.video.networks import vae_encode
from vfusion3d_core.video.noise import TrainingNoise
from vfusion3d_core.video.temporal import freeze_spatial

STAGES = ("vae", "image", "video")
NETWORKS = {"vae": "vae", "image": "image_unet", "video": "video_unet"}
MetricLogger = Callable[[dict[str, float], int], None]


class VideoTrainer:
    """Trains ``model`` on ``data``; ``checkpoint_dir`` (optional) receives periodic atomic checkpoints."""

    def __init__(self, model: OrbitVideoModel, data: OrbitData, checkpoint_dir: str | Path | None = None,
                 log: MetricLogger | None = None, log_every: int = 10) -> None:
        cfg = model.config
        if data.num_frames != cfg.num_frames or data.frames.shape[2] != cfg.resolution:
            raise ValueError(f"data orbits {tuple(data.frames.shape[1:3])} do not match the model "
                             f"({cfg.num_frames} frames at {cfg.resolution}px)")
        self.model, self.data, self.cfg = model, data, cfg
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.log, self.log_every = log, log_every
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.steps = {"vae": cfg.vae_steps if cfg.svd_path is None and cfg.image_model_path is None else 0,
                      "image": cfg.image_steps, "video": cfg.video_steps}
        self.step = 0
        self.stage: str | None = None
        self.latents: torch.Tensor | None = None  # [N, F, C, h, w] scaled video latents of the data
        self.history: dict[str, list[float]] = {s: [] for s in STAGES}
        self.noise = {"image": TrainingNoise(model.image_scheduler), "video": TrainingNoise(model.video_scheduler)}
        dev = model.device
        with torch.no_grad():
            self.tokens, self.pooled = (t.to(dev) for t in model.text_encoder(list(data.captions)))
            null_tokens, _ = model.text_encoder([""])
        self.null_tokens = null_tokens.to(dev)
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

    def trainable(self, stage: str) -> dict[str, nn.Parameter]:
        """The parameters a stage trains (and sets requires_grad on them only)."""
        self.model.requires_grad_(False)
        net = getattr(self.model, NETWORKS[stage])
        net.requires_grad_(True)
        if stage == "video" and self.cfg.train_temporal_only:
            freeze_spatial(net)
        return {n: p for n, p in net.named_parameters() if p.requires_grad}

    def _enter(self, stage: str) -> None:
        cfg = self.cfg
        self.stage = stage
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
        if stage in ("image", "video") and self.latents is None:
            self.latents = self._encode_dataset()

    @torch.no_grad()
    def _encode_dataset(self) -> torch.Tensor:
        """Scaled VAE latents [N, F, C, h, w] of every frame; a VAE trained here gets scale 1 / std."""
        vae = self.model.vae.eval()
        x = self.data.frames.flatten(0, 1)  # [N*F, S, S, 3]
        chunks = [vae_encode(vae, x[i:i + 64].permute(0, 3, 1, 2).float().to(self.model.device) / 127.5 - 1)
                  for i in range(0, x.shape[0], 64)]
        z = torch.cat(chunks) / vae.config.scaling_factor
        if self.steps["vae"] > 0:
            vae.register_to_config(scaling_factor=float(1.0 / z.std().clamp_min(1e-6)))
        z = z * vae.config.scaling_factor
        return z.unflatten(0, (len(self.data), self.data.num_frames))

    # --- losses -------------------------------------------------------------------------------------------
    def _batch_index(self, size: int) -> torch.Tensor:
        return torch.randint(0, len(self.data), (size,), generator=self.generator)

    def _loss(self, stage: str) -> torch.Tensor:
        cfg, g, dev = self.cfg, self.generator, self.model.device
        if stage == "vae":
            idx = self._batch_index(cfg.vae_batch)
            f = torch.randint(0, self.data.num_frames, (cfg.vae_batch,), generator=g)
            x = self.data.batch(idx)[torch.arange(cfg.vae_batch), f].to(dev)  # [B, 3, S, S]
            dist = self.model.vae.encode(x).latent_dist
            rec = self.model.vae.decode(dist.sample(g)).sample
            return (rec - x).pow(2).mean() + cfg.vae_kl_weight * dist.kl().mean()
        assert self.latents is not None
        if stage == "image":
            idx = self._batch_index(cfg.image_batch)
            drop = (torch.rand(len(idx), generator=g) < cfg.cond_drop_prob).to(dev).view(-1, 1, 1)
            context = torch.where(drop, self.null_tokens, self.tokens[idx])
            nb = self.noise["image"](self.latents[idx, 0], g)
            out = self.model.image_unet(nb.model_input, nb.timesteps, encoder_hidden_states=context).sample
            return nb.loss(out).mean()
        idx = self._batch_index(cfg.video_batch)
        b, f = len(idx), self.data.num_frames
        first = self.data.batch(idx)[:, 0].to(dev)  # [B, 3, S, S]
        aug = torch.randn(first.shape, generator=g).to(dev) * cfg.noise_aug_strength
        keep = (torch.rand(b, generator=g) >= cfg.cond_drop_prob).to(dev).float()
        with torch.no_grad():
            cond = vae_encode(self.model.vae, first + aug) / self.model.vae.config.scaling_factor
            ctx = self.model.video_context(first, self.pooled[idx])
        cond = (cond * keep.view(b, 1, 1, 1))[:, None].expand(b, f, *cond.shape[1:])
        ctx = ctx * keep.view(b, 1, 1)
        nb = self.noise["video"](self.latents[idx], g)
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
        return self.history

    # --- checkpoints --------------------------------------------------------------------------------------
    def model_state(self) -> dict[str, torch.Tensor]:
        return {f"{net}.{k}": v for net in NETWORKS.values() for k, v in getattr(self.model, net).state_dict().items()}

    def save_checkpoint(self) -> Path:
        assert self.checkpoint_dir is not None and self.stage is not None
        info = {"stage": self.stage, "scaling_factor": float(self.model.vae.config.scaling_factor)}
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
        self.step = state.step
        self.generator.set_state(state.generator)
        if self.step < self.total_steps:
            stage, _ = self.stage_at(self.step)
            self.latents = None
            self._enter(stage)
            if stage == state.info["stage"]:  # mid-stage: continue its optimizer, schedule and EMA
                self.optimizer.load_state_dict(state.optimizer)
                self.scheduler.load_state_dict(state.scheduler)
                if self.ema is not None and state.ema is not None:
                    self.ema.load_state_dict(state.ema)
        return True
