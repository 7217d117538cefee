"""The orbit-video model: frozen text encoder, VAE, stage-1 image UNet, stage-2 SVD-style video UNet.

Saved in a diffusers layout::

    DIR/model_index.json      component -> [library, class]
    DIR/vfusion3d_config.json VideoModelConfig
    DIR/text_encoder.json     frozen text encoder reference (source + sha256 of its weights; not copied)
    DIR/vae/ image_unet/ video_unet/ [image_encoder/ feature_extractor/]   save_pretrained (safetensors)
    DIR/scheduler/ video_scheduler/                     EulerDiscreteScheduler configs of the two stages
    DIR/README.md             model card (see card.py)
"""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderKLTemporalDecoder,
    EulerDiscreteScheduler,
    UNet2DConditionModel,
    UNetSpatioTemporalConditionModel,
)
from torch import nn

from vfusion3d_core.data.manifest import sha256_file
from vfusion3d_core.preprocess import ImagePreprocess
from vfusion3d_core.pretrained import weights_variant
from vfusion3d_core.video.config import VideoModelConfig
from vfusion3d_core.video.networks import (
    build_image_unet,
    build_vae,
    build_video_unet,
    scheduler_config,
    vae_downsampling,
)
from vfusion3d_core.video.text_encoder import FrozenTextEncoder, load_text_encoder

_CLASSES = {"AutoencoderKL": AutoencoderKL, "AutoencoderKLTemporalDecoder": AutoencoderKLTemporalDecoder,
            "UNet2DConditionModel": UNet2DConditionModel,
            "UNetSpatioTemporalConditionModel": UNetSpatioTemporalConditionModel}
COMPONENTS = ("vae", "image_unet", "video_unet")


class OrbitVideoModel(nn.Module):
    """Container of the networks; sampling lives in sampler.py, training in trainer.py."""

    def __init__(self, config: VideoModelConfig, text_encoder: FrozenTextEncoder, vae: nn.Module,
                 image_unet: UNet2DConditionModel, video_unet: UNetSpatioTemporalConditionModel,
                 image_scheduler: dict, video_scheduler: dict, image_encoder: nn.Module | None = None,
                 feature_extractor: Any = None) -> None:
        super().__init__()
        if (image_encoder is None) != (feature_extractor is None):
            raise ValueError("a CLIP image encoder needs its feature_extractor (CLIPImageProcessor) and vice versa")
        factor = vae_downsampling(vae)
        if config.resolution % factor:
            raise ValueError(f"resolution {config.resolution} is not a multiple of the VAE's downsampling {factor}")
        self.config = config
        self.text_encoder = text_encoder
        self.vae = vae
        self.image_unet = image_unet
        self.video_unet = video_unet
        self.image_encoder = image_encoder
        self.feature_extractor = feature_extractor
        self.clip_input: ImagePreprocess | None = None  # the CLIP input size and mean / std of feature_extractor
        if image_encoder is not None:
            image_encoder.requires_grad_(False)
            self.clip_input = ImagePreprocess.from_processor_dict(feature_extractor.to_dict(), "feature_extractor")
            if self.clip_input.output_hw is None:
                raise ValueError(f"feature_extractor has no usable crop size / size: {feature_extractor.to_dict()}")
        self.image_scheduler = dict(image_scheduler)
        self.video_scheduler = dict(video_scheduler)

    @classmethod
    def build(cls, config: VideoModelConfig, text_encoder: FrozenTextEncoder | None = None) -> OrbitVideoModel:
        """From scratch (tiny/small) or from the local pretrained folders in the config (paper): ``svd_path`` a
        StableVideoDiffusionPipeline folder (unet/, vae/, image_encoder/, feature_extractor/, scheduler/),
        ``image_model_path`` a text-to-image pipeline folder (unet/, vae/, text_encoder/, tokenizer/, scheduler/),
        whose own text encoder then conditions stage 1. fp16-variant-only folders load as fp32 weights."""
        text_encoder = text_encoder or load_text_encoder(config.text_source, config.max_text_tokens)
        image_encoder = feature_extractor = None
        if config.svd_path:
            image_encoder, feature_extractor = load_clip_image_encoder(config.svd_path)
        cond_dim = image_encoder.config.projection_dim if image_encoder is not None else text_encoder.dim
        return cls(config, text_encoder, build_vae(config), build_image_unet(config, text_encoder.dim),
                   build_video_unet(config, cond_dim), scheduler_config(config, "image"),
                   scheduler_config(config, "video"), image_encoder, feature_extractor)

    @property
    def device(self) -> torch.device:
        return next(self.video_unet.parameters()).device

    @property
    def latent_size(self) -> int:
        """Latent side length: resolution / the VAE's downsampling (the pretrained VAE's own factor)."""
        return self.config.resolution // vae_downsampling(self.vae)

    def random_components(self) -> list[str]:
        """Which networks started from random initialisation (for the model card and metadata)."""
        return self.config.random_components()

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Switch the diffusers UNets' gradient checkpointing on (recompute activations) or off."""
        for unet in (self.image_unet, self.video_unet):
            if enabled:
                unet.enable_gradient_checkpointing()
            else:
                unet.disable_gradient_checkpointing()

    def video_context(self, images: torch.Tensor, pooled_text: torch.Tensor) -> torch.Tensor:
        """Stage-2 cross-attention context [B, 1, D]: CLIP image embedding (SVD) or the pooled text (scratch).

        images [B, 3, H, W] in [-1, 1] (the conditioning first frame); pooled_text [B, D_text]. The CLIP input
        follows the folder's feature_extractor: antialiased resize to its crop size, its mean / std.
        """
        if images.dim() != 4 or images.shape[1] != 3 or pooled_text.shape[0] != images.shape[0]:
            raise ValueError(f"video_context expects images [B, 3, H, W] and pooled text [B, D], got "
                             f"{tuple(images.shape)} and {tuple(pooled_text.shape)}")
        if self.image_encoder is None:
            return pooled_text[:, None, :]
        clip = self.clip_input
        x = torch.nn.functional.interpolate(images.float(), size=clip.output_hw, mode="bicubic", align_corners=False,
                                            antialias=True)
        x = ((x + 1) / 2).clamp(0, 1)
        mean_t = torch.tensor(clip.mean, device=x.device).view(1, 3, 1, 1)
        std_t = torch.tensor(clip.std, device=x.device).view(1, 3, 1, 1)
        with torch.no_grad():
            dtype = next(self.image_encoder.parameters()).dtype
            emb = self.image_encoder(pixel_values=((x - mean_t) / std_t).to(dtype)).image_embeds  # [B, D]
        return emb[:, None, :].to(images.dtype)

    def added_time_ids(self, batch: int) -> torch.Tensor:
        """SVD micro-conditioning [B, 3] = (fps - 1, motion bucket, noise augmentation strength)."""
        c = self.config
        ids = torch.tensor([c.fps_id - 1, c.motion_bucket_id, c.noise_aug_strength], dtype=torch.float32)
        return ids.to(self.device).expand(batch, 3)

    # --- persistence -------------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path, card: str | None = None) -> Path:
        """Write every component (safetensors) + configs + model card into ``directory``."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        index = {"_class_name": "VFusion3DOrbitVideoModel", "_diffusers_version": _diffusers_version()}
        for name in COMPONENTS:
            module = getattr(self, name)
            module.save_pretrained(out / name, safe_serialization=True)
            index[name] = ["diffusers", type(module).__name__]
        if self.image_encoder is not None:
            self.image_encoder.save_pretrained(out / "image_encoder", safe_serialization=True)
            index["image_encoder"] = ["transformers", type(self.image_encoder).__name__]
            self.feature_extractor.save_pretrained(out / "feature_extractor")
            index["feature_extractor"] = ["transformers", type(self.feature_extractor).__name__]
        index["random_init"] = self.random_components()
        for sub, cfg in (("scheduler", self.image_scheduler), ("video_scheduler", self.video_scheduler)):
            EulerDiscreteScheduler.from_config({k: v for k, v in cfg.items() if not k.startswith("_")}
                                               ).save_pretrained(out / sub)
            (out / sub / "source_config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True))
        (out / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True))
        self.config.save(out / "vfusion3d_config.json")
        (out / "text_encoder.json").write_text(json.dumps(text_encoder_reference(self.text_encoder), indent=2))
        if card is not None:
            (out / "README.md").write_text(card, encoding="utf-8")
        return out

    @classmethod
    def from_pretrained(cls, directory: str | Path, text_encoder: FrozenTextEncoder | None = None
                        ) -> OrbitVideoModel:
        """Load a directory written by ``save_pretrained`` (local files only)."""
        src = Path(directory)
        if not (src / "model_index.json").is_file():
            raise FileNotFoundError(f"{src} is not a saved orbit-video model (no model_index.json)")
        index = json.loads((src / "model_index.json").read_text())
        config = VideoModelConfig.load(src / "vfusion3d_config.json")
        ref = json.loads((src / "text_encoder.json").read_text())
        if text_encoder is None:
            text_encoder = load_text_encoder(ref["path"] if config.text_source else None, config.max_text_tokens)
        got = text_encoder_reference(text_encoder)["sha256"]
        if got != ref["sha256"]:
            raise ValueError(f"text encoder weights {got[:12]} differ from the ones the model was trained with "
                             f"({ref['sha256'][:12]})")
        # low-memory loading needs accelerate; without it diffusers warns on every load and falls back anyway
        low_mem = importlib.util.find_spec("accelerate") is not None
        parts = {name: _CLASSES[index[name][1]].from_pretrained(src / name, local_files_only=True,
                                                                  low_cpu_mem_usage=low_mem)
                 for name in COMPONENTS}
        image_encoder = feature_extractor = None
        if "image_encoder" in index:
            image_encoder, feature_extractor = load_clip_image_encoder(src)
        scheds = [json.loads((src / sub / "source_config.json").read_text())
                  for sub in ("scheduler", "video_scheduler")]
        return cls(config, text_encoder, parts["vae"], parts["image_unet"], parts["video_unet"], *scheds,
                   image_encoder=image_encoder, feature_extractor=feature_extractor)


def load_clip_image_encoder(root: str | Path) -> tuple[nn.Module, Any]:
    """(CLIPVisionModelWithProjection from ``root/image_encoder``, CLIPImageProcessor from
    ``root/feature_extractor``), fp32 weights, the folder's weight variant; a missing part is an error."""
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    enc_dir, fe_dir = Path(root) / "image_encoder", Path(root) / "feature_extractor"
    for d, what in ((enc_dir, "config.json"), (fe_dir, "preprocessor_config.json")):
        if not (d / what).is_file():
            raise FileNotFoundError(f"{d / what} is missing: a Stable Video Diffusion folder needs image_encoder/ "
                                    "and feature_extractor/ (the CLIP image preprocessing is read from it)")
    encoder = CLIPVisionModelWithProjection.from_pretrained(str(enc_dir), local_files_only=True, dtype=torch.float32,
                                                            variant=weights_variant(enc_dir))
    return encoder.eval(), CLIPImageProcessor.from_pretrained(str(fe_dir), local_files_only=True)


def text_encoder_reference(encoder: FrozenTextEncoder) -> dict:
    """Where the frozen text encoder comes from and the sha256 of its weight file(s)."""
    weights = Path(encoder.weights_dir)
    files = sorted(weights.rglob("*.safetensors")) or sorted(weights.rglob("*.bin"))
    digest = "+".join(_file_digest(str(f), f.stat().st_size, f.stat().st_mtime_ns)[:16] for f in files)
    return {"path": encoder.source, "class": type(encoder.model).__name__, "sha256": digest,
            "style": encoder.style, "width": encoder.dim, "tokens": encoder.max_tokens}


@functools.lru_cache(maxsize=16)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of a file, cached per (path, size, mtime)."""
    return sha256_file(path)


def _diffusers_version() -> str:
    import diffusers

    return diffusers.__version__
