"""Input images for ``generate``: safe decoding, foreground alpha, recentring, white compositing."""

from __future__ import annotations

import importlib.util
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 64_000_000  # refuse larger images before decoding (decompression-bomb guard)
REMBG_MODEL = "u2net"


class ImageError(ValueError):
    """An input image cannot be used (unreadable, too large, fully transparent)."""


@dataclass
class Prepared:
    """A preprocessed input: ``image`` [3, S, S] float in [0, 1] composited on white, and the
    message explaining where its foreground mask came from."""

    image: torch.Tensor
    mask_source: str

    def to_pil(self) -> Image.Image:
        """The preprocessed input as an RGB PIL image."""
        arr = (self.image.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        return Image.fromarray(arr)


def open_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode an image file, refusing unreadable files and images above ``max_pixels``."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)  # reads the header only
            width, height = img.size
            if width * height > max_pixels:
                raise ImageError(f"{path}: {width}x{height} = {width * height} pixels exceeds the limit of "
                                 f"{max_pixels}; refusing to decode (decompression-bomb guard, see --max-pixels)")
            img.load()
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning, OSError,
            SyntaxError) as err:
        raise ImageError(f"{path}: cannot read image ({err})") from err
    return img


def to_rgba(img: Image.Image) -> tuple[np.ndarray, bool]:
    """(uint8 [H, W, 4], whether the image carries a non-trivial alpha channel)."""
    has_alpha = img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info
    rgba = np.asarray(img.convert("RGBA")).copy()
    return rgba, bool(has_alpha and (rgba[..., 3] < 255).any())


def rembg_status(model: str = REMBG_MODEL) -> tuple[bool, str]:
    """Whether rembg can run offline: (usable, explanation)."""
    if importlib.util.find_spec("rembg") is None:
        return False, "rembg is not installed (pip install rembg)"
    home = Path(os.environ.get("U2NET_HOME", Path.home() / ".u2net"))
    weights = home / f"{model}.onnx"
    if not weights.is_file():
        return False, f"rembg model {weights} is not available locally (this project never downloads it)"
    return True, f"rembg ({model})"


def remove_background(rgba: np.ndarray, model: str = REMBG_MODEL) -> np.ndarray:
    """Foreground alpha from rembg; raises ImageError when rembg is unusable."""
    usable, why = rembg_status(model)
    if not usable:
        raise ImageError(why)
    from rembg import new_session, remove  # optional dependency, imported only when usable

    out = remove(Image.fromarray(rgba[..., :3]), session=new_session(model))
    return np.asarray(out.convert("RGBA")).copy()


def recentre(rgba: np.ndarray, size: int, border_ratio: float = 0.15) -> torch.Tensor:
    """Crop to the alpha bounding box, pad to a square with ``border_ratio`` margin on each side,
    resize to ``size`` and composite on white. rgba uint8 [H, W, 4] -> [3, size, size] in [0, 1]."""
    assert 0 <= border_ratio < 0.5, border_ratio
    ys, xs = np.nonzero(rgba[..., 3] > 0)
    if len(ys) == 0:
        raise ImageError("the image is fully transparent: no foreground to reconstruct")
    crop = rgba[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    h, w = crop.shape[:2]
    side = max(1, int(round(max(h, w) / (1 - 2 * border_ratio))))
    canvas = np.zeros((side, side, 4), dtype=np.uint8)
    top, left = (side - h) // 2, (side - w) // 2
    canvas[top:top + h, left:left + w] = crop
    resized = np.asarray(Image.fromarray(canvas, "RGBA").resize((size, size), Image.Resampling.LANCZOS))
    arr = torch.from_numpy(resized.astype(np.float32) / 255.0).permute(2, 0, 1)  # [4, S, S]
    alpha = arr[3:4]
    return arr[:3] * alpha + (1 - alpha)


def prepare_image(path: str | Path, size: int, border_ratio: float = 0.15, background: str = "auto",
                  max_pixels: int = DEFAULT_MAX_PIXELS) -> Prepared:
    """Load and preprocess one input. ``background``: 'auto' (alpha channel, else rembg when usable,
    else the whole image), 'always' (rembg, error if unusable) or 'never' (alpha channel or whole image)."""
    rgba, has_alpha = to_rgba(open_image(path, max_pixels))
    if not (rgba[..., 3] > 0).any():
        raise ImageError(f"{path}: the image is fully transparent: no foreground to reconstruct")
    if background == "always" or (background == "auto" and not has_alpha and rembg_status()[0]):
        rgba, source = remove_background(rgba), "rembg"
    elif has_alpha:
        source = "alpha channel"
    else:
        why = rembg_status()[1] if background == "auto" else "background removal disabled"
        source = f"whole image (no alpha channel; {why})"
    return Prepared(recentre(rgba, size, border_ratio), source)
