"""How close generated orbits are to the real render orbits of the same captions / first frames.

``orbit_closeness``: pixel MSEs on training orbits (text -> video, image -> video, first frame).
``image_to_video_quality``: image -> orbit on held-out orbits, PSNR / LPIPS per frame, object colour fidelity and
multi-view self-consistency (``orbit_quality``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from vfusion3d_core.compute import ComputeSettings
from vfusion3d_core.filtering.masks import segment_alpha
from vfusion3d_core.metrics.image import lpips_distance, psnr
from vfusion3d_core.video.data import OrbitSource, orbits_to_float
from vfusion3d_core.video.model import OrbitVideoModel
from vfusion3d_core.video.networks import vae_decode, vae_encode
from vfusion3d_core.video.sampler import SampleSettings, sample_images, sample_videos, seed_generators, to_uint8


def _mse(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean squared error of [-1, 1] tensors measured in [0, 1] pixel units."""
    return float((((a - b) / 2) ** 2).mean())


def first_orbits(model: OrbitVideoModel, data: OrbitSource, count: int, compute: ComputeSettings | None = None
                 ) -> tuple[torch.Tensor, list[str], torch.Tensor]:
    """The first ``count`` orbits of ``data``: as floats on the model's device [n, F, 3, S, S] (the model moved to
    ``compute``'s device first), their captions, and as read (uint8 [n, F, S, S, 3])."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    frames, captions = data.first(count)
    if compute is not None:
        model.to(compute.torch_device)
    return orbits_to_float(frames).to(model.device), list(captions), frames


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
    real, captions, _ = first_orbits(model, data, count, compute)  # [n, F, 3, S, S]
    n = real.shape[0]
    seeds = [seed + i for i in range(n)]
    model.eval()
    images, pooled = sample_images(model, captions, seed_generators(seeds), settings, compute)
    text_video = sample_videos(model, images, pooled, seed_generators(seeds), settings, compute)
    image_video = sample_videos(model, real[:, 0], pooled, seed_generators(seeds), settings, compute)
    return {"text_to_video_mse": _mse(text_video, real), "image_to_video_mse": _mse(image_video, real),
            "first_frame_mse": _mse(images, real[:, 0]), "objects": float(n)}


LPIPS_MIN_SIZE = 64  # AlexNet's strides need at least this many pixels; smaller frames are upsampled (bilinear)
COLOUR_BINS = 8


def _object_masks(frames: np.ndarray) -> np.ndarray:
    """uint8 frames [..., H, W, 3] on white -> bool object masks [..., H, W] (``segment_alpha`` >= 128)."""
    return segment_alpha(frames) >= 128


def _mean_colour(frames: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Mean RGB in [0, 1] of the masked pixels ([N, H, W, 3], [N, H, W] -> [3]); white when nothing is masked."""
    return frames[masks].mean(0) / 255.0 if masks.any() else np.ones(3)


def _histogram(frames: np.ndarray, masks: np.ndarray) -> np.ndarray | None:
    """Per-channel ``COLOUR_BINS``-bin histograms of the masked pixels, each summing to 1 -> [3, bins] (None
    when nothing is masked)."""
    if not masks.any():
        return None
    px = frames[masks].astype(np.int64)  # [P, 3]
    return np.stack([np.bincount(px[:, c] * COLOUR_BINS // 256, minlength=COLOUR_BINS) / len(px) for c in range(3)])


def _hist_distance(a: np.ndarray | None, b: np.ndarray | None) -> float:
    """Total variation distance of two [3, bins] histograms, mean over channels; 1 when one side has no object
    pixels, 0 when neither has."""
    if a is None or b is None:
        return 0.0 if a is None and b is None else 1.0
    return float(0.5 * np.abs(a - b).sum(1).mean())


def _per_frame_stats(frames: np.ndarray, masks: np.ndarray) -> tuple[float, float]:
    """Self-consistency of one orbit ([F, H, W, 3], [F, H, W]): (coefficient of variation of the silhouette
    area across frames, mean over channels of the std of the per-frame object mean colour in [0, 1])."""
    area = masks.reshape(len(masks), -1).mean(1)
    cv = float(area.std() / area.mean()) if area.mean() > 0 else 0.0
    colours = np.stack([_mean_colour(f[None], m[None]) for f, m in zip(frames, masks, strict=True)])  # [F, 3]
    return cv, float(colours.std(0).mean())


@torch.no_grad()
def orbit_quality(generated: torch.Tensor, real: torch.Tensor, lpips_net: torch.nn.Module | None = None
                  ) -> dict[str, float]:
    """Quality of generated orbits against the true orbits at the same azimuths, both [n, F, 3, S, S] in [-1, 1].

    Over frames 1..F-1 (frame 0 is the conditioning view): ``psnr`` (dB, 100 for identical frames) and ``lpips``
    (when ``lpips_net`` is given; frames under 64 px upsampled) per frame; ``colour_mean_distance`` (L2 between
    the mean RGB in [0, 1] of the object pixels, per orbit) and ``colour_hist_distance`` (total variation distance
    of the object pixels' per-channel 8-bin histograms, 0..1; 1 when the generated orbit has no object). Multi-view
    self-consistency over all F frames: ``area_cv`` (coefficient of variation of the silhouette area) and
    ``colour_std`` (std of the per-frame object mean colour), for the generated orbits and the true ones
    (``*_true``); ``consistency_gap`` = |area_cv - area_cv_true| + |colour_std - colour_std_true|. Objects are
    the pixels ``segment_alpha`` separates from the white background. Means over orbits.
    """
    if generated.shape != real.shape or generated.dim() != 5 or generated.shape[2] != 3 or generated.shape[1] < 2:
        raise ValueError(f"generated and real must both be [n, F >= 2, 3, S, S], got {tuple(generated.shape)} and "
                         f"{tuple(real.shape)}")
    n, f = generated.shape[:2]
    gen01 = ((generated.float().cpu().clamp(-1, 1) + 1) / 2)[:, 1:].flatten(0, 1)  # [n * (F-1), 3, S, S]
    real01 = ((real.float().cpu().clamp(-1, 1) + 1) / 2)[:, 1:].flatten(0, 1)
    out = {"psnr": float(psnr(gen01, real01).mean())}
    if lpips_net is not None:
        a, b = gen01, real01
        if a.shape[-1] < LPIPS_MIN_SIZE:
            a, b = (F.interpolate(x, size=LPIPS_MIN_SIZE, mode="bilinear", align_corners=False) for x in (a, b))
        out["lpips"] = float(lpips_distance(lpips_net, a, b).mean())
    gen8, real8 = to_uint8(generated), to_uint8(real)  # [n, F, S, S, 3]
    gen_m, real_m = _object_masks(gen8), _object_masks(real8)
    per: dict[str, list[float]] = {k: [] for k in ("colour_mean_distance", "colour_hist_distance", "area_cv",
                                                   "colour_std", "area_cv_true", "colour_std_true")}
    for i in range(n):
        g, r, gm, rm = gen8[i, 1:], real8[i, 1:], gen_m[i, 1:], real_m[i, 1:]
        per["colour_mean_distance"].append(float(np.linalg.norm(_mean_colour(g, gm) - _mean_colour(r, rm))))
        per["colour_hist_distance"].append(_hist_distance(_histogram(g, gm), _histogram(r, rm)))
        for suffix, frames, masks in (("", gen8[i], gen_m[i]), ("_true", real8[i], real_m[i])):
            cv, std = _per_frame_stats(frames, masks)
            per[f"area_cv{suffix}"].append(cv)
            per[f"colour_std{suffix}"].append(std)
    out.update({k: float(np.mean(v)) for k, v in per.items()})
    out["consistency_gap"] = abs(out["area_cv"] - out["area_cv_true"]) + abs(out["colour_std"] - out["colour_std_true"])
    return out


@torch.no_grad()
def vae_fidelity(model: OrbitVideoModel, frames: torch.Tensor) -> dict[str, float]:
    """How much of the frames survives the VAE alone (nothing downstream can make what its decoder cannot draw):
    frames [n, 3, S, S] in [-1, 1] encoded (latent mode) and decoded. ``vae_psnr`` (dB, [0, 1] scale);
    ``vae_chroma`` / ``vae_chroma_true``: mean of (max - min channel) over the object pixels (true frame's min
    channel below 0.9), for the reconstruction and the original: a decoder that greys colours out shows a much
    smaller ``vae_chroma``."""
    if frames.dim() != 4 or frames.shape[1] != 3:
        raise ValueError(f"vae_fidelity expects frames [n, 3, S, S], got {tuple(frames.shape)}")
    with torch.no_grad():
        rec = vae_decode(model.vae, vae_encode(model.vae, frames.to(model.device))).float().clamp(-1, 1).cpu()
    x01, r01 = (frames.float().cpu() + 1) / 2, (rec + 1) / 2
    mse = (r01 - x01).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    mask = x01.min(dim=1).values < 0.9  # [n, S, S] object pixels of the true frames

    def chroma(t: torch.Tensor) -> float:
        spread = t.max(dim=1).values - t.min(dim=1).values  # [n, S, S]
        return float(spread[mask].mean()) if mask.any() else 0.0

    return {"vae_psnr": float((-10 * torch.log10(mse)).mean()), "vae_chroma": chroma(r01),
            "vae_chroma_true": chroma(x01)}


def image_to_video_quality(model: OrbitVideoModel, data: OrbitSource, count: int = 4, seed: int = 4321,
                           settings: SampleSettings | None = None, compute: ComputeSettings | None = None,
                           lpips_net: torch.nn.Module | None = None
                           ) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """Image -> orbit on the first ``count`` orbits of ``data`` (held-out objects): each orbit is sampled from
    its true first frame and caption (seeds ``seed + i``) and compared with the true orbit (``orbit_quality``).
    Returns the metrics (plus "objects"), the generated and the true orbits, uint8 [n, F, S, S, 3] each."""
    settings = settings or SampleSettings.from_model(model)
    real, captions, frames = first_orbits(model, data, count, compute)  # [n, F, 3, S, S]
    n = real.shape[0]
    model.eval()
    _, pooled = model.text_encoder(list(captions))
    video = sample_videos(model, real[:, 0], pooled.to(model.device), seed_generators([seed + i for i in range(n)]),
                          settings, compute)  # [n, F, 3, S, S]
    metrics = {**orbit_quality(video, real, lpips_net), **vae_fidelity(model, real[:, 0]), "objects": float(n)}
    return metrics, to_uint8(video), frames.numpy()
