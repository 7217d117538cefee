"""Build the diffusers networks of the orbit-video model: from scratch (tiny/small) or local paths (paper)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderKLTemporalDecoder,
    UNet2DConditionModel,
    UNetSpatioTemporalConditionModel,
)

from vfusion3d_core.pretrained import weights_variant
from vfusion3d_core.video.config import VideoModelConfig

Vae = AutoencoderKL | AutoencoderKLTemporalDecoder


def load_component(cls: Any, root: str | Path, subfolder: str) -> Any:
    """``cls.from_pretrained(root/subfolder)`` from local files only, as fp32 weights, with the folder's weight
    ``variant`` (None, or 'fp16' for folders holding only ``*.fp16.safetensors``)."""
    directory = Path(root) / subfolder
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"{directory} has no config.json: not a saved {cls.__name__}")
    # low-memory loading needs accelerate; without it diffusers warns on every load and falls back anyway
    low_mem = importlib.util.find_spec("accelerate") is not None
    return cls.from_pretrained(str(directory), local_files_only=True, torch_dtype=torch.float32,
                               variant=weights_variant(directory), low_cpu_mem_usage=low_mem)


def vae_downsampling(vae: Vae) -> int:
    """Pixel -> latent downsampling factor of a VAE (2 per block after the first)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def _heads(channels: tuple[int, ...], head_dim: int) -> tuple[int, ...]:
    return tuple(max(1, c // head_dim) for c in channels)


def build_vae(cfg: VideoModelConfig) -> Vae:
    """SVD's temporal-decoder VAE when ``svd_path`` is set, the pipeline's VAE for ``image_model_path``,
    else a small AutoencoderKL from scratch (len(vae_channels) - 1 downsamplings)."""
    if cfg.svd_path:
        return load_component(AutoencoderKLTemporalDecoder, cfg.svd_path, "vae")
    if cfg.image_model_path:
        return load_component(AutoencoderKL, cfg.image_model_path, "vae")
    n = len(cfg.vae_channels)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
                         up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=cfg.vae_channels,
                         layers_per_block=1, latent_channels=cfg.latent_channels, norm_num_groups=cfg.vae_norm_groups,
                         sample_size=cfg.resolution, scaling_factor=1.0)


def build_image_unet(cfg: VideoModelConfig, text_dim: int) -> UNet2DConditionModel:
    """Stage 1: text-conditioned image UNet (cross-attention on text tokens)."""
    if cfg.image_model_path:
        unet = load_component(UNet2DConditionModel, cfg.image_model_path, "unet")
        if unet.config.cross_attention_dim != text_dim:
            raise ValueError(f"{cfg.image_model_path}/unet cross-attends to {unet.config.cross_attention_dim}-d text "
                             f"but the text encoder gives {text_dim}-d tokens: use the pipeline's own text_encoder")
        return unet
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
        unet = load_component(UNetSpatioTemporalConditionModel, cfg.svd_path, "unet")
        if unet.config.cross_attention_dim != cond_dim:
            raise ValueError(f"{cfg.svd_path}/unet cross-attends to {unet.config.cross_attention_dim}-d context, "
                             f"the image encoder gives {cond_dim}-d embeddings")
        return unet
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
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"vae_encode expects images [N, 3, H, W], got {tuple(images.shape)}")
    dist = vae.encode(images).latent_dist
    z = dist.sample(generator) if sample else dist.mode()
    return z * vae.config.scaling_factor


def vae_decode(vae: Vae, latents: torch.Tensor, num_frames: int = 1, chunk: int = 64) -> torch.Tensor:
    """latents [N, C, h, w] (scaled) -> images [N, 3, H, W] in [-1, 1]; all frames batched (chunked for memory)."""
    if latents.dim() != 4:
        raise ValueError(f"vae_decode expects latents [N, C, h, w], got {tuple(latents.shape)}")
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
    if source:
        path = Path(source) / "scheduler" / "scheduler_config.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: {source} is not a complete diffusers pipeline folder")
        return json.loads((Path(source) / "scheduler" / "scheduler_config.json").read_text())
    return {"num_train_timesteps": cfg.train_timesteps, "beta_start": 0.00085, "beta_end": 0.012,
            "beta_schedule": "scaled_linear", "prediction_type": cfg.prediction_type, "timestep_spacing": "trailing",
            "steps_offset": 0}
