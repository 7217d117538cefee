"""Quality filtering of every synthetic video (the ``filtered_multiview_dataset`` asset's data path).

Trains tiny quality models (seeded RANDOM 2-layer DINOv2 at 32 px, SVM + elevation MLP) on a bounded sample
of ``TRAIN_ORBITS`` + ``HELDOUT_ORBITS`` multi-view samples, whatever the dataset size, then runs the asset's
core path (``FilterRequest`` -> ``run_filter``) on all video shards on the CPU: pass 1 streams the shards and
keeps only one (key, score, elevation) row per video, pass 2 re-streams them and writes the kept ones as
posed multi-view shards under ``work_dir``. Only those small rows grow with the number of videos.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from vfusion3d_core.compute import ComputeSettings
from vfusion3d_core.data import iter_samples
from vfusion3d_core.filtering import (
    DinoConfig,
    DinoFeaturizer,
    FilterRequest,
    Orbit,
    QualityTrainConfig,
    run_filter,
    train_quality_models,
)

TRAIN_ORBITS = 8  # bootstrap sample for the quality models: bounded, independent of the dataset size
HELDOUT_ORBITS = 2
BATCH = 16  # videos featurized at a time
ELEVATION_RANGE = (0.0, 45.0)  # renders_3d's default elevation range


def _on_white(views):
    """RGBA uint8 [V, S, S, 4] -> RGB uint8 [V, S, S, 3] composited on white."""
    import numpy as np

    rgba = views.astype(np.float32) / 255.0
    return ((rgba[..., :3] * rgba[..., 3:] + 1 - rgba[..., 3:]) * 255.0).round().clip(0, 255).astype(np.uint8)


def _orbits(multiview_shards: list[str], count: int) -> list[Orbit]:
    out = []
    for s in itertools.islice(iter_samples(multiview_shards), count):
        missing = [k for k in ("elevation_deg", "radius") if k not in s.meta]
        if missing:
            raise ValueError(f"multi-view sample {s.key} lacks {missing} in its meta (renders_3d schema expected)")
        out.append(Orbit(s.key, _on_white(s.views), float(s.meta["elevation_deg"]), float(s.meta["radius"]),
                         s.intrinsics[0]))
    return out


def run(multiview_shards: list[str], video_shards: list[str], work_dir: Path) -> dict:
    """Train tiny quality models on a bounded sample of ``multiview_shards``, then filter every video of
    ``video_shards`` into posed multi-view shards under ``work_dir / "filtered"``. Returns the filter's counts
    (videos, kept, rejected, shards, views) and the number of bootstrap orbits."""
    if not multiview_shards or not video_shards:
        raise ValueError("filtering needs multi-view shards (to train the quality models) and video shards")
    compute = ComputeSettings("cpu", "fp32")
    orbits = _orbits(multiview_shards, TRAIN_ORBITS + HELDOUT_ORBITS)
    if len(orbits) < 3:
        raise ValueError(f"need at least 3 multi-view samples to train the quality models, got {len(orbits)}")
    train, heldout = orbits[:-HELDOUT_ORBITS], orbits[-HELDOUT_ORBITS:]
    models = train_quality_models(DinoFeaturizer.build(DinoConfig(), compute), train, heldout, [], [],
                                  QualityTrainConfig(appearance_pca=8, mlp_iters=300), ELEVATION_RANGE)
    models_dir = work_dir / "quality_models"
    models.save(models_dir)
    del models, orbits, train, heldout
    request = FilterRequest(partition="bench", video_shards=list(video_shards), quality_models_dir=str(models_dir),
                            output_dir=str(work_dir / "filtered"), threshold=0.0, min_keep_fraction=0.25,
                            samples_per_shard=100, batch_size=BATCH, compute=compute)
    result, _ = run_filter(request)
    if result.counts["kept"] + result.counts["rejected"] != result.counts["videos"]:
        raise RuntimeError(f"filtering: counts do not add up: {result.counts}")
    return {**result.counts, "bootstrap_orbits": TRAIN_ORBITS, "batch": BATCH}
