"""Filter synthetic orbit videos and turn the kept ones into posed multi-view samples.

A kept video's frame i gets the camera of an orbit at azimuth i * 360 / F, the elevation the MLP predicts,
and the radius / intrinsics of the renders the models were trained on (``cameras.orbit_cameras``). The
frames have a white background (the video model is trained on renders composited on white), so the
alpha channel is estimated by separating the white background connected to the image border from the
object (``masks.segment_alpha``: no fog from noise, no holes in light colours, soft silhouette edge).
Samples use the renders_3d schema (``data/sample.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from vfusion3d_core import code_versions
from vfusion3d_core.cameras import Intrinsics, orbit_cameras
from vfusion3d_core.compute import ComputeSettings
from vfusion3d_core.data.bad_items import BadItemPolicy, SkipReport
from vfusion3d_core.data.sample import MultiviewSample
from vfusion3d_core.data.shards import ShardWriter
from vfusion3d_core.data.video_sample import SyntheticVideoSample, iter_video_samples
from vfusion3d_core.filtering.masks import segment_alpha
from vfusion3d_core.filtering.models import QualityModels
from vfusion3d_core.steps import StepRequest

CODE_VERSION = code_versions.FILTERED_MULTIVIEW  # vfusion3d_core/code_versions.py: bump it there
SCORES_FILE = "scores.csv"
HISTOGRAM_FILE = "score_histogram.png"
EXAMPLES_FILE = "examples.png"


def alpha_from_white(frames: np.ndarray) -> np.ndarray:
    """uint8 [..., H, W, 3] on white -> uint8 [..., H, W, 4] RGBA, alpha from ``masks.segment_alpha``."""
    return np.concatenate([frames, segment_alpha(frames)[..., None]], axis=-1)


def posed_sample(video: SyntheticVideoSample, elevation_deg: float, radius: float, intrinsics: Intrinsics,
                 meta: dict) -> MultiviewSample:
    f = video.num_frames
    cams = orbit_cameras(f, elevation_deg=elevation_deg, radius=radius, intrinsics=intrinsics)
    meta = {**meta, "uid": video.key, "source": "synthetic", "elevation_deg": float(elevation_deg),
            "azimuth_deg": cams.azimuth_deg.tolist(), "radius": float(radius), "num_views": f, "split": "train",
            "seed": video.seed, "video_model": video.model_digest}
    return MultiviewSample(video.key, video.prompt, alpha_from_white(video.frames), cams.c2w.numpy(),
                           cams.intrinsics.numpy(), meta)


@dataclass
class FilterResult:
    files: list[str]
    counts: dict[str, int]
    scores: list[tuple[str, float, bool, float]] = field(default_factory=list)  # key, score, kept, elevation
    # bad input items skipped under the bad-item policy (data/bad_items.py): skipped_samples, skipped_shards
    skipped: dict[str, int] = field(default_factory=dict)
    skipped_items: list[str] = field(default_factory=list)  # "shard: key: reason" of each


@dataclass
class FilterRequest(StepRequest):
    """Featurize + filter one synthetic-videos partition (the asset builds it; ``run_filter`` runs it).

    video_shards: the partition's ``SyntheticVideoSample`` tar shards (local paths or ``s3://`` URLs), in order.
    quality_models_dir: a ``QualityModels.save`` folder whose files were verified against their manifest.
    output_dir: where the posed multi-view shards, scores.csv, histogram and examples go.
    max_bad_fraction: the bad-item policy's share (data/bad_items.py): bad videos / shards are skipped and
    counted; above this share of either the run fails naming them.
    """

    partition: str
    video_shards: list[str]
    quality_models_dir: str
    output_dir: str
    threshold: float = 0.0
    min_keep_fraction: float = 0.0
    samples_per_shard: int = 64
    batch_size: int = 16
    max_bad_fraction: float = 0.01
    compute: ComputeSettings = field(default_factory=ComputeSettings)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.video_shards:
            raise ValueError(f"{self.partition}: FilterRequest needs at least one video shard")
        if self.samples_per_shard < 1 or self.batch_size < 1:
            raise ValueError(f"samples_per_shard and batch_size must be >= 1, got {self.samples_per_shard}, "
                             f"{self.batch_size}")


def run_filter(request: FilterRequest, progress: Callable[[int], None] | None = None
               ) -> tuple[FilterResult, QualityModels]:
    """Load the quality models onto ``request.compute``'s device and filter the partition's videos, streaming
    its shards twice (``filter_videos``). Returns the result and the models (for their metadata)."""
    models = QualityModels.load(request.quality_models_dir, request.compute)
    shards = list(request.video_shards)
    reports: list[SkipReport] = []

    def videos() -> Iterator[SyntheticVideoSample]:
        # bad videos / shards are skipped (named warnings); the run fails above the policy's share (1 %)
        report = SkipReport(BadItemPolicy(request.max_bad_fraction), what=f"{request.partition}: synthetic videos")
        reports.append(report)
        yield from iter_video_samples(shards, report)
        report.check()

    result = filter_videos(videos, models, request.output_dir, request.partition, request.threshold,
                           request.samples_per_shard, request.batch_size, progress, request.min_keep_fraction)
    first = reports[0]  # both passes read the same bytes: the first pass's report is the partition's
    result.skipped = {k: v for k, v in first.counts().items() if k != "skipped_rows"}
    result.skipped_items = first.problems()
    return result, models


# Keep floor per scale preset (see keep_decisions): only the CPU `tiny` video model needs one.
MIN_KEEP_FRACTION = {"tiny": 0.25, "small": 0.0, "paper": 0.0}


def keep_decisions(scores: list[float], threshold: float, min_keep_fraction: float = 0.0) -> list[str | None]:
    """Why each video is kept: "threshold" (score above it), "floor" (among the best ``min_keep_fraction``
    of the shard although below the threshold), or None (rejected).

    The floor exists for weak video models (the `tiny` preset's CPU-trained one) whose videos all fall
    below an absolute threshold: it keeps the shard's best-scoring videos so the rest of the graph trains
    on real synthetic data. Paper-scale runs leave it at 0.
    """
    if not 0.0 <= min_keep_fraction <= 1.0:
        raise ValueError(f"min_keep_fraction must be in [0, 1], got {min_keep_fraction}")
    why: list[str | None] = ["threshold" if s > threshold else None for s in scores]
    floor = math.ceil(min_keep_fraction * len(scores))
    kept = len(scores) - why.count(None)
    if kept >= floor:
        return why
    for i in sorted(range(len(scores)), key=lambda i: (-scores[i], i)):
        if kept >= floor:
            break
        if why[i] is None:
            why[i] = "floor"
            kept += 1
    return why


def filter_videos(videos: Callable[[], Iterable[SyntheticVideoSample]], models: QualityModels,
                  out_dir: str | Path, partition: str, threshold: float = 0.0, samples_per_shard: int = 64,
                  batch: int = 16, progress: Callable[[int], None] | None = None, min_keep_fraction: float = 0.0
                  ) -> FilterResult:
    """Score every video, decide which to keep (``keep_decisions``), write the kept ones as posed samples;
    scores.csv, histogram and examples sheet.

    ``videos`` is called twice and must yield the same videos both times: pass 1 featurizes ``batch`` videos at
    a time and keeps only (key, score, elevation) per video; pass 2 re-streams them and writes the kept ones.
    Memory is O(batch videos + N small score rows), never the whole input."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    out = Path(out_dir)
    keys, raw, elevations = _score_videos(videos(), models, batch, progress)
    why = keep_decisions(raw, threshold, min_keep_fraction)
    decision = dict(zip(keys, zip(raw, why, elevations, strict=True), strict=True))
    files, views, kept_examples, rejected_examples = _write_kept(videos(), len(keys), decision, models, out,
                                                                partition, samples_per_shard)
    scores = [(k, s, r is not None, e) for k, s, r, e in zip(keys, raw, why, elevations, strict=True)]
    with open(out / SCORES_FILE, "w", encoding="utf-8") as fh:
        fh.write("video_key,score,kept,elevation_deg,kept_by\n")
        fh.writelines(f"{k},{s:.6f},{int(r is not None)},{e:.4f},{r or ''}\n"
                      for k, s, r, e in zip(keys, raw, why, elevations, strict=True))
    score_histogram(raw, threshold).save(out / HISTOGRAM_FILE)
    example_sheet(kept_examples, rejected_examples).save(out / EXAMPLES_FILE)
    counts = {"videos": len(raw), "kept": sum(r is not None for r in why), "rejected": why.count(None),
              "kept_by_threshold": why.count("threshold"), "kept_by_floor": why.count("floor"),
              "shards": len(files), "views": views}
    return FilterResult(files + [SCORES_FILE, HISTOGRAM_FILE, EXAMPLES_FILE], counts, scores)


def _score_videos(videos: Iterable[SyntheticVideoSample], models: QualityModels, batch: int,
                  progress: Callable[[int], None] | None) -> tuple[list[str], list[float], list[float]]:
    """Pass 1: (keys, quality scores, predicted elevations) of the videos, featurized ``batch`` at a time."""
    keys: list[str] = []
    raw: list[float] = []
    elevations: list[float] = []
    pending: list[SyntheticVideoSample] = []

    def flush() -> None:
        feats = models.featurizer.video_features([v.frames for v in pending])
        keys.extend(v.key for v in pending)
        raw.extend(float(x) for x in models.score(feats))
        elevations.extend(float(x) for x in models.elevation(feats))
        if progress:
            progress(len(raw))
        pending.clear()

    for v in videos:
        pending.append(v)
        if len(pending) >= batch:
            flush()
    if pending:
        flush()
    return keys, raw, elevations


def _write_kept(videos: Iterable[SyntheticVideoSample], first_pass: int,
                decision: dict[str, tuple[float, str | None, float]], models: QualityModels, out: Path,
                partition: str, samples_per_shard: int
                ) -> tuple[list[str], int, list[np.ndarray], list[np.ndarray]]:
    """Pass 2: the kept videos (``decision``: key -> score, why kept, elevation) written as posed samples.
    ``first_pass`` is the number of videos pass 1 saw.

    Returns the shard files, the number of views written and the first frames of up to 4 kept and 4 rejected
    videos; a video missing from either pass is an unstable input (ValueError)."""
    intr = Intrinsics(*models.info["intrinsics"])
    radius = float(models.info["radius"])
    kept_examples: list[np.ndarray] = []
    rejected_examples: list[np.ndarray] = []
    views = 0
    with ShardWriter(out, samples_per_shard) as writer:
        seen = 0
        for v in videos:
            if v.key not in decision:
                raise ValueError(f"{partition}: video {v.key} appeared only in the second pass; input is unstable")
            seen += 1
            score, reason, elevation = decision[v.key]
            examples = kept_examples if reason else rejected_examples
            if len(examples) < 4:
                examples.append(v.frames)
            if reason:
                views += v.num_frames
                writer.write(posed_sample(v, elevation, radius, intr, {"prompt_shard": partition,
                                                                       "quality_score": score, "kept_by": reason}))
    if seen != first_pass:
        raise ValueError(f"{partition}: the second pass saw {seen} videos, the first {first_pass}; input is unstable")
    return [p.relative_to(out).as_posix() for p in writer.shards], views, kept_examples, rejected_examples


def score_histogram(scores: list[float], threshold: float, bins: int = 20, size: tuple[int, int] = (320, 160)
                    ) -> Image.Image:
    """Bar chart of SVM scores (green: kept side of the threshold, red: rejected), threshold as a black line."""
    w, h = size
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    if not scores:
        draw.text((10, h // 2), "no videos", fill="black")
        return img
    lo, hi = min(min(scores), threshold) - 1e-6, max(max(scores), threshold) + 1e-6
    counts, edges = np.histogram(scores, bins=bins, range=(lo, hi))
    peak = max(int(counts.max()), 1)
    bw = (w - 20) / bins
    for i, c in enumerate(counts):
        x0 = 10 + i * bw
        colour = (40, 160, 60) if (edges[i] + edges[i + 1]) / 2 > threshold else (200, 50, 50)
        draw.rectangle([x0, h - 20 - (h - 40) * c / peak, x0 + bw - 1, h - 20], fill=colour)
    tx = 10 + (threshold - lo) / (hi - lo) * (w - 20)
    draw.line([tx, 10, tx, h - 20], fill="black", width=2)
    draw.text((10, h - 16), f"{lo:.2f}", fill="black")
    draw.text((w - 50, h - 16), f"{hi:.2f}", fill="black")
    return img


def example_sheet(kept: list[np.ndarray], rejected: list[np.ndarray], frames: int = 4) -> Image.Image:
    """Rows of the first frames of kept videos (green bar) then rejected ones (red bar)."""
    rows = [(v, (40, 160, 60)) for v in kept] + [(v, (200, 50, 50)) for v in rejected]
    s = max((v.shape[1] for v, _ in rows), default=16)
    img = Image.new("RGB", (8 + frames * s, max(len(rows), 1) * s), "white")
    for r, (v, colour) in enumerate(rows):
        ImageDraw.Draw(img).rectangle([0, r * s, 5, (r + 1) * s - 1], fill=colour)
        for j, frame in enumerate(v[:frames]):
            img.paste(Image.fromarray(frame).resize((s, s)), (8 + j * s, r * s))
    return img
