"""Training orbits: multi-view samples (renders_3d shards) as in-memory frame tensors with captions."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vfusion3d_core.data.sample import MultiviewSample
from vfusion3d_core.data.shards import iter_samples


def composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """uint8 [..., 4] straight-alpha RGBA -> uint8 [..., 3] over a white background."""
    a = rgba[..., 3:4].astype(np.float32) / 255.0
    return np.round(rgba[..., :3].astype(np.float32) * a + 255.0 * (1.0 - a)).astype(np.uint8)


@dataclass
class OrbitData:
    """frames uint8 [N, F, S, S, 3] (orbit order, frame 0 = azimuth 0); captions and keys (N)."""

    frames: torch.Tensor
    captions: list[str]
    keys: list[str]

    def __post_init__(self) -> None:
        n = self.frames.shape[0]
        assert self.frames.dim() == 5 and self.frames.shape[-1] == 3 and self.frames.dtype == torch.uint8, \
            (self.frames.shape, self.frames.dtype)
        assert len(self.captions) == n == len(self.keys), (n, len(self.captions), len(self.keys))
        if n == 0:
            raise ValueError("no training orbits")

    def __len__(self) -> int:
        return self.frames.shape[0]

    @property
    def num_frames(self) -> int:
        return self.frames.shape[1]

    def batch(self, index: torch.Tensor) -> torch.Tensor:
        """Orbits at ``index`` [B] as float [B, F, 3, S, S] in [-1, 1]."""
        x = self.frames[index].permute(0, 1, 4, 2, 3).float()
        return x / 127.5 - 1.0

    @classmethod
    def from_samples(cls, samples: Iterable[MultiviewSample], num_frames: int, resolution: int,
                     limit: int | None = None) -> OrbitData:
        """Orbits of exactly ``num_frames`` views, resized (area) to ``resolution`` when needed."""
        frames, captions, keys = [], [], []
        for s in samples:
            if s.num_views != num_frames:
                raise ValueError(f"{s.key}: {s.num_views} views, the video model needs {num_frames}-frame orbits")
            rgb = torch.from_numpy(composite_on_white(s.views))  # [F, S, S, 3]
            if rgb.shape[1] != resolution:
                x = torch.nn.functional.interpolate(rgb.permute(0, 3, 1, 2).float(), size=(resolution, resolution),
                                                    mode="area")
                rgb = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
            frames.append(rgb)
            captions.append(s.caption)
            keys.append(s.key)
            if limit and len(keys) >= limit:
                break
        if not frames:
            raise ValueError("no training orbits")
        return cls(torch.stack(frames), captions, keys)

    @classmethod
    def from_shards(cls, shards: list[str | Path], num_frames: int, resolution: int,
                    limit: int | None = None) -> OrbitData:
        return cls.from_samples(iter_samples(shards), num_frames, resolution, limit)


def orbit_sheet(videos: list[np.ndarray], height: int = 48) -> np.ndarray:
    """Preview image: one row per video ([F, S, S, 3] uint8), its frames side by side, each row scaled
    (nearest) to ``height`` pixels -> uint8 [rows * height, F * height, 3]."""
    assert videos and all(v.ndim == 4 and v.shape[-1] == 3 for v in videos), [v.shape for v in videos]
    rows = []
    for v in videos:
        idx = (np.arange(height) * v.shape[1] // height)  # nearest-neighbour rows/columns
        rows.append(np.concatenate(list(v[:, idx][:, :, idx]), axis=1))
    width = max(r.shape[1] for r in rows)
    return np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows])
