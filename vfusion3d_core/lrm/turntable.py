"""Turntable videos: mp4 through imageio-ffmpeg when installed, otherwise an animated gif."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from .options import VIDEO_FORMATS


def has_ffmpeg() -> bool:
    """Whether imageio can write mp4 (the imageio-ffmpeg package is importable)."""
    return importlib.util.find_spec("imageio_ffmpeg") is not None


def write_video(frames: np.ndarray, stem: str | Path, fps: int = 30, fmt: str = "auto") -> Path:
    """frames uint8 [T, H, W, 3] -> ``stem``.mp4 or ``stem``.gif; returns the written path."""
    assert frames.ndim == 4 and frames.shape[-1] == 3 and frames.dtype == np.uint8, (frames.shape, frames.dtype)
    if fmt not in VIDEO_FORMATS:
        raise ValueError(f"unknown video format {fmt!r}; use one of {VIDEO_FORMATS}")
    if fmt == "auto":
        fmt = "mp4" if has_ffmpeg() else "gif"
    if fmt == "mp4" and not has_ffmpeg():
        raise RuntimeError("mp4 output needs the imageio-ffmpeg package; install it or use --video-format gif")
    path = Path(stem).with_suffix(f".{fmt}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "mp4":
        even = frames[:, : frames.shape[1] // 2 * 2, : frames.shape[2] // 2 * 2]  # yuv420p needs even sizes
        iio.imwrite(path, even, plugin="FFMPEG", fps=fps, codec="libx264", macro_block_size=1, quality=8)
    else:
        iio.imwrite(path, frames, duration=1000.0 / fps, loop=0)
    return path

