"""Forward noising + losses for training, and the sampling schedulers (Euler, DPM-Solver++).

Two parameterizations, chosen by the stage's scheduler config:
- discrete (from scratch, Stable Diffusion): x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps at an integer t,
  target eps or v = sqrt(a_t) eps - sqrt(1 - a_t) x0;
- continuous EDM (Stable Video Diffusion, ``timestep_type == "continuous"``): x = x0 + sigma eps with
  log sigma ~ N(0.7, 1.6^2), network input x / sqrt(sigma^2 + 1), timestep 0.25 log sigma, v-prediction
  read as x0 = x / (sigma^2 + 1) - sigma / sqrt(sigma^2 + 1) * out, loss weight (sigma^2 + 1) / sigma^2.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from diffusers import DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

EDM_P_MEAN, EDM_P_STD = 0.7, 1.6


@dataclass
class NoisedBatch:
    """model_input like x0; timesteps [B]; loss(model_output) -> per-sample loss [B]."""

    model_input: torch.Tensor
    timesteps: torch.Tensor
    loss: Callable[[torch.Tensor], torch.Tensor]


class TrainingNoise:
    """Noises clean latents [B, ...] for one training step, deterministic given a generator."""

    def __init__(self, scheduler_config: dict) -> None:
        self.config = dict(scheduler_config)
        self.continuous = self.config.get("timestep_type") == "continuous"
        self.prediction_type = self.config.get("prediction_type", "epsilon")
        if not self.continuous:
            keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "prediction_type")
            ddpm = DDPMScheduler(**{k: self.config[k] for k in keys if k in self.config})
            self.alphas_cumprod = ddpm.alphas_cumprod.float()  # [T]

    def __call__(self, x0: torch.Tensor, generator: torch.Generator) -> NoisedBatch:
        b = x0.shape[0]
        shape = (b,) + (1,) * (x0.dim() - 1)
        eps = torch.randn(x0.shape, generator=generator).to(x0)
        if self.continuous:
            sigma = (EDM_P_MEAN + EDM_P_STD * torch.randn(b, generator=generator)).exp().to(x0)
            s = sigma.view(shape)
            noisy = x0 + s * eps
            c_in, c_skip, c_out = 1 / (s**2 + 1).sqrt(), 1 / (s**2 + 1), -s / (s**2 + 1).sqrt()
            weight = (s**2 + 1) / s**2

            def edm_loss(out: torch.Tensor) -> torch.Tensor:
                pred_x0 = c_skip * noisy + c_out * out
                return (weight * (pred_x0.float() - x0.float()) ** 2).flatten(1).mean(1)

            return NoisedBatch(noisy * c_in, 0.25 * sigma.log(), edm_loss)
        t = torch.randint(0, len(self.alphas_cumprod), (b,), generator=generator)
        a = self.alphas_cumprod[t].to(x0).view(shape)
        noisy = a.sqrt() * x0 + (1 - a).sqrt() * eps
        target = eps if self.prediction_type == "epsilon" else a.sqrt() * eps - (1 - a).sqrt() * x0

        def mse(out: torch.Tensor) -> torch.Tensor:
            return ((out.float() - target.float()) ** 2).flatten(1).mean(1)

        return NoisedBatch(noisy, t.to(x0.device), mse)


def make_scheduler(scheduler_config: dict, name: str) -> EulerDiscreteScheduler | DPMSolverMultistepScheduler:
    """A sampling scheduler from a stage's noise-schedule config: 'euler' or 'dpmpp' (DPM-Solver++ 2M)."""
    cfg = {k: v for k, v in scheduler_config.items() if not k.startswith("_")}
    if name == "euler":
        return EulerDiscreteScheduler.from_config(cfg)
    if name == "dpmpp":
        if cfg.get("timestep_type") == "continuous":
            raise ValueError("DPM-Solver++ needs a discrete-timestep model; use scheduler='euler' for SVD")
        return DPMSolverMultistepScheduler.from_config(cfg, algorithm_type="dpmsolver++", solver_order=2)
    raise ValueError(f"unknown scheduler {name!r} (euler | dpmpp)")
