"""Micro sizes shared by the video tests (imported by path; not a conftest)."""

from __future__ import annotations

import torch
from pipeline_utils import VIDEO_MICRO

from vfusion3d_core.video import FrozenTextEncoder, OrbitData, OrbitVideoModel, VideoModelConfig
from vfusion3d_core.video.text_encoder import load_text_encoder

# The one set of micro video sizes (pipeline_utils.VIDEO_MICRO: 16x16 frames, 2x VAE downsampling -> 8x8 latents,
# 4-frame orbits, a few steps per stage), plus the evaluation count of the asset tests.
MICRO = {**VIDEO_MICRO, "vae_channels": tuple(VIDEO_MICRO["vae_channels"]), "eval_count": 2}


def micro_config(**overrides) -> VideoModelConfig:
    kw = {k: v for k, v in {**MICRO, **overrides}.items() if k != "eval_count"}
    return VideoModelConfig.preset("tiny", **kw)


def text_encoder() -> FrozenTextEncoder:
    return load_text_encoder()


def micro_model(seed: int = 0, **overrides) -> OrbitVideoModel:
    torch.manual_seed(seed)
    return OrbitVideoModel.build(micro_config(**overrides), text_encoder())


def random_orbits(n: int = 4, frames: int = 4, size: int = 16, seed: int = 0) -> OrbitData:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, frames, size, size, 3), generator=g, dtype=torch.uint8)
    return OrbitData(x, [f"a small object number {i}" for i in range(n)], [f"obj{i}" for i in range(n)])


def write_orbit_shards(directory, n: int = 6, frames: int = 4, size: int = 16, per_shard: int = 2,
                       seed: int = 0) -> list[str]:
    """renders_3d-schema WebDataset shards of ``n`` random orbits (real orbit cameras); the shard paths."""
    import numpy as np

    from vfusion3d_core.cameras import orbit_cameras
    from vfusion3d_core.data import MultiviewSample, ShardWriter

    rng = np.random.default_rng(seed)
    cams = orbit_cameras(frames, elevation_deg=20.0)
    with ShardWriter(directory, per_shard) as writer:
        for i in range(n):
            rgba = rng.integers(0, 256, (frames, size, size, 4), dtype=np.uint8)
            rgba[..., 3] = 255
            writer.write(MultiviewSample(f"obj{i:03d}", f"a small object number {i}", rgba, cams.c2w.numpy(),
                                         cams.intrinsics.numpy(), {"uid": f"obj{i:03d}"}))
    return [str(p) for p in writer.shards]
