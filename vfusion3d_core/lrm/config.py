"""Configuration of the triplane LRM (hyper-parameters only, no weights)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from vfusion3d_core.config import ConfigBase

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

# Released model kwargs that are known and deliberately not fields of LRMConfig, with the reason.
# Any other key that is not a field is an error (a typo would otherwise silently fall back to a default).
OFFICIAL_IGNORED_KEYS: dict[str, str] = {
    "encoder_model_name": "the DINOv2 architecture comes from dino_config (weights from the checkpoint)",
    "encoder_type": "only the DINOv2 encoder exists here",
}

# Integer hyper-parameters that must be positive (checked before any arithmetic on them).
_POSITIVE_INT_FIELDS = (
    "camera_embed_dim", "rendering_samples_per_ray", "transformer_dim", "transformer_layers", "transformer_heads",
    "triplane_low_res", "triplane_high_res", "triplane_dim", "encoder_feat_dim", "source_size", "render_size",
    "decoder_hidden_dim", "decoder_layers", "source_camera_dim",
)
_POSITIVE_INT_DINO_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "patch_size", "num_channels")


class ConfigError(ValueError):
    """An LRM config that cannot be used: unreadable JSON, unknown keys or invalid values (all listed)."""


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


@dataclass
class LRMConfig(ConfigBase):
    """Hyper-parameters of the LRM.

    Field names follow the released VFusion3D model kwargs where one exists. ``dino_config`` is a
    transformers ``Dinov2Config`` dict; ``dino_pretrained_path`` (optional) is a local directory or
    hub id from which ``LRM(config)`` loads pretrained DINOv2 weights instead of random ones.
    """

    EXTRA_KEYS: ClassVar[frozenset[str]] = frozenset({"model_type", "format_version"})  # written by save
    ERROR: ClassVar[type[Exception]] = ConfigError

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
        """Raise ConfigError listing every invalid hyper-parameter (non-positive or non-integer sizes, head
        dims that do not divide, inconsistent resolutions); derived checks run only on valid sizes."""
        errors = [f"{name}={getattr(self, name)!r} must be a positive integer"
                  for name in _POSITIVE_INT_FIELDS if not _positive_int(getattr(self, name))]
        if not isinstance(self.dino_config, dict):
            raise ConfigError(f"invalid LRMConfig: dino_config must be a dict, got {type(self.dino_config).__name__}")
        dino = {k: self.dino_config.get(k) for k in _POSITIVE_INT_DINO_KEYS}
        errors += [f"dino_config.{k}={v!r} must be a positive integer" for k, v in dino.items() if not _positive_int(v)]
        ok = {name for name in _POSITIVE_INT_FIELDS if _positive_int(getattr(self, name))}
        ok |= {f"dino.{k}" for k, v in dino.items() if _positive_int(v)}
        if {"encoder_feat_dim", "dino.hidden_size"} <= ok and self.encoder_feat_dim != dino["hidden_size"]:
            errors.append(f"encoder_feat_dim={self.encoder_feat_dim} != dino_config.hidden_size={dino['hidden_size']}")
        if {"transformer_dim", "transformer_heads"} <= ok and self.transformer_dim % self.transformer_heads:
            errors.append(f"transformer_dim={self.transformer_dim} not divisible by "
                          f"transformer_heads={self.transformer_heads}")
        if {"dino.hidden_size", "dino.num_attention_heads"} <= ok and \
                dino["hidden_size"] % dino["num_attention_heads"]:
            errors.append(f"dino_config.hidden_size={dino['hidden_size']} not divisible by "
                          f"dino_config.num_attention_heads={dino['num_attention_heads']}")
        if {"triplane_low_res", "triplane_high_res"} <= ok and self.triplane_high_res != 2 * self.triplane_low_res:
            errors.append(f"triplane_high_res={self.triplane_high_res} must be 2 * triplane_low_res="
                          f"{self.triplane_low_res} (ConvTranspose2d k2 s2)")
        if "rendering_samples_per_ray" in ok and (self.rendering_samples_per_ray % 2 or
                                                  self.rendering_samples_per_ray < 8):
            errors.append(f"rendering_samples_per_ray={self.rendering_samples_per_ray} must be even and >= 8 "
                          "(half coarse, half importance)")
        if {"source_size", "dino.patch_size"} <= ok and self.source_size < dino["patch_size"]:
            errors.append(f"source_size={self.source_size} smaller than one DINOv2 patch ({dino['patch_size']})")
        if errors:
            raise ConfigError("invalid LRMConfig: " + "; ".join(errors))

    @classmethod
    def from_official_kwargs(cls, model_kwargs: dict[str, Any], dino_config: dict[str, Any] | None = None,
                             **overrides: Any) -> LRMConfig:
        """Build from the released model kwargs and a transformers Dinov2Config dict.

        Keys that are not fields of this class must be listed in ``OFFICIAL_IGNORED_KEYS`` (e.g.
        ``encoder_model_name``); any other is reported by name in a ConfigError, never dropped silently.
        ``overrides`` (e.g. ``source_size=512``) win over both.
        """
        if dino_config is not None and not isinstance(dino_config, dict):
            raise ConfigError(f"dino_config must be a JSON object, got {type(dino_config).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(model_kwargs) - names - set(OFFICIAL_IGNORED_KEYS))
        if unknown:
            raise ConfigError(f"unknown released model kwargs: {unknown} (known: the LRMConfig fields and "
                              f"{sorted(OFFICIAL_IGNORED_KEYS)})")
        kwargs = {k: v for k, v in model_kwargs.items() if k in names and k not in ("dino_config",)}
        dino = dict(DINOV2_BASE) if dino_config is None else clean_dino_config(dino_config)
        kwargs.update(overrides)
        return cls(dino_config=dino, **kwargs)

    @classmethod
    def presets(cls) -> dict[str, dict[str, Any]]:
        """``paper``: the released VFusion3D configuration (452M parameters, DINOv2-base at 512 px); ``small``:
        one GPU, a DINOv2-small-shaped encoder and 12 blocks of width 512; ``tiny``: CPU tests, an encoder built
        for 70 px (5x5 patches) and fed 64 px, so the released model's position-embedding resize path runs
        exactly as at 518 -> 512."""
        return {
            "paper": dict(camera_embed_dim=1024, rendering_samples_per_ray=128, transformer_dim=1024,
                          transformer_layers=16, transformer_heads=16, triplane_low_res=32, triplane_high_res=64,
                          triplane_dim=80, encoder_feat_dim=768, source_size=512, render_size=384,
                          dino_config=dict(DINOV2_BASE)),
            "small": dict(camera_embed_dim=512, rendering_samples_per_ray=96, transformer_dim=512,
                          transformer_layers=12, transformer_heads=8, triplane_low_res=32, triplane_high_res=64,
                          triplane_dim=40, encoder_feat_dim=384, source_size=336, render_size=192,
                          dino_config=dict(DINOV2_BASE, hidden_size=384, num_attention_heads=6)),
            "tiny": dict(camera_embed_dim=32, rendering_samples_per_ray=32, transformer_dim=32, transformer_layers=2,
                         transformer_heads=4, triplane_low_res=8, triplane_high_res=16, triplane_dim=8,
                         encoder_feat_dim=32, source_size=64, render_size=32, decoder_hidden_dim=32,
                         dino_config=dict(DINOV2_BASE, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                          image_size=70)),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (round-trips through ``from_dict``)."""
        out = dataclasses.asdict(self)
        out["dino_config"] = clean_dino_config(self.dino_config)
        return out

    def save(self, path: str | Path) -> None:
        """Write as JSON."""
        Path(path).write_text(json.dumps({"model_type": "vfusion3d_lrm", **self.to_dict()}, indent=2))

    @classmethod
    def load(cls, path: str | Path) -> LRMConfig:
        """Read a JSON file written by ``save``; every failure is one ConfigError naming the file."""
        data = read_json(path)
        try:
            return cls.from_dict(data)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from err


def read_json(path: str | Path) -> Any:
    """Parse a JSON file; ConfigError naming the file and the position (line, column) of a syntax error,
    or the reason it cannot be read (missing, not UTF-8)."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON at line {err.lineno} column {err.colno} "
                          f"(char {err.pos}): {err.msg}") from err
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read the config ({type(err).__name__}: {err})") from err


def clean_dino_config(dino_config: dict[str, Any]) -> dict[str, Any]:
    """Drop bookkeeping keys (versions, names, dtypes) from a Dinov2Config dict."""
    return {k: v for k, v in dino_config.items() if k not in _DINO_VOLATILE_KEYS}
