"""Tiny random pretrained folders in the libraries' real on-disk formats (imported by path; not a conftest).

``svd_folder``: ``StableVideoDiffusionPipeline(...).save_pretrained`` (fp32, or fp16 weights saved with
``variant="fp16"`` so only ``*.fp16.safetensors`` exist). ``sd_folder``: ``StableDiffusionPipeline``
(CLIPTextModel + a CLIPTokenizer built from a small vocab/merges written here). No network.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderKLTemporalDecoder,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableVideoDiffusionPipeline,
    UNet2DConditionModel,
    UNetSpatioTemporalConditionModel,
)
from transformers import (
    CLIPImageProcessor,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

TEXT_WIDTH = 24  # the tiny CLIPTextModel's hidden size = the tiny image UNet's cross_attention_dim
IMAGE_EMBED = 20  # the tiny CLIP vision projection = the tiny SVD UNet's cross_attention_dim
WORDS = ["a", "red", "cube", "blue", "ball", "green", "cone", "small", "object", "number", "tall", "cylinder",
         "yellow", "purple", "ring", "chair", "lamp", "cup"]


def _tokenizer(root: Path) -> CLIPTokenizer:
    """A CLIP BPE tokenizer over a small closed vocabulary (whole words + letters), 77 tokens."""
    root.mkdir(parents=True, exist_ok=True)
    vocab = ["<|startoftext|>", "<|endoftext|>", "!"]
    letters = sorted({c for w in WORDS for c in w} | set("0123456789"))
    vocab += letters + [c + "</w>" for c in letters] + [w + "</w>" for w in WORDS]
    merges = ["#version: 0.2"]
    for w in WORDS:  # merge letter by letter into the whole word
        parts = list(w[:-1]) + [w[-1] + "</w>"]
        while len(parts) > 1:
            merges.append(f"{parts[0]} {parts[1]}")
            merged = parts[0] + parts[1]
            if merged not in vocab:
                vocab.append(merged)
            parts = [merged] + parts[2:]
    vocab = list(dict.fromkeys(vocab))
    (root / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (root / "merges.txt").write_text("\n".join(dict.fromkeys(merges)) + "\n")
    return CLIPTokenizer(str(root / "vocab.json"), str(root / "merges.txt"), model_max_length=77, pad_token="!")


def sd_folder(root: str | Path, variant: str | None = None, seed: int = 0) -> Path:
    """A tiny StableDiffusionPipeline folder (4x VAE downsampling: 3 blocks, as the SVD folder), fp32 or fp16."""
    root = Path(root)
    torch.manual_seed(seed)
    tokenizer = _tokenizer(root / "_tok_src")
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=TEXT_WIDTH, intermediate_size=48,
                                        num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=77,
                                        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                                        bos_token_id=tokenizer.bos_token_id))
    unet = UNet2DConditionModel(sample_size=2, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=TEXT_WIDTH,
                                attention_head_dim=8, norm_num_groups=32)
    vae = AutoencoderKL(block_out_channels=(8, 8, 8), down_block_types=("DownEncoderBlock2D",) * 3,
                        up_block_types=("UpDecoderBlock2D",) * 3, latent_channels=4, norm_num_groups=4,
                        sample_size=16, layers_per_block=1)
    scheduler = EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                       prediction_type="epsilon", timestep_spacing="leading", steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    out = root / ("sd_" + (variant or "fp32"))
    if variant == "fp16":
        pipe.to(torch.float16)
    pipe.save_pretrained(out, variant=variant, safe_serialization=True)
    return out


def svd_folder(root: str | Path, variant: str | None = None, seed: int = 0, num_frames: int = 4) -> Path:
    """A tiny StableVideoDiffusionPipeline folder (3 VAE blocks: 4x downsampling)."""
    root = Path(root)
    torch.manual_seed(seed)
    unet = UNetSpatioTemporalConditionModel(
        sample_size=8, in_channels=8, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"), addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=24, cross_attention_dim=IMAGE_EMBED, num_attention_heads=(2, 4),
        num_frames=num_frames)
    vae = AutoencoderKLTemporalDecoder(block_out_channels=(32, 32, 32), down_block_types=("DownEncoderBlock2D",) * 3,
                                       layers_per_block=1, latent_channels=4, sample_size=16)
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, projection_dim=IMAGE_EMBED, num_hidden_layers=1, num_attention_heads=2,
        image_size=32, patch_size=8))
    processor = CLIPImageProcessor(crop_size={"height": 32, "width": 32}, size={"shortest_edge": 32},
                                   image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.25, 0.3])
    scheduler = EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                       prediction_type="v_prediction", interpolation_type="linear",
                                       use_karras_sigmas=True, sigma_min=0.002, sigma_max=700.0,
                                       timestep_spacing="leading", timestep_type="continuous", steps_offset=1)
    pipe = StableVideoDiffusionPipeline(vae=vae, image_encoder=encoder, unet=unet, scheduler=scheduler,
                                        feature_extractor=processor)
    out = root / ("svd_" + (variant or "fp32"))
    if variant == "fp16":
        pipe.to(torch.float16)
    pipe.save_pretrained(out, variant=variant, safe_serialization=True)
    return out
