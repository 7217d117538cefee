"""Unposed object clips: the video prior's pretraining data (the stand-in for EMU Video's web-scale videos).

The paper's video model knows objects and motion before it sees one posed 3D render, because EMU Video was
pretrained on web video. The stand-in here: clips of a large object population, each filmed along a random
camera path that carries no pose labels the model could rely on: a random start azimuth, angular speed and
direction, an elevation that drifts, and a pale background tint. Fine-tuning the temporal layers on a few
posed orbits (frame i at azimuth i * 360 / F, white background) then teaches the fixed orbit, as in the paper.

Clips are written as ``MultiviewSample`` WebDataset shards whose views are already composited on their tint
(alpha 255), so ``video.data.OrbitShards`` streams them like renders; the cameras stored with them are the
true ones (the video trainer never reads cameras).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vfusion3d_core.cameras import DEFAULT_RADIUS, Intrinsics, spherical_cameras
from vfusion3d_core.data.sample import MultiviewSample
from vfusion3d_core.data.shards import ShardWriter
from vfusion3d_core.objects.listing import ListedObject, load_listed_object, object_seed
from vfusion3d_core.render.views import render_views
from vfusion3d_core.video.data import composite_over


@dataclass
class ClipSettings:
    """The random camera path of a clip: per clip, a start azimuth in [0, 360), a speed drawn from
    ``speed_deg`` (degrees per frame) in a random direction, a start elevation from ``elevation_deg`` drifting by
    up to ``elevation_drift_deg`` per frame, and a background 255 - U(0, ``max_tint``) per channel."""

    resolution: int = 64
    num_frames: int = 16
    speed_deg: tuple[float, float] = (8.0, 36.0)
    elevation_deg: tuple[float, float] = (-5.0, 50.0)
    elevation_drift_deg: float = 2.0
    max_tint: int = 40
    radius: float = DEFAULT_RADIUS
    seed: int = 0
    samples_per_shard: int = 64

    def __post_init__(self) -> None:
        self.speed_deg = tuple(self.speed_deg)  # type: ignore[assignment]
        self.elevation_deg = tuple(self.elevation_deg)  # type: ignore[assignment]
        if self.num_frames < 2 or self.resolution < 8 or self.samples_per_shard < 1:
            raise ValueError(f"invalid sizes in {self}")
        if not 0 <= self.max_tint <= 255 or self.speed_deg[0] > self.speed_deg[1]:
            raise ValueError(f"max_tint must be in [0, 255] and speed_deg ordered, got {self}")


def clip_path(settings: ClipSettings, rng: np.random.Generator) -> dict:
    """One clip's random camera path and tint: azimuth_deg / elevation_deg [F] lists, tint [3] ints."""
    f = settings.num_frames
    speed = rng.uniform(*settings.speed_deg) * rng.choice([-1.0, 1.0])
    azimuth = (rng.uniform(0.0, 360.0) + speed * np.arange(f)) % 360.0
    drift = rng.uniform(-settings.elevation_drift_deg, settings.elevation_drift_deg)
    lo, hi = settings.elevation_deg
    elevation = np.clip(rng.uniform(lo, hi) + drift * np.arange(f), -80.0, 80.0)
    tint = 255 - rng.integers(0, settings.max_tint + 1, size=3)
    return {"azimuth_deg": azimuth.tolist(), "elevation_deg": elevation.tolist(), "tint": tint.tolist(),
            "speed_deg": float(speed)}


def composite_on(rgba: np.ndarray, background: list[int]) -> np.ndarray:
    """uint8 [..., 4] straight alpha over an RGB background -> uint8 [..., 4] with alpha 255 (``composite_over``)."""
    return np.concatenate([composite_over(rgba, background), np.full_like(rgba[..., 3:], 255)], axis=-1)


def render_clips(rows: list[ListedObject], settings: ClipSettings, out_dir: str | Path, world_seed: int,
                 progress: Callable[[int, int], None] | None = None) -> tuple[dict[str, int], list[str]]:
    """Film every listed object along its own random path into ``out_dir/shard-*.tar``: (counts, skipped) where an
    object that cannot be built or rendered is skipped as "uid: reason" and the others go on. Bytes depend only on
    the inputs."""
    out = Path(out_dir)
    intrinsics = Intrinsics()
    counts = {"clips": 0, "frames": 0}
    skipped: list[str] = []
    with ShardWriter(out, settings.samples_per_shard) as writer:
        for i, row in enumerate(rows):
            try:
                mesh = load_listed_object(row, world_seed)
                path = clip_path(settings, np.random.default_rng(object_seed(settings.seed, row.uid)))
                cams = spherical_cameras(torch.tensor(path["azimuth_deg"]), torch.tensor(path["elevation_deg"]),
                                         settings.radius, intrinsics)
                views = render_views(mesh, cams, settings.resolution)
            except Exception as exc:  # one object's failure never ends the batch (bad-item policy)
                skipped.append(f"{row.uid}: {type(exc).__name__}: {exc}")
                continue
            finally:
                if progress:
                    progress(i + 1, len(rows))
            writer.write(MultiviewSample(row.uid, row.caption, composite_on(views.rgba, path["tint"]),
                                         cams.c2w.numpy(), cams.intrinsics.numpy(), {"uid": row.uid, **path}))
            counts["clips"] += 1
            counts["frames"] += settings.num_frames
    counts.update(shards=len(writer.shards), skipped=len(skipped))
    return counts, skipped
