"""Synthesize one prompt shard into synthetic-video WebDataset shards (the core of `synthetic_videos`)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vfusion3d_core import code_versions
from vfusion3d_core.compute import ComputeSettings, set_torch_threads
from vfusion3d_core.data.shards import ShardWriter
from vfusion3d_core.data.video_sample import SyntheticVideoSample
from vfusion3d_core.prompts.shards import PromptRecord, read_prompt_shard
from vfusion3d_core.video.model import OrbitVideoModel
from vfusion3d_core.video.requests import SynthesisRequest
from vfusion3d_core.video.sampler import SampleSettings, sample_orbits

CODE_VERSION = code_versions.SYNTHETIC_VIDEOS  # vfusion3d_core/code_versions.py: bump it there


def prompt_seed(base_seed: int, prompt_id: str) -> int:
    """A prompt's seed: stable per (base seed, prompt id), independent of shard and batch."""
    return int.from_bytes(hashlib.sha256(f"{base_seed}:{prompt_id}".encode()).digest()[:4], "little")


@dataclass
class SynthesisResult:
    files: list[str]
    counts: dict[str, int]


def synthesize_shard(model: OrbitVideoModel, model_digest: str, records: list[PromptRecord], shard: str,
                     out_dir: str | Path, settings: SampleSettings, base_seed: int = 0, samples_per_shard: int = 64,
                     batch_size: int | None = None, progress: Callable[[int, int], None] | None = None,
                     compute: ComputeSettings | None = None) -> SynthesisResult:
    """One sample per prompt (key = prompt_id) into ``out_dir/shard-*.tar``; returns files and counts.
    ``compute``: the device / precision the model samples with (None: where it is, fp32)."""
    if len({r.prompt_id for r in records}) != len(records):
        raise ValueError(f"{shard}: duplicate prompt ids")
    bs = batch_size or model.config.sample_batch
    f = model.config.num_frames
    meta_common = {"shard": shard, "scheduler": settings.scheduler, "steps": settings.steps,
                   "image_guidance": settings.image_guidance, "video_guidance": list(settings.video_guidance),
                   "num_frames": f, "resolution": model.config.resolution,
                   "azimuth_deg": [i * 360.0 / f for i in range(f)]}
    out = Path(out_dir)
    with ShardWriter(out, samples_per_shard) as writer:
        for i in range(0, len(records), bs):
            batch = records[i:i + bs]
            seeds = [prompt_seed(base_seed, r.prompt_id) for r in batch]
            videos = sample_orbits(model, [r.prompt for r in batch], seeds, settings, batch_size=bs,
                                   compute=compute)  # uint8 [B, F, S, S, 3]
            for r, seed, frames in zip(batch, seeds, videos, strict=True):
                writer.write(SyntheticVideoSample(r.prompt_id, r.prompt, frames, seed, model_digest,  # type: ignore[arg-type]
                                                  {"prompt_id": r.prompt_id, **meta_common}))
            if progress:
                progress(min(i + bs, len(records)), len(records))
    files = [p.relative_to(out).as_posix() for p in writer.shards]
    return SynthesisResult(files, {"videos": len(records), "frames": len(records) * f, "shards": len(files)})


def run_synthesis(request: SynthesisRequest, progress: Callable[[int, int], None] | None = None
                  ) -> SynthesisResult:
    """The whole step: load the model onto ``request.compute``'s device, read the prompt shard, synthesize it."""
    set_torch_threads(request.torch_threads or None)
    model = OrbitVideoModel.from_pretrained(request.model_dir).to(request.compute.torch_device)
    records = read_prompt_shard(request.prompt_shard)
    return synthesize_shard(model, request.model_digest, records, request.shard, request.out_dir, request.settings,
                            request.base_seed, request.samples_per_shard, request.batch_size, progress,
                            request.compute)
