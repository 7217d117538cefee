"""Configuration of the triplane LRM (hyper-parameters only, no weights)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Keys of a transformers ``Dinov2Config`` that only describe bookkeeping and are dropped on export.
_DINO_VOLATILE_KEYS = ("transformers_version", "_name_or_path", "architectures", "dtype", "torch_dtype")

# DINOv2-base (ViT-B/14) as used by the released VFusion3D model.
DINOV2_BASE: dict[str, Any] = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "mlp_ratio": 4,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-6,
    "image_size": 518,
    "patch_size": 14,
    "num_channels": 3,
    "qkv_bias": True,
    "layerscale_value": 1.0,
    "use_swiglu_ffn": False,
    "use_mask_token": True,
}


@dataclass
class LRMConfig:
    """Hyper-parameters of the LRM.

    Field names follow the released VFusion3D model kwargs where one exists. ``dino_config`` is a
    transformers ``Dinov2Config`` dict; ``dino_pretrained_path`` (optional) is a local directory or
    hub id from which ``LRM(config)`` loads pretrained DINOv2 weights instead of random ones.
    """

    camera_embed_dim: int = 1024
    rendering_samples_per_ray: int = 128
    transformer_dim: int = 1024
    transformer_layers: int = 16
    transformer_heads: int = 16
    triplane_low_res: int = 32
    triplane_high_res: int = 64
    triplane_dim: int = 80
    encoder_feat_dim: int = 768
    encoder_freeze: bool = False
    source_size: int = 512  # input image resolution fed to DINOv2
    render_size: int = 384  # default output resolution
    decoder_hidden_dim: int = 64
    decoder_layers: int = 4  # linear layers in the decoder MLP
    source_camera_dim: int = 16
    dino_config: dict[str, Any] = field(default_factory=lambda: dict(DINOV2_BASE))
    dino_pretrained_path: str | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError on inconsistent hyper-parameters."""
        errors = []
        if self.encoder_feat_dim != int(self.dino_config.get("hidden_size", -1)):
            errors.append(f"encoder_feat_dim={self.encoder_feat_dim} != dino hidden_size="
                          f"{self.dino_config.get('hidden_size')}")
        if self.transformer_dim % self.transformer_heads:
            errors.append(f"transformer_dim={self.transformer_dim} not divisible by heads={self.transformer_heads}")
        if self.triplane_high_res != 2 * self.triplane_low_res:
            errors.append("triplane_high_res must be 2 * triplane_low_res (ConvTranspose2d k2 s2)")
        if self.rendering_samples_per_ray % 2 or self.rendering_samples_per_ray < 8:
            errors.append("rendering_samples_per_ray must be even and >= 8 (half coarse, half importance)")
        if self.source_size < int(self.dino_config.get("patch_size", 14)):
            errors.append("source_size smaller than one DINOv2 patch")
        if errors:
            raise ValueError("invalid LRMConfig: " + "; ".join(errors))

    @property
    def samples_coarse(self) -> int:
        """Stratified samples per ray (the other half are importance samples)."""
        return self.rendering_samples_per_ray // 2

    @classmethod
    def from_official_kwargs(cls, model_kwargs: dict[str, Any], dino_config: dict[str, Any] | None = None,
                             **overrides: Any) -> LRMConfig:
        """Build from the released model kwargs and a transformers Dinov2Config dict.

        Unknown keys (``encoder_freeze``, ``encoder_model_name``, ...) are accepted and ignored unless
        they are fields of this class. ``overrides`` (e.g. ``source_size=512``) win over both.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in model_kwargs.items() if k in names and k not in ("dino_config",)}
        dino = dict(DINOV2_BASE) if dino_config is None else clean_dino_config(dino_config)
        kwargs.update(overrides)
        return cls(dino_config=dino, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (round-trips through ``from_dict``)."""
        out = dataclasses.asdict(self)
        out["dino_config"] = clean_dino_config(self.dino_config)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LRMConfig:
        """Inverse of ``to_dict``; raises ValueError on unknown keys."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names - {"model_type", "format_version"})
        if unknown:
            raise ValueError(f"unknown LRMConfig keys: {unknown}")
        return cls(**{k: v for k, v in data.items() if k in names})

    def save(self, path: str | Path) -> None:
        """Write as JSON."""
        Path(path).write_text(json.dumps({"model_type": "vfusion3d_lrm", **self.to_dict()}, indent=2))

    @classmethod
    def load(cls, path: str | Path) -> LRMConfig:
        """Read a JSON file written by ``save``."""
        return cls.from_dict(json.loads(Path(path).read_text()))


def clean_dino_config(dino_config: dict[str, Any]) -> dict[str, Any]:
    """Drop bookkeeping keys (versions, names, dtypes) from a Dinov2Config dict."""
    return {k: v for k, v in dino_config.items() if k not in _DINO_VOLATILE_KEYS}
