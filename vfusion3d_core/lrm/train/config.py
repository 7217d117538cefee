"""Training recipe of the LRM (docs/lrm-training.md): stages, losses, optimizer, schedule; presets per scale."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from vfusion3d_core.config import ConfigBase

MIN_LPIPS_SIZE = 32  # AlexNet's strided convolutions and pools need at least this many pixels


@dataclass
class StageConfig:
    """From ``start_step`` on, supervise at ``render_size``; with ``patch_size``, render a random
    ``patch_size`` crop of the ``render_size`` image instead of the whole image (high-res stages)."""

    start_step: int
    render_size: int
    patch_size: int | None = None


# The fine-tune stage of synthetic -> 3D runs the pretraining recipe at this fraction of its learning rate.
FINETUNE_LR_SCALE = 0.3


@dataclass
class LRMTrainConfig(ConfigBase):
    model_preset: str = "tiny"
    steps: int = 200
    batch_size: int = 4  # per process and micro-step
    grad_accum: int = 1
    views_per_sample: int = 4  # supervision views per object
    lr: float = 4e-4
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.05
    warmup_steps: int = 20
    min_lr_ratio: float = 0.0  # cosine decays to lr * min_lr_ratio
    grad_clip: float = 1.0
    stages: list[StageConfig] = field(default_factory=lambda: [StageConfig(0, 32)])
    lpips_weight: float = 1.0
    lpips_net: str = "alex"  # alex | vgg | squeeze
    lpips_random_backbone: bool = False  # True: random backbone (no torchvision weights available); logged
    mse_weight: float = 0.0  # the paper drops the pixel loss; OpenLRM uses 1.0
    opacity_weight: float = 1.0
    tv_weight: float = 0.0  # OpenLRM: 5e-4
    camera_noise_std: float = 0.0  # Gaussian noise on the source camera's [R|t] entries
    random_background: bool = True  # random colour per supervision view
    shuffle_buffer: int = 64
    num_workers: int = 0
    checkpoint_every: int = 50
    keep_checkpoints: int = 2
    log_every: int = 10
    seed: int = 0
    bf16: bool = True  # allow bf16 autocast where the ComputeSettings precision resolves to bf16; False: fp32
    # A step whose loss or gradient norm is NaN/inf: "raise" (NonFiniteLossError) or "skip" it (no optimizer
    # update, its batch is consumed); more than max_skipped_steps skips in a row raise anyway.
    on_nonfinite: str = "raise"
    max_skipped_steps: int = 10
    # Bad samples / shards in the training data are skipped and counted (skipped_samples / skipped_shards in the
    # metrics); an epoch whose skipped share exceeds this ends the run (docs/reliability.md, bad items).
    max_bad_fraction: float = 0.01

    def __post_init__(self) -> None:
        self.stages = [s if isinstance(s, StageConfig) else StageConfig(**s) for s in self.stages]
        self.betas = tuple(self.betas)  # type: ignore[assignment]
        if not self.stages or self.stages[0].start_step != 0:
            raise ValueError("stages must start at step 0")
        if any(b.start_step <= a.start_step for a, b in zip(self.stages, self.stages[1:], strict=False)):
            raise ValueError("stage start steps must increase")
        for s in self.stages:
            if s.patch_size is not None and not 0 < s.patch_size <= s.render_size:
                raise ValueError(f"patch_size {s.patch_size} must be in (0, render_size={s.render_size}]")
        smallest = min(s.patch_size or s.render_size for s in self.stages)
        if self.lpips_weight > 0 and smallest < MIN_LPIPS_SIZE:
            raise ValueError(f"LPIPS needs renders of at least {MIN_LPIPS_SIZE} px; a stage renders {smallest} px")
        if self.on_nonfinite not in ("raise", "skip"):
            raise ValueError(f"on_nonfinite must be 'raise' or 'skip', got {self.on_nonfinite!r}")
        if self.steps < 1 or self.batch_size < 1 or self.grad_accum < 1 or self.views_per_sample < 1:
            raise ValueError("steps, batch_size, grad_accum and views_per_sample must be >= 1")

    def finetune_recipe(self, lr_scale: float = FINETUNE_LR_SCALE) -> LRMTrainConfig:
        """The second stage of synthetic -> 3D training: the same steps and resolution stages as this (pretraining)
        recipe, at ``lr_scale`` times the learning rate with a quarter of the warm-up (the weights are trained
        already; a full-lr restart would undo much of the pretraining), and another seed (data order, noise)."""
        if not 0.0 < lr_scale <= 1.0:
            raise ValueError(f"lr_scale must be in (0, 1], got {lr_scale}")
        return replace(self, lr=self.lr * lr_scale, warmup_steps=max(1, self.warmup_steps // 4), seed=self.seed + 1,
                       stages=list(self.stages))

    def stretched(self, factor: int) -> LRMTrainConfig:
        """``factor`` times the steps with every stage ``factor`` times as long: the compute of ``factor`` runs of
        this recipe in one (the 3D-only arm matched to synthetic pretraining + fine-tuning)."""
        if factor < 1:
            raise ValueError(f"factor must be >= 1, got {factor}")
        stages = [replace(s, start_step=s.start_step * factor) for s in self.stages]
        return replace(self, steps=self.steps * factor, warmup_steps=self.warmup_steps * factor, stages=stages)

    def stage_at(self, step: int) -> StageConfig:
        """The stage in force at optimizer step ``step``."""
        return [s for s in self.stages if s.start_step <= step][-1]

    @classmethod
    def presets(cls) -> dict[str, dict[str, Any]]:
        """tiny: CPU minutes, 32 -> 64 px; small: one GPU; paper: 128 -> 256 -> 384 with patches."""
        presets: dict[str, dict[str, Any]] = {
            # tiny models tolerate a higher lr: 2e-3 reached 13.4 dB held-out PSNR in 200 steps vs 12.0 at 4e-4
            "tiny": dict(model_preset="tiny", steps=200, batch_size=4, views_per_sample=4, warmup_steps=20, lr=2e-3,
                         stages=[StageConfig(0, 32), StageConfig(150, 64, 32)], mse_weight=1.0,
                         lpips_random_backbone=True, camera_noise_std=0.01, checkpoint_every=50),
            "small": dict(model_preset="small", steps=30_000, batch_size=8, views_per_sample=4, warmup_steps=1000,
                          stages=[StageConfig(0, 128), StageConfig(10_000, 192, 128)], num_workers=4,
                          checkpoint_every=1000, tv_weight=5e-4, camera_noise_std=0.01),
            "paper": dict(model_preset="paper", steps=100_000, batch_size=8, grad_accum=2, views_per_sample=4,
                          warmup_steps=3000, stages=[StageConfig(0, 128), StageConfig(30_000, 256, 128),
                                                     StageConfig(60_000, 384, 128)],
                          lpips_net="vgg", num_workers=8, checkpoint_every=1000, camera_noise_std=0.01),
        }
        return presets
