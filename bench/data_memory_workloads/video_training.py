"""Data-memory workload of the orbit-video fine-tune (`video_model`), called by bench/data_memory.py in a
subprocess at 100 / 1,000 / 10,000 objects: peak RSS must not grow with the number of objects.

``run`` trains the tiny preset at a micro size for 10 steps (2 VAE + 4 image + 4 video) on CPU, streaming
the orbits from ``multiview_shards`` (renders_3d schema) exactly as the asset does (``finetune_video_model``
with a ``FinetuneRequest``): a bounded shuffle buffer, VAE latents and captions per batch, the VAE scale
fitted on 2 batches, the before/after closeness on 2 orbits. ``video_shards`` (synthetic_videos schema) are
only counted from their tar indexes (the video fine-tune does not train on them).
"""

from __future__ import annotations

import itertools
import pathlib
import resource
import time

from vfusion3d_core.compute import ComputeSettings
from vfusion3d_core.data.shards import count_samples, iter_samples
from vfusion3d_core.video.config import VideoModelConfig
from vfusion3d_core.video.finetune import finetune_video_model
from vfusion3d_core.video.requests import FinetuneRequest

MICRO = dict(resolution=16, vae_channels=(8, 16), vae_norm_groups=4, vae_steps=2, image_steps=4, video_steps=4,
             vae_batch=4, image_batch=4, video_batch=2, sample_steps=2, warmup_steps=1, sample_batch=4,
             scheduler="euler", shuffle_buffer=16, scale_batches=2, data_workers=0, checkpoint_every=1000)


def run(multiview_shards: list[str], video_shards: list[str], work_dir: pathlib.Path) -> dict:
    """Fine-tune on ``multiview_shards`` (streamed) into ``work_dir``; returns counts, seconds and this
    process's peak RSS (MiB)."""
    if not multiview_shards:
        raise ValueError("no multiview shards")
    work_dir = pathlib.Path(work_dir)
    first = next(itertools.islice(iter_samples(multiview_shards[:1]), 1), None)
    if first is None:
        raise ValueError(f"{multiview_shards[0]} holds no samples")
    cfg = VideoModelConfig.preset("tiny", num_frames=first.num_views, **MICRO)
    request = FinetuneRequest(cfg, [str(s) for s in multiview_shards], str(work_dir / "video_model"),
                              {"bench": "multiview_shards"}, str(work_dir / "checkpoints"), preset="tiny",
                              eval_count=2, compute=ComputeSettings(device="cpu", precision="fp32"))
    start = time.perf_counter()
    result = finetune_video_model(request)
    seconds = time.perf_counter() - start
    video_samples = sum(count_samples(s) for s in video_shards)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {**result.counts, "video_shard_samples": video_samples, "multiview_shards": len(multiview_shards),
            "seconds": round(seconds, 2), "peak_rss_mib": round(peak_mib, 1)}
