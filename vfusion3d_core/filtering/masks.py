"""Alpha masks of frames composited on white (synthetic orbit videos) and their error against known masks.

``ramp_alpha`` is the old per-pixel estimator: alpha ramps from 0 at white to 255 ``ramp`` levels away. It turns
sampler noise on the background into semi-transparent fog and light object colours ("white" 0.92) into holes.

``segment_alpha`` separates background from object instead:

1. ``dist`` = distance to white (max over channels); on noisy frames (the border is not exactly white) it is
   smoothed by a 3x3 box so single noisy pixels average out;
2. the background level is the median smoothed distance on the image border (0 on clean frames, the noise's
   mean on noisy ones); pixels within ``margin`` of it are background *candidates*;
3. background = the candidate regions connected to the image border (flood fill), plus enclosed candidate
   regions that look like the border background (mean within ``hole_margin`` of its level, at least
   ``min_hole_fraction`` of the frame: the hole of a ring); other enclosed light pixels stay opaque;
4. on noisy frames, object regions smaller than ``min_speck`` pixels (noise specks) become background;
5. alpha is 0 / 255 away from the silhouette; on the 1-pixel band on both sides of it, alpha is the soft
   coverage ``(dist - level) / (object_dist - level)`` with ``object_dist`` the mean distance of the solid object
   pixels nearby (compositing on white scales the distance to white by the coverage).

``mask_error`` measures an estimator on frames with known alpha (renders_3d views composited on white, with
optional Gaussian noise like a sampler's): mean absolute alpha error and IoU of the thresholded mask.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
from scipy import ndimage

Estimator = Callable[[np.ndarray], np.ndarray]  # uint8 [..., H, W, 3] on white -> uint8 alpha [..., H, W]

OLD_RAMP = 24.0
BACKGROUND_MARGIN = 12.0  # smoothed distance-to-white above the border's level that is no longer background
HOLE_MARGIN = 4.0
MIN_HOLE_FRACTION = 0.003
MIN_SPECK = 6
EDGE_FALLBACK = 64.0  # object distance assumed on the soft edge when no solid object pixel is near


def ramp_alpha(frames: np.ndarray, ramp: float = OLD_RAMP) -> np.ndarray:
    """The old estimator: uint8 [..., 3] -> uint8 [...] alpha, 0 at white ramping to 255 ``ramp`` levels away."""
    if ramp <= 0:
        raise ValueError(f"ramp must be > 0, got {ramp}")
    dist = (255.0 - frames.astype(np.float32)).max(-1)
    return np.clip(dist * (255.0 / ramp), 0, 255).round().astype(np.uint8)


def _check_frames(frames: np.ndarray) -> None:
    if frames.dtype != np.uint8 or frames.ndim < 3 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames [..., H, W, 3], got {frames.dtype} {tuple(frames.shape)}")


def segment_alpha(frames: np.ndarray, margin: float = BACKGROUND_MARGIN, hole_margin: float = HOLE_MARGIN,
                  min_hole_fraction: float = MIN_HOLE_FRACTION, min_speck: int = MIN_SPECK) -> np.ndarray:
    """uint8 [..., H, W, 3] on white -> uint8 [..., H, W] alpha (see the module docstring)."""
    _check_frames(frames)
    flat = frames.reshape(-1, *frames.shape[-3:])
    out = np.stack([_segment_one(f, margin, hole_margin, min_hole_fraction, min_speck) for f in flat])
    return out.reshape(frames.shape[:-1])


def _segment_one(frame: np.ndarray, margin: float, hole_margin: float, min_hole_fraction: float,
                 min_speck: int) -> np.ndarray:
    """One frame [H, W, 3] -> alpha [H, W]."""
    h, w = frame.shape[:2]
    dist = (255.0 - frame.astype(np.float32)).max(-1)
    border = np.ones((h, w), bool)
    border[1:-1, 1:-1] = False
    noisy = float(np.median(dist[border])) > 0.5  # a clean white background is exactly 0 away from white
    smooth = ndimage.median_filter(dist, size=3, mode="nearest") if noisy else dist
    level = float(np.median(smooth[border]))
    labels, n = ndimage.label(smooth < level + margin)
    background = np.zeros((h, w), bool)
    if n:
        ids = np.arange(1, n + 1)
        touches = np.zeros(n + 1, bool)
        touches[np.unique(labels[border])] = True
        area = ndimage.sum_labels(np.ones_like(dist), labels, ids)
        mean = ndimage.mean(smooth, labels, ids)
        hole = (mean < level + hole_margin) & (area >= min_hole_fraction * h * w)
        keep = np.concatenate([[False], touches[1:] | hole])
        background = keep[labels]
    specks, m = ndimage.label(~background)
    if m and noisy:  # on a clean frame every non-white pixel is real, however small
        small = np.concatenate([[False], ndimage.sum_labels(np.ones_like(dist), specks, np.arange(1, m + 1))
                                < min_speck])
        background |= small[specks]
    fg = ~background
    solid = ndimage.binary_erosion(fg, iterations=1, border_value=1)
    band = (ndimage.binary_dilation(fg) & ~fg) | (fg & ~solid)
    weight = ndimage.uniform_filter(solid.astype(np.float32), size=5, mode="constant")
    total = ndimage.uniform_filter(dist * solid, size=5, mode="constant")
    obj = np.where(weight > 0, total / np.maximum(weight, 1e-6), EDGE_FALLBACK)
    soft = np.clip((dist - level) / np.maximum(obj - level, 1.0), 0.0, 1.0)
    alpha = np.where(fg, 1.0, 0.0)
    alpha[band] = soft[band]
    return np.round(alpha * 255.0).astype(np.uint8)


def add_noise(frames: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    """uint8 frames + seeded Gaussian noise of ``sigma`` (in [0, 1] units, e.g. 8/255), clipped to uint8."""
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    noise = np.random.default_rng(seed).normal(0.0, sigma * 255.0, frames.shape)
    return np.clip(frames.astype(np.float64) + noise, 0, 255).round().astype(np.uint8)


def mask_error(rgba: np.ndarray, estimator: Estimator, sigma: float = 0.0, seed: int = 0,
               threshold: int = 128) -> dict[str, float]:
    """Error of ``estimator`` on straight-alpha RGBA views uint8 [N, H, W, 4] with known alpha: the views are
    composited on white, ``sigma`` noise added, then {"alpha_mae": mean |alpha - true| in [0, 1],
    "iou": IoU of alpha >= threshold vs true alpha >= threshold, "fog": mean alpha (in [0, 1]) where the true
    alpha is 0, "holes": share of true-opaque pixels (alpha 255) estimated below ``threshold``}."""
    from vfusion3d_core.video.data import composite_on_white

    if rgba.dtype != np.uint8 or rgba.ndim != 4 or rgba.shape[-1] != 4:
        raise ValueError(f"expected uint8 RGBA views [N, H, W, 4], got {rgba.dtype} {tuple(rgba.shape)}")
    frames = composite_on_white(rgba)
    if sigma > 0:
        frames = add_noise(frames, sigma, seed)
    est = estimator(frames).astype(np.float32)
    true = rgba[..., 3].astype(np.float32)
    pred_m, true_m = est >= threshold, true >= threshold
    union = (pred_m | true_m).sum()
    empty, opaque = true == 0, true == 255
    return {"alpha_mae": float(np.abs(est - true).mean() / 255.0),
            "iou": float((pred_m & true_m).sum() / union) if union else 1.0,
            "fog": float(est[empty].mean() / 255.0) if empty.any() else 0.0,
            "holes": float((est[opaque] < threshold).mean()) if opaque.any() else 0.0}


def compare_estimators(rgba: np.ndarray, sigmas: tuple[float, ...] = (0.0, 8 / 255), seed: int = 0
                       ) -> dict[str, float]:
    """``mask_error`` of the old (``ramp``) and new (``segment``) estimators on clean and noisy composites:
    flat {"<estimator>/<clean|noise8>/<metric>": value}."""
    out: dict[str, float] = {}
    for name, est in (("ramp", ramp_alpha), ("segment", segment_alpha)):
        for sigma in sigmas:
            tag = "clean" if sigma == 0 else f"noise{round(sigma * 255)}"
            for k, v in mask_error(rgba, est, sigma, seed).items():
                out[f"{name}/{tag}/{k}"] = round(v, 5)
    return out


def render_mask_quality(shards: list[str], count: int = 2, sigmas: tuple[float, ...] = (0.0, 8 / 255),
                        seed: int = 0) -> dict[str, float]:
    """``compare_estimators`` on the views of the first ``count`` samples of renders_3d shards (exact alpha),
    plus "mask_eval/views"; reads only those samples. Empty when the shards hold no sample."""
    from vfusion3d_core.data.shards import iter_samples

    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    views = [s.views for s in itertools.islice(iter_samples(shards), count)]
    if not views:
        return {}
    rgba = np.concatenate(views)  # [N, H, W, 4]
    return {**compare_estimators(rgba, sigmas, seed), "mask_eval/views": float(len(rgba))}
