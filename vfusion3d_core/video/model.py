"""The orbit-video model: frozen text encoder, VAE, stage-1 image UNet, stage-2 SVD-style video UNet.

Saved in a diffusers layout::

    DIR/model_index.json      component -> [library, class]
    DIR/vfusion3d_config.json VideoModelConfig
    DIR/text_encoder.json     frozen text encoder reference (source + sha256 of its weights; not copied)
    DIR/vae/ image_unet/ video_unet/ [image_encoder/]   save_pretrained (safetensors)
    DIR/scheduler/ video_scheduler/                     EulerDiscreteScheduler configs of the two stages
    DIR/README.md             model card (see card.py)
"""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path

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
from vfusion3d_core.video.config import VideoModelConfig
from vfusion3d_core.video.networks import build_image_unet, build_vae, build_video_unet, scheduler_config
from vfusion3d_core.video.text_encoder import FrozenTextEncoder, load_text_encoder

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_CLASSES = {"AutoencoderKL": AutoencoderKL, "AutoencoderKLTemporalDecoder": AutoencoderKLTemporalDecoder,
            "UNet2DConditionModel": UNet2DConditionModel,
            "UNetSpatioTemporalConditionModel": UNetSpatioTemporalConditionModel}
COMPONENTS = ("vae", "image_unet", "video_unet")


class OrbitVideoModel(nn.Module):
    """Container of the networks; sampling lives in sampler.py, training in trainer.py."""

    def __init__(self, config: VideoModelConfig, text_encoder: FrozenTextEncoder, vae: nn.Module,
                 image_unet: UNet2DConditionModel, video_unet: UNetSpatioTemporalConditionModel,
                 image_scheduler: dict, video_scheduler: dict, image_encoder: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        self.text_encoder = text_encoder
        self.vae = vae
        self.image_unet = image_unet
        self.video_unet = video_unet
        self.image_encoder = image_encoder
        if image_encoder is not None:
            image_encoder.requires_grad_(False)
        self.image_scheduler = dict(image_scheduler)
        self.video_scheduler = dict(video_scheduler)

    @classmethod
    def build(cls, config: VideoModelConfig, text_encoder: FrozenTextEncoder | None = None) -> OrbitVideoModel:
        """From scratch (tiny/small) or from the local pretrained paths in the config (paper)."""
        text_encoder = text_encoder or load_text_encoder(config.text_encoder_path, config.max_text_tokens)
        image_encoder = None
        if config.svd_path and (Path(config.svd_path) / "image_encoder").is_dir():
            from transformers import CLIPVisionModelWithProjection

            image_encoder = CLIPVisionModelWithProjection.from_pretrained(
                config.svd_path, subfolder="image_encoder", local_files_only=True)
        cond_dim = image_encoder.config.projection_dim if image_encoder is not None else text_encoder.dim
        return cls(config, text_encoder, build_vae(config), build_image_unet(config, text_encoder.dim),
                   build_video_unet(config, cond_dim), scheduler_config(config, "image"),
                   scheduler_config(config, "video"), image_encoder)

    @property
    def device(self) -> torch.device:
        return next(self.video_unet.parameters()).device

    def video_context(self, images: torch.Tensor, pooled_text: torch.Tensor) -> torch.Tensor:
        """Stage-2 cross-attention context [B, 1, D]: CLIP image embedding (SVD) or the pooled text (scratch).

        images [B, 3, H, W] in [-1, 1] (the conditioning first frame); pooled_text [B, D_text].
        """
        assert images.dim() == 4 and pooled_text.shape[0] == images.shape[0], (images.shape, pooled_text.shape)
        if self.image_encoder is None:
            return pooled_text[:, None, :]
        x = torch.nn.functional.interpolate((images + 1) / 2, size=(224, 224), mode="bicubic", align_corners=False)
        mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
        with torch.no_grad():
            emb = self.image_encoder(pixel_values=((x - mean) / std).to(self.image_encoder.dtype)).image_embeds
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
            text_encoder = load_text_encoder(ref["path"] if config.text_encoder_path else None, config.max_text_tokens)
        got = text_encoder_reference(text_encoder)["sha256"]
        if got != ref["sha256"]:
            raise ValueError(f"text encoder weights {got[:12]} differ from the ones the model was trained with "
                             f"({ref['sha256'][:12]})")
        # low-memory loading needs accelerate; without it diffusers warns on every load and falls back anyway
        low_mem = importlib.util.find_spec("accelerate") is not None
        parts = {name: _CLASSES[index[name][1]].from_pretrained(src / name, local_files_only=True,
                                                                  low_cpu_mem_usage=low_mem)
                 for name in COMPONENTS}
        image_encoder = None
        if "image_encoder" in index:
            from transformers import CLIPVisionModelWithProjection

            image_encoder = CLIPVisionModelWithProjection.from_pretrained(src / "image_encoder", local_files_only=True)
        scheds = [json.loads((src / sub / "source_config.json").read_text())
                  for sub in ("scheduler", "video_scheduler")]
        return cls(config, text_encoder, parts["vae"], parts["image_unet"], parts["video_unet"], *scheds,
                   image_encoder=image_encoder)


def text_encoder_reference(encoder: FrozenTextEncoder) -> dict:
    """Where the frozen text encoder comes from and the sha256 of its weight file(s)."""
    files = sorted(Path(encoder.source).rglob("*.safetensors")) or sorted(Path(encoder.source).rglob("*.bin"))
    digest = "+".join(_file_digest(str(f), f.stat().st_size, f.stat().st_mtime_ns)[:16] for f in files)
    return {"path": encoder.source, "class": type(encoder.model).__name__, "sha256": digest}


@functools.lru_cache(maxsize=16)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of a file, cached per (path, size, mtime)."""
    return sha256_file(path)


def _diffusers_version() -> str:
    import diffusers

    return diffusers.__version__
