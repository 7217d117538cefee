"""Batched text -> image -> orbit-video sampling with classifier-free guidance and a seed per prompt.

Every prompt's noise comes from its own ``torch.Generator(seed)``, so an output depends on its prompt
and seed (not on which batch it landed in, up to float rounding). All frames of all videos go through
the UNet and the VAE as one batch; there is no per-frame Python loop. With ``ComputeSettings`` the model
runs on its device and every network call under its autocast (bf16 where native); the noise is still
drawn from the per-prompt CPU generators, so it does not depend on the device.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from vfusion3d_core.compute import ComputeSettings
from vfusion3d_core.video.config import VideoModelConfig
from vfusion3d_core.video.model import OrbitVideoModel
from vfusion3d_core.video.networks import vae_decode, vae_encode
from vfusion3d_core.video.noise import make_scheduler


@dataclass
class SampleSettings:
    scheduler: str = "euler"
    steps: int = 20
    image_guidance: float = 4.0
    video_guidance: tuple[float, float] = (1.0, 2.5)

    @classmethod
    def from_config(cls, c: VideoModelConfig) -> SampleSettings:
        """The sampler defaults saved with a model's config (no weights needed)."""
        return cls(c.scheduler, c.sample_steps, c.image_guidance, tuple(c.video_guidance))  # type: ignore[arg-type]

    @classmethod
    def from_model(cls, model: OrbitVideoModel) -> SampleSettings:
        return cls.from_config(model.config)

    def to_dict(self) -> dict:
        return {"scheduler": self.scheduler, "steps": self.steps, "image_guidance": self.image_guidance,
                "video_guidance": list(self.video_guidance)}

    @classmethod
    def from_dict(cls, d: dict) -> SampleSettings:
        return cls(str(d["scheduler"]), int(d["steps"]), float(d["image_guidance"]),
                   tuple(float(g) for g in d["video_guidance"]))  # type: ignore[arg-type]


@contextlib.contextmanager
def _autocast(compute: ComputeSettings | None) -> Iterator[None]:
    if compute is None:
        yield
    else:
        with compute.autocast():
            yield


def _noise(shape: tuple[int, ...], generators: list[torch.Generator], device: torch.device) -> torch.Tensor:
    """[B, *shape] standard normal noise, row b drawn from generators[b]."""
    return torch.stack([torch.randn(shape, generator=g) for g in generators]).to(device)


def seed_generators(seeds: list[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


@torch.no_grad()
def sample_images(model: OrbitVideoModel, prompts: list[str], generators: list[torch.Generator],
                  settings: SampleSettings, compute: ComputeSettings | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 1. prompts (B) -> (first frames [B, 3, H, W] in [-1, 1], pooled text [B, D])."""
    if not len(prompts) == len(generators) > 0:
        raise ValueError(f"{len(prompts)} prompts but {len(generators)} generators")
    with _autocast(compute):
        return _sample_images(model, prompts, generators, settings)


def _sample_images(model: OrbitVideoModel, prompts: list[str], generators: list[torch.Generator],
                   settings: SampleSettings) -> tuple[torch.Tensor, torch.Tensor]:
    c, dev = model.config, model.device
    tokens, pooled = model.text_encoder(list(prompts))
    null_tokens, _ = model.text_encoder([""])
    context = torch.cat([null_tokens.expand_as(tokens), tokens]).to(dev)  # [2B, L, D]
    sched = make_scheduler(model.image_scheduler, settings.scheduler)
    sched.set_timesteps(settings.steps, device=dev)
    h = model.latent_size
    latents = _noise((model.image_unet.config.in_channels, h, h), generators, dev) * sched.init_noise_sigma
    for t in sched.timesteps:
        inp = sched.scale_model_input(torch.cat([latents, latents]), t)
        out = model.image_unet(inp, t, encoder_hidden_states=context).sample.float()
        uncond, cond = out.chunk(2)
        latents = sched.step(uncond + settings.image_guidance * (cond - uncond), t, latents).prev_sample
    images = vae_decode(model.vae, latents, num_frames=1).float()
    if images.shape != (len(prompts), 3, c.resolution, c.resolution):
        raise RuntimeError(f"stage 1 decoded {tuple(images.shape)}, expected {(len(prompts), 3, c.resolution)}")
    return images, pooled.to(dev)


@torch.no_grad()
def sample_videos(model: OrbitVideoModel, images: torch.Tensor, pooled: torch.Tensor,
                  generators: list[torch.Generator], settings: SampleSettings,
                  compute: ComputeSettings | None = None) -> torch.Tensor:
    """Stage 2. first frames [B, 3, H, W] in [-1, 1] + pooled text [B, D] -> orbits [B, F, 3, H, W] in [-1, 1]."""
    c = model.config
    b = images.shape[0]
    if images.shape != (b, 3, c.resolution, c.resolution) or not pooled.shape[0] == b == len(generators):
        raise ValueError(f"sample_videos: images {tuple(images.shape)} (expected [B, 3, {c.resolution}, "
                         f"{c.resolution}]), pooled {tuple(pooled.shape)}, {len(generators)} generators")
    with _autocast(compute):
        return _sample_videos(model, images.to(model.device), pooled.to(model.device), generators, settings)


def _sample_videos(model: OrbitVideoModel, images: torch.Tensor, pooled: torch.Tensor,
                   generators: list[torch.Generator], settings: SampleSettings) -> torch.Tensor:
    c, dev = model.config, model.device
    b, f = images.shape[0], c.num_frames
    aug = _noise(tuple(images.shape[1:]), generators, dev) * c.noise_aug_strength
    cond_latents = (vae_encode(model.vae, images + aug) / model.vae.config.scaling_factor).float()  # [B, C, h, w]
    cond_latents = cond_latents[:, None].expand(b, f, *cond_latents.shape[1:])  # [B, F, C, h, w]
    cond_in = torch.cat([torch.zeros_like(cond_latents), cond_latents])  # [2B, F, C, h, w]
    ctx = model.video_context(images, pooled).float()
    context = torch.cat([torch.zeros_like(ctx), ctx])  # [2B, 1, D]
    time_ids = model.added_time_ids(2 * b)
    scale = torch.linspace(*settings.video_guidance, f, device=dev).view(1, f, 1, 1, 1)
    sched = make_scheduler(model.video_scheduler, settings.scheduler)
    sched.set_timesteps(settings.steps, device=dev)
    latents = _noise(tuple(cond_latents.shape[1:]), generators, dev) * sched.init_noise_sigma  # [B, F, C, h, w]
    for t in sched.timesteps:
        inp = sched.scale_model_input(torch.cat([latents, latents]), t)
        out = model.video_unet(torch.cat([inp, cond_in], dim=2), t, context, time_ids).sample.float()
        uncond, cond = out.chunk(2)
        latents = sched.step(uncond + scale * (cond - uncond), t, latents).prev_sample
    frames = vae_decode(model.vae, latents.flatten(0, 1), num_frames=f).float()
    return frames.unflatten(0, (b, f))  # [B, F, 3, H, W]


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """[..., 3, H, W] in [-1, 1] -> uint8 [..., H, W, 3]."""
    x = ((frames.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.movedim(-3, -1).cpu().numpy()


@torch.no_grad()
def sample_orbits(model: OrbitVideoModel, prompts: list[str], seeds: list[int],
                  settings: SampleSettings | None = None, batch_size: int | None = None,
                  compute: ComputeSettings | None = None) -> np.ndarray:
    """Text -> orbit videos: uint8 [N, F, H, W, 3] for N prompts, in batches of ``batch_size``; with
    ``compute`` the model is moved to its device and runs under its autocast."""
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    settings = settings or SampleSettings.from_model(model)
    bs = batch_size or model.config.sample_batch
    if compute is not None:
        model.to(compute.torch_device)
    model.eval()
    out = []
    for i in range(0, len(prompts), bs):
        gens = seed_generators(seeds[i:i + bs])
        images, pooled = sample_images(model, prompts[i:i + bs], gens, settings, compute)
        out.append(to_uint8(sample_videos(model, images, pooled, gens, settings, compute)))
    return np.concatenate(out) if out else np.zeros((0, model.config.num_frames, model.config.resolution,
                                                    model.config.resolution, 3), np.uint8)
