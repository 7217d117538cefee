"""Build the diffusers networks of the orbit-video model: from scratch (tiny/small) or local paths (paper)."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderKLTemporalDecoder,
    UNet2DConditionModel,
    UNetSpatioTemporalConditionModel,
)

from vfusion3d_core.video.config import VideoModelConfig

Vae = AutoencoderKL | AutoencoderKLTemporalDecoder


def _heads(channels: tuple[int, ...], head_dim: int) -> tuple[int, ...]:
    return tuple(max(1, c // head_dim) for c in channels)


def build_vae(cfg: VideoModelConfig) -> Vae:
    """SVD's temporal-decoder VAE when ``svd_path`` is set, the pipeline's VAE for ``image_model_path``,
    else a small AutoencoderKL from scratch (len(vae_channels) - 1 downsamplings)."""
    if cfg.svd_path:
        return AutoencoderKLTemporalDecoder.from_pretrained(cfg.svd_path, subfolder="vae", local_files_only=True)
    if cfg.image_model_path:
        return AutoencoderKL.from_pretrained(cfg.image_model_path, subfolder="vae", local_files_only=True)
    n = len(cfg.vae_channels)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
                         up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=cfg.vae_channels,
                         layers_per_block=1, latent_channels=cfg.latent_channels, norm_num_groups=cfg.vae_norm_groups,
                         sample_size=cfg.resolution, scaling_factor=1.0)


def build_image_unet(cfg: VideoModelConfig, text_dim: int) -> UNet2DConditionModel:
    """Stage 1: text-conditioned image UNet (cross-attention on text tokens)."""
    if cfg.image_model_path:
        return UNet2DConditionModel.from_pretrained(cfg.image_model_path, subfolder="unet", local_files_only=True)
    n = len(cfg.image_unet_channels)
    return UNet2DConditionModel(
        sample_size=cfg.latent_size, in_channels=cfg.latent_channels, out_channels=cfg.latent_channels,
        down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1),
        block_out_channels=cfg.image_unet_channels, layers_per_block=1, cross_attention_dim=text_dim,
        attention_head_dim=_heads(cfg.image_unet_channels, cfg.attention_head_dim), norm_num_groups=32)


def build_video_unet(cfg: VideoModelConfig, cond_dim: int) -> UNetSpatioTemporalConditionModel:
    """Stage 2: SVD-architecture UNet; input = noisy video latents ++ conditioning-image latents (2C)."""
    if cfg.svd_path:
        return UNetSpatioTemporalConditionModel.from_pretrained(cfg.svd_path, subfolder="unet", local_files_only=True)
    n = len(cfg.video_unet_channels)
    return UNetSpatioTemporalConditionModel(
        sample_size=cfg.latent_size, in_channels=2 * cfg.latent_channels, out_channels=cfg.latent_channels,
        down_block_types=("CrossAttnDownBlockSpatioTemporal",) * (n - 1) + ("DownBlockSpatioTemporal",),
        up_block_types=("UpBlockSpatioTemporal",) + ("CrossAttnUpBlockSpatioTemporal",) * (n - 1),
        block_out_channels=cfg.video_unet_channels, addition_time_embed_dim=cfg.time_embed_dim,
        projection_class_embeddings_input_dim=3 * cfg.time_embed_dim, layers_per_block=1,
        cross_attention_dim=cond_dim, num_attention_heads=_heads(cfg.video_unet_channels, cfg.attention_head_dim),
        num_frames=cfg.num_frames)


def vae_encode(vae: Vae, images: torch.Tensor, generator: torch.Generator | None = None,
               sample: bool = False) -> torch.Tensor:
    """images [N, 3, H, W] in [-1, 1] -> latents [N, C, h, w] (mode, or a sample), scaled by scaling_factor."""
    assert images.dim() == 4 and images.shape[1] == 3, images.shape
    dist = vae.encode(images).latent_dist
    z = dist.sample(generator) if sample else dist.mode()
    return z * vae.config.scaling_factor


def vae_decode(vae: Vae, latents: torch.Tensor, num_frames: int = 1, chunk: int = 64) -> torch.Tensor:
    """latents [N, C, h, w] (scaled) -> images [N, 3, H, W] in [-1, 1]; all frames batched (chunked for memory)."""
    assert latents.dim() == 4, latents.shape
    z = latents / vae.config.scaling_factor
    temporal = isinstance(vae, AutoencoderKLTemporalDecoder)
    step = max(num_frames, chunk - chunk % num_frames) if temporal else chunk
    out = []
    for i in range(0, z.shape[0], step):
        part = z[i:i + step]
        out.append(vae.decode(part, num_frames=num_frames).sample if temporal else vae.decode(part).sample)
    return torch.cat(out).clamp(-1, 1)


def scheduler_config(cfg: VideoModelConfig, stage: str) -> dict:
    """The noise-schedule config of a stage: the pretrained one's, or scaled-linear DDPM betas."""
    source = cfg.svd_path if stage == "video" else cfg.image_model_path
    if source and (Path(source) / "scheduler" / "scheduler_config.json").is_file():
        import json

        return json.loads((Path(source) / "scheduler" / "scheduler_config.json").read_text())
    return {"num_train_timesteps": cfg.train_timesteps, "beta_start": 0.00085, "beta_end": 0.012,
            "beta_schedule": "scaled_linear", "prediction_type": cfg.prediction_type, "timestep_spacing": "trailing",
            "steps_offset": 0}
