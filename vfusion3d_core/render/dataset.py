"""Render a set of source objects into train / held-out multi-view shards (the `renders_3d` artifact)."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image

from vfusion3d_core import code_versions
from vfusion3d_core.cameras import DEFAULT_FOCAL, DEFAULT_RADIUS, Intrinsics
from vfusion3d_core.data.sample import MultiviewSample
from vfusion3d_core.data.shards import ShardWriter
from vfusion3d_core.objects.folder import SkippedFile
from vfusion3d_core.objects.listing import (
    ListedObject,
    ObjectListingConfig,
    build_listing,
    load_listed_object,
    object_seed,
)
from vfusion3d_core.objects.mesh import MeshError
from vfusion3d_core.render.views import render_orbit

CODE_VERSION = code_versions.RENDERS_3D  # vfusion3d_core/code_versions.py: bump it there
SPLITS = ("train", "heldout")


@dataclass
class RenderSettings:
    """How each object is rendered: the orbit, the image size and the shard size. ``seed`` draws each object's
    elevation (from its uid, so a partition renders the same bytes wherever it runs)."""

    resolution: int = 64
    num_views: int = 16
    elevation_min_deg: float = 0.0
    elevation_max_deg: float = 45.0
    radius: float = DEFAULT_RADIUS
    focal: float = DEFAULT_FOCAL
    seed: int = 0
    samples_per_shard: int = 32

    def __post_init__(self) -> None:
        if self.num_views < 1 or self.resolution < 8 or self.samples_per_shard < 1:
            raise ValueError(f"invalid sizes in {self}")
        if not 0.0 <= self.elevation_min_deg <= self.elevation_max_deg < 90.0:
            raise ValueError("need 0 <= elevation_min_deg <= elevation_max_deg < 90")

    @classmethod
    def preset(cls, name: str, **overrides: object) -> RenderSettings:
        """tiny: 64^2; small: 256^2; paper: 512^2 (the paper's renders)."""
        return cls(**{**_preset_sizes(name, RENDER_SIZES), **overrides})  # type: ignore[arg-type]


# per preset: how objects are rendered, and how many objects in what partitions
RENDER_SIZES = {"tiny": dict(resolution=64, samples_per_shard=32), "small": dict(resolution=256, samples_per_shard=128),
                "paper": dict(resolution=512, samples_per_shard=256)}
LISTING_SIZES = {"tiny": dict(num_objects=64, num_heldout=16, objects_per_partition=40),
                 "small": dict(num_objects=2000, num_heldout=100, objects_per_partition=500),
                 "paper": dict(num_objects=100_000, num_heldout=1000, objects_per_partition=1000)}


def _preset_sizes(name: str, table: dict[str, dict]) -> dict:
    if name not in table:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(table)}")
    return table[name]


def listing_preset(name: str, **overrides: object) -> ObjectListingConfig:
    """tiny: 64 + 16 objects in partitions of 40; small: 2,000 + 100 by 500; paper: 100,000 + 1,000 by 1,000."""
    return ObjectListingConfig(**{**_preset_sizes(name, LISTING_SIZES), **overrides})  # type: ignore[arg-type]


@dataclass
class RenderDatasetConfig(RenderSettings):
    """A whole dataset in one call (``render_dataset``): the source listing's fields plus the render settings."""

    source: Literal["procedural", "folder", "listing"] = "procedural"
    folder: str | None = None
    listing: str | None = None
    captions_csv: str | None = None
    num_objects: int = 64  # training objects (folder / listing source: at most this many, 0 = all)
    num_heldout: int = 16
    objects_per_partition: int = 1_000_000  # one call renders everything; partitions matter to the pipeline
    up_axis: Literal["y", "z"] = "y"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.listing_config()  # validates the source fields

    def listing_config(self) -> ObjectListingConfig:
        return ObjectListingConfig(**{f.name: getattr(self, f.name) for f in fields(ObjectListingConfig)})

    def render_settings(self) -> RenderSettings:
        return RenderSettings(**{f.name: getattr(self, f.name) for f in fields(RenderSettings)})

    @classmethod
    def preset(cls, name: str, **overrides: object) -> RenderDatasetConfig:
        """tiny: 64 + 16 objects at 64^2; small: 2,000 + 100 at 256^2; paper: 100,000 + 1,000 at 512^2."""
        sizes = {**_preset_sizes(name, RENDER_SIZES), **_preset_sizes(name, LISTING_SIZES)}
        sizes.pop("objects_per_partition")
        return cls(**{**sizes, **overrides})  # type: ignore[arg-type]


@dataclass
class RenderDatasetResult:
    files: list[str]  # relative paths written into the output directory
    counts: dict[str, int]
    skipped: list[SkippedFile] = field(default_factory=list)
    preview: str = "preview.png"


def render_dataset(cfg: RenderDatasetConfig, out_dir: str | Path,
                   progress: Callable[[int, int], None] | None = None) -> RenderDatasetResult:
    """Every object of ``cfg``'s source, rendered into ``out_dir`` in one call (see ``render_objects``)."""
    listing = build_listing(cfg.listing_config())
    return render_objects(listing.rows, cfg.render_settings(), out_dir, progress, listing.skipped,
                          world_seed=cfg.seed, up_axis=cfg.up_axis)


def render_objects(rows: list[ListedObject], settings: RenderSettings, out_dir: str | Path,
                   progress: Callable[[int, int], None] | None = None, skipped: list[SkippedFile] | None = None,
                   world_seed: int = 0, up_axis: str = "y") -> RenderDatasetResult:
    """Render each listed object as a ``num_views`` orbit into ``out_dir/{train,heldout}/shard-*.tar``.

    Also writes ``objects.csv`` (uid, split, caption, elevation) and a contact-sheet ``preview.png``. An object
    that cannot be loaded or rendered is skipped with its reason (``result.skipped``) and the others go on.
    Output bytes depend only on the rows and settings (same seed -> identical files).
    """
    out = Path(out_dir)
    skipped = list(skipped or [])
    intrinsics = Intrinsics(settings.focal, settings.focal)
    elevation_range = (settings.elevation_min_deg, settings.elevation_max_deg)
    table: list[tuple[str, str, str, float]] = []
    thumbs: list[np.ndarray] = []
    files: list[str] = []
    counts = {"objects": 0, "views": 0, "train_objects": 0, "heldout_objects": 0}
    done = 0
    for split in SPLITS:
        with ShardWriter(out / split, settings.samples_per_shard) as writer:
            for row in (r for r in rows if r.split == split):
                done += 1
                try:
                    mesh = load_listed_object(row, world_seed, up_axis)
                    gen = torch.Generator().manual_seed(object_seed(settings.seed, mesh.uid))
                    views = render_orbit(mesh, settings.resolution, settings.num_views, elevation_range,
                                         settings.radius, intrinsics, gen)
                except Exception as exc:  # one object's failure never ends the batch (bad-item policy)
                    reason = str(exc) if isinstance(exc, MeshError) else f"{type(exc).__name__}: {exc}"
                    skipped.append(SkippedFile(row.location, f"{row.uid}: {reason}"))
                    continue
                finally:
                    if progress:
                        progress(done, len(rows))
                cams = views.cameras
                elevation = float(cams.elevation_deg[0])
                meta = {"uid": mesh.uid, "split": split, "source": mesh.meta.get("source", "procedural"),
                        "elevation_deg": elevation, "azimuth_deg": cams.azimuth_deg.tolist(),
                        "radius": float(cams.radius[0]), "num_views": len(cams)}
                writer.write(MultiviewSample(mesh.uid, mesh.caption, views.rgba, cams.c2w.numpy(),
                                             cams.intrinsics.numpy(), meta))
                table.append((mesh.uid, split, mesh.caption, round(elevation, 4)))
                if len(thumbs) < 16:
                    thumbs.append(views.rgba[0])
                counts["objects"] += 1
                counts[f"{split}_objects"] += 1
                counts["views"] += len(cams)
        counts[f"{split}_shards"] = len(writer.shards)
        files += [f"{split}/{p.name}" for p in writer.shards]
    counts["skipped_files"] = len(skipped)
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([("uid", "split", "caption", "elevation_deg"), *table])
    (out / "objects.csv").write_text(buf.getvalue(), encoding="utf-8")
    files.append("objects.csv")
    if thumbs:
        contact_sheet(thumbs).save(out / "preview.png", format="PNG")
        files.append("preview.png")
    return RenderDatasetResult(files, counts, skipped)


def contact_sheet(images: list[np.ndarray], columns: int = 8) -> Image.Image:
    """RGBA uint8 [S, S, 4] images composited on white, in a grid."""
    s = images[0].shape[0]
    rows = (len(images) + columns - 1) // columns
    sheet = np.full((rows * s, columns * s, 3), 255, np.uint8)
    for i, img in enumerate(images):
        a = img[..., 3:4].astype(np.float32) / 255.0
        rgb = img[..., :3].astype(np.float32) * a + 255.0 * (1 - a)
        r, c = divmod(i, columns)
        sheet[r * s:(r + 1) * s, c * s:(c + 1) * s] = np.round(rgb).astype(np.uint8)
    return Image.fromarray(sheet)
