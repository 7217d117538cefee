"""Input images for ``generate``: safe decoding, foreground alpha, recentring, white compositing."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .options import DEFAULT_MAX_PIXELS  # noqa: F401  (re-exported)

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
            upright = ImageOps.exif_transpose(img)  # camera photos store their rotation in EXIF
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning, OSError,
            SyntaxError) as err:
        raise ImageError(f"{path}: cannot read image ({err})") from err
    return img if upright is None else upright


# Integer greyscale modes whose samples span 0..65535 (16-bit PNG/TIFF decode to one of these).
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def to_8bit(img: Image.Image) -> Image.Image:
    """16-bit greyscale (modes ``I;16*`` and ``I``) scaled to 8-bit ``L`` (v * 255 / 65535, rounded);
    other modes unchanged. PIL's own ``convert`` clips these samples at 255, turning them white."""
    if img.mode not in SIXTEEN_BIT_MODES:
        return img
    samples = np.asarray(img).astype(np.float64)
    if img.mode == "I" and (samples.min() < 0 or samples.max() > 65535):
        raise ImageError(f"32-bit integer image with samples in [{samples.min():.0f}, {samples.max():.0f}]: "
                         "only 16-bit ranges (0..65535) are supported")
    return Image.fromarray(np.round(samples * (255.0 / 65535.0)).astype(np.uint8), "L")


def to_rgba(img: Image.Image) -> tuple[np.ndarray, bool]:
    """(uint8 [H, W, 4], whether the image carries a non-trivial alpha channel)."""
    has_alpha = img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info
    rgba = np.asarray(to_8bit(img).convert("RGBA")).copy()
    return rgba, bool(has_alpha and (rgba[..., 3] < 255).any())


REMBG_INSTALL = "pip install 'vfusion3d[rembg]'"
REMBG_SKIP = ("or skip background removal with --remove-background never (the image's alpha channel, else the "
              "whole image, is the foreground)")


def rembg_status(model: str = REMBG_MODEL) -> tuple[bool, str]:
    """Whether rembg can run offline: (usable, explanation). Not usable when rembg cannot be imported (not
    installed, or a broken install such as one without onnxruntime) or its model file is not on disk."""
    try:
        import rembg  # noqa: F401  (optional dependency: the `rembg` extra)
    except ImportError as err:
        return False, f"rembg is not installed or cannot be imported ({err}); install it with {REMBG_INSTALL}"
    home = Path(os.environ.get("U2NET_HOME", Path.home() / ".u2net"))
    weights = home / f"{model}.onnx"
    if not weights.is_file():
        return False, (f"rembg model {weights} is not available locally (this project never downloads it); "
                       f"put {model}.onnx in $U2NET_HOME (default ~/.u2net)")
    return True, f"rembg ({model})"


def require_rembg(model: str = REMBG_MODEL) -> None:
    """Raise ImageError saying how to install rembg or how to skip it when background removal was asked for
    and rembg cannot run."""
    usable, why = rembg_status(model)
    if not usable:
        raise ImageError(f"background removal was asked for (--remove-background always) but {why}; {REMBG_SKIP}")


def remove_background(rgba: np.ndarray, model: str = REMBG_MODEL) -> np.ndarray:
    """Foreground alpha from rembg; raises ImageError (how to install rembg, how to skip) when rembg is unusable."""
    require_rembg(model)
    from rembg import new_session, remove  # optional dependency, imported only when usable

    out = remove(Image.fromarray(rgba[..., :3]), session=new_session(model))
    return np.asarray(out.convert("RGBA")).copy()


def padded_square(rgba: np.ndarray, size: int, border_ratio: float = 0.15) -> np.ndarray:
    """Crop to the alpha bounding box, resize so its long side spans ``size * (1 - 2 * border_ratio)``
    and centre it on a transparent ``size`` x ``size`` canvas. rgba uint8 [H, W, 4] -> uint8 [size, size, 4].

    The crop is resized *before* padding, so memory is proportional to the input plus the output, never
    to the long side squared (a 20000x300 strip would otherwise be padded to 20000x20000 first)."""
    assert 0 <= border_ratio < 0.5, border_ratio
    opaque = rgba[..., 3] > 0
    rows, cols = np.flatnonzero(opaque.any(axis=1)), np.flatnonzero(opaque.any(axis=0))  # no per-pixel indices
    del opaque
    if len(rows) == 0:
        raise ImageError("the image is fully transparent: no foreground to reconstruct")
    crop = rgba[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    h, w = crop.shape[:2]
    side = max(h, w) / (1 - 2 * border_ratio)  # the padded square, in input pixels
    scale = size / side
    new_h, new_w = max(1, min(size, int(round(h * scale)))), max(1, min(size, int(round(w * scale))))
    resized = np.asarray(Image.fromarray(np.ascontiguousarray(crop), "RGBA").resize(
        (new_w, new_h), Image.Resampling.LANCZOS))
    canvas = np.zeros((size, size, 4), dtype=np.uint8)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    canvas[top:top + new_h, left:left + new_w] = resized
    return canvas


def recentre(rgba: np.ndarray, size: int, border_ratio: float = 0.15) -> torch.Tensor:
    """Crop to the alpha bounding box, pad to a square with ``border_ratio`` margin on each side at
    ``size`` (see ``padded_square``) and composite on white. rgba uint8 [H, W, 4] -> [3, size, size] in [0, 1]."""
    square = padded_square(rgba, size, border_ratio)
    arr = torch.from_numpy(square.astype(np.float32) / 255.0).permute(2, 0, 1)  # [4, S, S]
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
