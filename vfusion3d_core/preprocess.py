"""Image preprocessing of a pretrained vision model, read from its own folder and run as batched tensor ops
on the model's device.

Hub folders hold the image processor's settings in ``preprocessor_config.json``; transformers 5's
``XProcessor.save_pretrained`` writes them nested under ``"image_processor"`` in ``processor_config.json``.
``ImagePreprocess.from_folder`` reads either and refuses a folder with neither (no silent defaults). The
supported steps are the ones of the DINOv2 (``BitImageProcessor``) and CLIP (``CLIPImageProcessor``)
processors: resize (shortest edge, or an exact height/width), centre crop, rescale, normalize.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

PREPROCESSOR_FILE = "preprocessor_config.json"
PROCESSOR_FILE = "processor_config.json"
# PIL.Image.Resampling values as the processors serialise them, and the torch modes that match them
RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}
RESAMPLE_NAMES = {"nearest": 0, "bilinear": 2, "bicubic": 3}


class PreprocessConfigError(ValueError):
    """A model folder without usable image processor settings; names the folder."""


@dataclass(frozen=True)
class ImagePreprocess:
    """Resize -> centre crop -> rescale -> normalize, as an image processor does it.

    ``shortest_edge``: resize so the shorter side has this length (aspect kept, the longer side truncated
    like transformers does); else ``resize_hw`` (height, width) exactly; neither = no resize.
    ``crop_hw``: centre crop (height, width) or None. ``resample``: nearest | bilinear | bicubic (antialiased
    like PIL when downscaling). ``rescale_factor`` multiplies 0..255 pixel values (1/255 maps them to [0, 1]).
    """

    shortest_edge: int | None = None
    resize_hw: tuple[int, int] | None = None
    crop_hw: tuple[int, int] | None = None
    resample: str = "bicubic"
    rescale_factor: float = 1 / 255
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        if self.resample not in RESAMPLE_NAMES:
            raise PreprocessConfigError(f"unsupported resample {self.resample!r}; supported: {sorted(RESAMPLE_NAMES)}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise PreprocessConfigError(f"mean/std must be 3 values with std > 0, got {self.mean} / {self.std}")

    @property
    def output_hw(self) -> tuple[int, int] | None:
        """(height, width) of the model input when it does not depend on the image size."""
        if self.crop_hw is not None:
            return self.crop_hw
        return self.resize_hw

    @classmethod
    def from_processor_dict(cls, cfg: dict[str, Any], source: str) -> ImagePreprocess:
        """Settings of an image processor config (``preprocessor_config.json`` contents); ``source`` names it
        in errors."""
        def hw(value: Any, what: str) -> tuple[int, int]:
            if isinstance(value, int):
                return (value, value)
            if isinstance(value, dict) and {"height", "width"} <= set(value):
                return (int(value["height"]), int(value["width"]))
            raise PreprocessConfigError(f"{source}: unsupported {what} {value!r}")

        shortest = resize = crop = None
        if cfg.get("do_resize", True):
            size = cfg.get("size")
            if isinstance(size, dict) and "shortest_edge" in size:
                if size.get("longest_edge"):
                    raise PreprocessConfigError(f"{source}: resize with longest_edge is not supported ({size})")
                shortest = int(size["shortest_edge"])
            elif size is not None:
                resize = hw(size, "size")
            else:
                raise PreprocessConfigError(f"{source}: do_resize is set but there is no size")
        if cfg.get("do_center_crop", False):
            if cfg.get("crop_size") is None:
                raise PreprocessConfigError(f"{source}: do_center_crop is set but there is no crop_size")
            crop = hw(cfg["crop_size"], "crop_size")
        resample = cfg.get("resample", 3)
        if isinstance(resample, int):
            if resample not in RESAMPLE:
                raise PreprocessConfigError(f"{source}: unsupported resample {resample} (supported {RESAMPLE})")
            resample = RESAMPLE[resample]
        rescale = float(cfg.get("rescale_factor", 1 / 255)) if cfg.get("do_rescale", True) else 1.0
        if cfg.get("do_normalize", True):
            if "image_mean" not in cfg or "image_std" not in cfg:
                raise PreprocessConfigError(f"{source}: do_normalize is set but image_mean/image_std are missing")
            mean, std = _triple(cfg["image_mean"]), _triple(cfg["image_std"])
        else:
            mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        return cls(shortest, resize, crop, str(resample), rescale, mean, std)

    @classmethod
    def from_folder(cls, folder: str | Path) -> ImagePreprocess:
        """The image processor settings saved in a model folder (see the module docstring)."""
        folder = Path(folder)
        pre, proc = folder / PREPROCESSOR_FILE, folder / PROCESSOR_FILE
        if pre.is_file():
            return cls.from_processor_dict(_read_json(pre), str(pre))
        if proc.is_file():
            data = _read_json(proc)
            nested = data.get("image_processor")
            if not isinstance(nested, dict):
                raise PreprocessConfigError(f"{proc}: no 'image_processor' settings inside")
            return cls.from_processor_dict(nested, f"{proc} [image_processor]")
        raise PreprocessConfigError(f"{folder}: no image processor settings ({PREPROCESSOR_FILE} or {PROCESSOR_FILE}); "
                                    "save the model's image processor into the folder (processor.save_pretrained)")

    @classmethod
    def from_model_folder(cls, folder: str | Path, kind: str, model: str) -> ImagePreprocess:
        """``from_folder`` for a transformers model folder of ``kind`` (e.g. "DINOv2", "CLIP"): a folder without
        ``config.json`` is a FileNotFoundError saying it is not a ``model`` (e.g. "Dinov2Model folder"), missing
        processor settings a PreprocessConfigError naming both."""
        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"{folder} is not a {model} (no config.json)")
        try:
            return cls.from_folder(folder)
        except PreprocessConfigError as exc:
            raise PreprocessConfigError(f"{kind} folder {folder}: {exc}") from exc

    def to_processor_dict(self) -> dict[str, Any]:
        """The settings as a ``preprocessor_config.json`` a transformers image processor can load."""
        out: dict[str, Any] = {"do_resize": self.shortest_edge is not None or self.resize_hw is not None,
                               "do_center_crop": self.crop_hw is not None, "do_rescale": True,
                               "rescale_factor": self.rescale_factor, "do_normalize": True,
                               "image_mean": list(self.mean), "image_std": list(self.std),
                               "resample": RESAMPLE_NAMES[self.resample], "do_convert_rgb": True}
        if self.shortest_edge is not None:
            out["size"] = {"shortest_edge": self.shortest_edge}
        elif self.resize_hw is not None:
            out["size"] = {"height": self.resize_hw[0], "width": self.resize_hw[1]}
        if self.crop_hw is not None:
            out["crop_size"] = {"height": self.crop_hw[0], "width": self.crop_hw[1]}
        return out

    def save(self, folder: str | Path, processor_type: str = "BitImageProcessor") -> Path:
        """Write ``preprocessor_config.json`` into ``folder``; returns its path."""
        path = Path(folder) / PREPROCESSOR_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**self.to_processor_dict(), "image_processor_type": processor_type}, indent=2,
                                   sort_keys=True))
        return path

    def __call__(self, images: torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
        """Images -> model pixel values float32 [N, 3, h, w] on ``device`` (default: the images' device).

        ``images``: uint8 [N, 3, H, W] (0..255; resized values are rounded back to 8 bits like a processor
        resizing 8-bit images does) or float [N, 3, H, W] in [0, 1].
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [N, 3, H, W], got {tuple(images.shape)}")
        eight_bit = images.dtype == torch.uint8
        x = images.to(device) if device is not None else images
        x = x.float() if eight_bit else x.float() * 255.0
        h, w = x.shape[-2:]
        target = None
        if self.shortest_edge is not None:
            short, long = (h, w) if h <= w else (w, h)
            other = int(self.shortest_edge * long / short)
            target = (self.shortest_edge, other) if h <= w else (other, self.shortest_edge)
        elif self.resize_hw is not None:
            target = self.resize_hw
        if target is not None and tuple(target) != (h, w):
            if self.resample == "nearest":
                x = F.interpolate(x, size=target, mode="nearest")
            else:
                x = F.interpolate(x, size=target, mode=self.resample, align_corners=False, antialias=True)
            x = x.clamp(0, 255)
            if eight_bit:
                x = x.round()
        if self.crop_hw is not None:
            x = center_crop(x, self.crop_hw)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x * self.rescale_factor - mean) / std


def center_crop(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Centre crop [..., H, W] to ``hw``, zero-padding a side that is smaller (as transformers' center_crop)."""
    ch, cw = hw
    h, w = x.shape[-2:]
    if ch > h or cw > w:
        ph, pw = max(ch - h, 0), max(cw - w, 0)
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        h, w = x.shape[-2:]
    top, left = (h - ch) // 2, (w - cw) // 2
    return x[..., top:top + ch, left:left + cw]


def _triple(values: Any) -> tuple[float, float, float]:
    vals = [float(v) for v in (values if isinstance(values, list | tuple) else [values] * 3)]
    if len(vals) != 3:
        raise PreprocessConfigError(f"expected 3 channel values, got {values!r}")
    return (vals[0], vals[1], vals[2])


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PreprocessConfigError(f"{path}: unreadable processor config: {exc}") from exc
    if not isinstance(data, dict):
        raise PreprocessConfigError(f"{path}: not a JSON object")
    return data
