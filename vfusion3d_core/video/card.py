"""Model card (README.md) of a saved orbit-video model: what it is, what data trained it, how it scores."""

from __future__ import annotations

import json
from typing import Any

from vfusion3d_core.video.config import VideoModelConfig


def model_card(config: VideoModelConfig, training_data: dict[str, str], metrics: dict[str, Any],
               code_version: str, text_encoder: dict[str, Any], info: dict[str, Any] | None = None) -> str:
    """Markdown with YAML front matter; ``training_data`` maps dataset name -> manifest digest; ``info`` (optional):
    compute settings and parameter counts. Every randomly initialised network is listed as such."""
    base = config.svd_path or config.prior_path or "random initialisation"
    image_base = config.image_model_path or "random initialisation"
    random_init = config.random_components()
    extra = info or {}
    lines = [
        "---", "library_name: diffusers", "tags: [vfusion3d, video-diffusion, orbit-video, text-to-video]", "---",
        "# VFusion3D orbit-video model", "",
        "Text -> first frame (UNet2DConditionModel, frozen text encoder) -> "
        f"{config.num_frames}-frame orbit video (UNetSpatioTemporalConditionModel), "
        f"{config.resolution}x{config.resolution} pixels, trained on 3D orbit renders.", "",
        f"- stage 1 (first frame) initialised from: {image_base}",
        f"- stage 2 initialised from: {base}; temporal-only training: {config.train_temporal_only}",
        f"- randomly initialised networks: {', '.join(random_init) if random_init else 'none'}",
        f"- text encoder (frozen, pretrained): `{text_encoder.get('path')}` ({text_encoder.get('style', 'sentence')} "
        f"conditioning, {text_encoder.get('width')}-d x {text_encoder.get('tokens')} tokens; weights sha256 "
        f"{text_encoder.get('sha256')})",
        *([f"- compute: {json.dumps(extra['compute'], sort_keys=True)}"] if "compute" in extra else []),
        f"- steps: vae {config.vae_steps}, image {config.image_steps}, video {config.video_steps}; "
        f"EMA: {config.ema_decay}", f"- code version: {code_version}", "",
        "## Training data", "", "| dataset | manifest digest |", "|---|---|",
        *[f"| {name} | `{digest}` |" for name, digest in sorted(training_data.items())], "",
        "## Evaluation", "",
        "`*_mse`: mean per-frame pixel MSE to the real orbits of training captions (lower is closer); "
        "`*/heldout/*`: image -> orbit on held-out objects (PSNR, LPIPS "
        f"{extra.get('heldout_lpips', '')}, object colour distances, silhouette/colour self-consistency).", "",
        "```json", json.dumps(metrics, indent=2, sort_keys=True), "```", "",
        "## Config", "", "```json", json.dumps(config.to_dict(), indent=2, sort_keys=True), "```", "",
    ]
    return "\n".join(lines)
