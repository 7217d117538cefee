"""The multi-view sample schema shared by 3D renders and filtered synthetic videos.

One WebDataset sample per object; members of sample KEY in a tar shard:

    KEY.000.png ... KEY.{V-1:03d}.png   RGBA views, straight alpha (coverage / foreground mask)
    KEY.c2w.npy                         float32 [V, 4, 4] camera-to-world, OpenGL axes (cameras.py)
    KEY.intrinsics.npy                  float32 [V, 4] normalized (fx, fy, cx, cy)
    KEY.caption.txt                     UTF-8 caption
    KEY.meta.json                       uid, source, elevation_deg, azimuth_deg [V], radius, split, ...
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

VIEW_SUFFIX = ".png"
SAMPLE_KEY_RE = re.compile(r"[A-Za-z0-9-][A-Za-z0-9_-]*")
# Refuse absurd images before decoding (decompression bombs).
MAX_VIEW_PIXELS = 4096 * 4096


class SampleError(ValueError):
    """A sample that does not follow the schema."""


@dataclass
class MultiviewSample:
    """views uint8 [V, S, S, 4]; c2w float32 [V, 4, 4]; intrinsics float32 [V, 4]."""

    key: str
    caption: str
    views: np.ndarray
    c2w: np.ndarray
    intrinsics: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        v = self.views.shape[0]
        if self.views.ndim != 4 or self.views.shape[-1] != 4 or self.views.dtype != np.uint8:
            raise SampleError(f"{self.key}: views must be uint8 [V, S, S, 4], "
                              f"got {self.views.dtype} {self.views.shape}")
        if self.c2w.shape != (v, 4, 4) or self.intrinsics.shape != (v, 4):
            raise SampleError(f"{self.key}: cameras {self.c2w.shape}/{self.intrinsics.shape} do not match {v} views")
        if not (np.isfinite(self.c2w).all() and np.isfinite(self.intrinsics).all()):
            raise SampleError(f"{self.key}: non-finite camera values")
        check_cameras(self.key, self.c2w, self.intrinsics)
        check_sample_key(self.key)

    @property
    def num_views(self) -> int:
        return self.views.shape[0]

    def to_wds(self) -> dict[str, Any]:
        """Encode as a WebDataset sample dict of bytes (deterministic for equal inputs)."""
        out: dict[str, Any] = {"__key__": self.key, **encode_png_sequence(self.views, "RGBA")}
        out["c2w.npy"] = _npy_bytes(self.c2w.astype(np.float32))
        out["intrinsics.npy"] = _npy_bytes(self.intrinsics.astype(np.float32))
        out["caption.txt"] = self.caption.encode("utf-8")
        out["meta.json"] = json.dumps(self.meta, sort_keys=True).encode("utf-8")
        return out

    @classmethod
    def from_wds(cls, sample: dict[str, Any]) -> MultiviewSample:
        """Decode a raw WebDataset sample (member suffix -> bytes)."""
        key = sample.get("__key__", "?")
        source = f"{sample.get('__url__', '?')}:{key}"
        view_names = png_member_names(sample, source)
        missing = [m for m in ("c2w.npy", "intrinsics.npy", "caption.txt", "meta.json") if m not in sample]
        if not view_names or missing:
            raise SampleError(f"{source}: incomplete sample (views: {len(view_names)}, missing {missing})")
        views = np.stack([decode_member(sample, n, source, lambda b: decode_png(b, "RGBA")) for n in view_names])
        c2w = decode_member(sample, "c2w.npy", source, load_npy)
        intrinsics = decode_member(sample, "intrinsics.npy", source, load_npy)
        caption = decode_member(sample, "caption.txt", source, lambda b: b.decode("utf-8"))
        meta = decode_member(sample, "meta.json", source, json.loads)
        try:
            return cls(key, caption, views, c2w, intrinsics, meta)
        except SampleError as exc:
            raise SampleError(f"{source}: {exc}") from exc


def load_npy(data: bytes) -> np.ndarray:
    """An ``.npy`` member; object arrays are refused, never unpickled."""
    return np.load(io.BytesIO(data), allow_pickle=False)


def decode_member(sample: dict[str, Any], name: str, source: str, decode: Callable[[bytes], Any]) -> Any:
    """``decode(sample[name])``; a failure raises SampleError naming the member (``<key>.<name>``) and ``source``
    (``shard:key``) with the reason, never the in-memory buffer it was read from."""
    member = f"{sample.get('__key__', '?')}.{name}"
    try:
        return decode(sample[name])
    except UnidentifiedImageError as exc:
        raise SampleError(f"{source}: cannot decode member {member}: not a readable image") from exc
    except (OSError, ValueError, UnicodeDecodeError, Image.DecompressionBombError) as exc:
        raise SampleError(f"{source}: cannot decode member {member}: {exc}") from exc


def _npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def check_cameras(key: str, c2w: np.ndarray, intrinsics: np.ndarray, tol: float = 1e-3) -> None:
    """Cameras must be rigid camera-to-world transforms (orthonormal rotation, det +1, last row 0 0 0 1)
    with positive focal lengths: anything else makes the training rays undefined."""
    c2w = np.asarray(c2w, np.float64)
    rot = c2w[:, :3, :3]
    bad_rows = np.abs(c2w[:, 3] - np.array([0.0, 0.0, 0.0, 1.0])).max(axis=1) > tol
    bad_rot = np.abs(rot.transpose(0, 2, 1) @ rot - np.eye(3)).max(axis=(1, 2)) > tol
    bad_det = np.abs(np.linalg.det(rot) - 1.0) > tol
    bad = np.flatnonzero(bad_rows | bad_rot | bad_det)
    if len(bad):
        raise SampleError(f"{key}: camera {int(bad[0])} is not a rigid camera-to-world transform")
    if (np.asarray(intrinsics)[:, :2] <= 0).any():
        raise SampleError(f"{key}: focal lengths must be positive")


def check_sample_key(key: str) -> None:
    """Sample keys become tar member prefixes and file names: ASCII letters, digits, ``_`` and ``-`` only (no
    dots, slashes, spaces or control characters), not starting with ``_``."""
    if not SAMPLE_KEY_RE.fullmatch(key):
        raise SampleError(f"invalid sample key {key!r}")


def encode_png_sequence(images: np.ndarray, mode: str) -> dict[str, bytes]:
    """uint8 [N, S, S, C] -> {"000.png": bytes, ...} (deterministic PNG encoding)."""
    out = {}
    for i, image in enumerate(images):
        buf = io.BytesIO()
        Image.fromarray(image, mode).save(buf, format="PNG", optimize=False)
        out[f"{i:03d}{VIEW_SUFFIX}"] = buf.getvalue()
    return out


def png_member_names(sample: dict[str, Any], source: str) -> list[str]:
    """The numbered PNG members of a raw sample, in order; they must run 000, 001, ... without gaps."""
    names = sorted(k for k in sample if k.endswith(VIEW_SUFFIX) and k[:-len(VIEW_SUFFIX)].isdigit())
    if names != [f"{i:03d}{VIEW_SUFFIX}" for i in range(len(names))]:
        expected = {f"{i:03d}{VIEW_SUFFIX}" for i in range(len(names))}
        odd = [f"{sample.get('__key__', '?')}.{n}" for n in names if n not in expected]
        raise SampleError(f"{source}: image members are not numbered 000..{len(names) - 1:03d} (out of place: {odd})")
    return names


def decode_png(data: bytes, mode: str) -> np.ndarray:
    """PNG bytes -> uint8 array in ``mode``; refuses images above MAX_VIEW_PIXELS before decoding."""
    img = Image.open(io.BytesIO(data))
    if img.width * img.height > MAX_VIEW_PIXELS:
        raise ValueError(f"image of {img.width}x{img.height} pixels exceeds the limit")
    return np.asarray(img.convert(mode))
