"""How close generated orbits are to the real render orbits of the same captions / first frames."""

from __future__ import annotations

import torch

from vfusion3d_core.compute import ComputeSettings
from vfusion3d_core.video.data import OrbitSource, orbits_to_float
from vfusion3d_core.video.model import OrbitVideoModel
from vfusion3d_core.video.sampler import SampleSettings, sample_images, sample_videos, seed_generators


def _mse(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean squared error of [-1, 1] tensors measured in [0, 1] pixel units."""
    return float((((a - b) / 2) ** 2).mean())


@torch.no_grad()
def orbit_closeness(model: OrbitVideoModel, data: OrbitSource, count: int = 8, seed: int = 1234,
                    settings: SampleSettings | None = None, compute: ComputeSettings | None = None
                    ) -> dict[str, float]:
    """Mean per-frame pixel MSE to the real orbits of the first ``count`` training objects (only those
    ``count`` orbits are read).

    ``text_to_video_mse``: the full text -> image -> video chain from each caption;
    ``image_to_video_mse``: stage 2 alone, conditioned on the real first frame and caption;
    ``first_frame_mse``: stage 1 alone (generated vs real first frame). Lower is closer.
    """
    settings = settings or SampleSettings.from_model(model)
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    frames, captions = data.first(count)
    if compute is not None:
        model.to(compute.torch_device)
    real = orbits_to_float(frames).to(model.device)  # [n, F, 3, S, S]
    n = real.shape[0]
    seeds = [seed + i for i in range(n)]
    model.eval()
    images, pooled = sample_images(model, captions, seed_generators(seeds), settings, compute)
    text_video = sample_videos(model, images, pooled, seed_generators(seeds), settings, compute)
    image_video = sample_videos(model, real[:, 0], pooled, seed_generators(seeds), settings, compute)
    return {"text_to_video_mse": _mse(text_video, real), "image_to_video_mse": _mse(image_video, real),
            "first_frame_mse": _mse(images, real[:, 0]), "objects": float(n)}
