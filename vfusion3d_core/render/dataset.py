"""Render a set of source objects into train / held-out multi-view shards (the `renders_3d` artifact)."""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image

from vfusion3d_core.cameras import DEFAULT_FOCAL, DEFAULT_RADIUS, Intrinsics
from vfusion3d_core.data.sample import MultiviewSample
from vfusion3d_core.data.shards import ShardWriter
from vfusion3d_core.objects import ColoredMesh, ProceduralObjectGenerator, load_mesh_folder, split_train_heldout
from vfusion3d_core.objects.folder import SkippedFile
from vfusion3d_core.render.views import render_orbit

CODE_VERSION = "renders_3d-v1"
SPLITS = ("train", "heldout")


@dataclass
class RenderDatasetConfig:
    """What to render. ``preset`` gives the sizes of the tiny / small / paper scales."""

    source: Literal["procedural", "folder"] = "procedural"
    folder: str | None = None
    captions_csv: str | None = None
    num_objects: int = 64  # training objects (folder source: at most this many, 0 = all)
    num_heldout: int = 16
    resolution: int = 64
    num_views: int = 16
    elevation_min_deg: float = 0.0
    elevation_max_deg: float = 45.0
    radius: float = DEFAULT_RADIUS
    focal: float = DEFAULT_FOCAL
    seed: int = 0
    samples_per_shard: int = 32

    def __post_init__(self) -> None:
        if self.source not in ("procedural", "folder"):
            raise ValueError(f"source must be 'procedural' or 'folder', got {self.source!r}")
        if self.source == "folder" and not self.folder:
            raise ValueError("source='folder' needs `folder`")
        if self.num_objects < 0 or self.num_heldout < 0 or self.num_views < 1 or self.resolution < 8:
            raise ValueError(f"invalid sizes in {self}")
        if not 0.0 <= self.elevation_min_deg <= self.elevation_max_deg < 90.0:
            raise ValueError("need 0 <= elevation_min_deg <= elevation_max_deg < 90")

    @classmethod
    def preset(cls, name: str, **overrides: object) -> RenderDatasetConfig:
        """tiny: 64 + 16 objects at 64^2; small: 2,000 + 100 at 256^2; paper: 100,000 + 1,000 at 512^2."""
        sizes = {
            "tiny": dict(num_objects=64, num_heldout=16, resolution=64, samples_per_shard=32),
            "small": dict(num_objects=2000, num_heldout=100, resolution=256, samples_per_shard=128),
            "paper": dict(num_objects=100_000, num_heldout=1000, resolution=512, samples_per_shard=256),
        }
        if name not in sizes:
            raise ValueError(f"unknown preset {name!r}; choose from {sorted(sizes)}")
        return cls(**{**sizes[name], **overrides})  # type: ignore[arg-type]


@dataclass
class RenderDatasetResult:
    files: list[str]  # relative paths written into the output directory
    counts: dict[str, int]
    skipped: list[SkippedFile] = field(default_factory=list)
    preview: str = "preview.png"


def _object_seed(seed: int, uid: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{uid}".encode()).digest()[:8], "little") & ((1 << 63) - 1)


def iter_source_objects(cfg: RenderDatasetConfig) -> tuple[dict[str, Iterator[ColoredMesh]], list[SkippedFile], int]:
    """Per split, a lazy stream of objects; plus skipped files and the total object count."""
    if cfg.source == "procedural":
        gen = ProceduralObjectGenerator(cfg.seed)
        train, heldout = split_train_heldout(gen, cfg.num_objects, cfg.num_heldout)
        streams = {"train": (gen.build(i) for i in train), "heldout": (gen.build(i) for i in heldout)}
        return streams, [], len(train) + len(heldout)
    meshes, skipped = load_mesh_folder(cfg.folder, cfg.captions_csv)  # type: ignore[arg-type]
    # A seeded shuffle decides the held-out objects, so the split does not depend on file names.
    order = sorted(meshes, key=lambda m: _object_seed(cfg.seed, m.uid))
    heldout = order[: cfg.num_heldout]
    train = order[cfg.num_heldout:]
    if cfg.num_objects:
        train = train[: cfg.num_objects]
    return {"train": iter(train), "heldout": iter(heldout)}, skipped, len(train) + len(heldout)


def render_dataset(cfg: RenderDatasetConfig, out_dir: str | Path,
                   progress: Callable[[int, int], None] | None = None) -> RenderDatasetResult:
    """Render every object as a ``num_views`` orbit into ``out_dir/{train,heldout}/shard-*.tar``.

    Also writes ``objects.csv`` (uid, split, caption, elevation) and a contact-sheet ``preview.png``.
    Output bytes depend only on the config (same seed -> identical files).
    """
    out = Path(out_dir)
    streams, skipped, total = iter_source_objects(cfg)
    intrinsics = Intrinsics(cfg.focal, cfg.focal)
    rows: list[tuple[str, str, str, float]] = []
    thumbs: list[np.ndarray] = []
    files: list[str] = []
    counts = {"objects": 0, "views": 0, "skipped_files": len(skipped)}
    done = 0
    for split in SPLITS:
        with ShardWriter(out / split, cfg.samples_per_shard) as writer:
            for mesh in streams[split]:
                gen = torch.Generator().manual_seed(_object_seed(cfg.seed, mesh.uid))
                elevation_range = (cfg.elevation_min_deg, cfg.elevation_max_deg)
                views = render_orbit(mesh, cfg.resolution, cfg.num_views, elevation_range, cfg.radius, intrinsics, gen)
                cams = views.cameras
                elevation = float(cams.elevation_deg[0])
                meta = {"uid": mesh.uid, "split": split, "source": mesh.meta.get("source", cfg.source),
                        "elevation_deg": elevation, "azimuth_deg": cams.azimuth_deg.tolist(),
                        "radius": float(cams.radius[0]), "num_views": len(cams)}
                writer.write(MultiviewSample(mesh.uid, mesh.caption, views.rgba, cams.c2w.numpy(),
                                             cams.intrinsics.numpy(), meta))
                rows.append((mesh.uid, split, mesh.caption, round(elevation, 4)))
                if len(thumbs) < 16:
                    thumbs.append(views.rgba[0])
                counts["objects"] += 1
                counts[f"{split}_objects"] = counts.get(f"{split}_objects", 0) + 1
                counts["views"] += len(cams)
                done += 1
                if progress:
                    progress(done, total)
        counts[f"{split}_shards"] = len(writer.shards)
        files += [f"{split}/{p.name}" for p in writer.shards]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([("uid", "split", "caption", "elevation_deg"), *rows])
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
