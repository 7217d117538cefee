"""Alpha masks of frames on white: the segmenting estimator against known masks (no fog, no holes)."""

import numpy as np
import pytest
from scipy import ndimage

from vfusion3d_core.filtering.masks import (
    add_noise,
    compare_estimators,
    mask_error,
    ramp_alpha,
    segment_alpha,
)
from vfusion3d_core.video.data import composite_on_white

WHITE, YELLOW, PINK, BLUE = (235, 235, 230), (240, 220, 60), (245, 170, 200), (40, 60, 200)


def shape_rgba(colour: tuple[int, int, int], size: int = 48, radius: float = 14.0, hole: float = 0.0
               ) -> np.ndarray:
    """A shaded disc (or a ring with a ``hole`` radius) with exact anti-aliased coverage -> uint8 [S, S, 4]."""
    sub = 4
    y, x = (np.mgrid[0:size * sub, 0:size * sub] + 0.5) / sub - size / 2
    r = np.hypot(x, y)
    inside = ((r <= radius) & (r >= hole)).astype(np.float32)
    cover = inside.reshape(size, sub, size, sub).mean((1, 3))
    yy, xx = np.mgrid[0:size, 0:size] - size / 2 + 0.5
    shade = 1.0 - 0.04 * np.clip((xx + yy) / radius, -1, 1)  # mild lighting, never brighter than the colour
    rgb = np.clip(np.asarray(colour, np.float32) * shade[..., None], 0, 255)
    return np.concatenate([rgb, cover[..., None] * 255], -1).round().astype(np.uint8)


def test_white_object_on_noisy_white_keeps_its_interior_opaque() -> None:
    rgba = shape_rgba(WHITE)
    frame = add_noise(composite_on_white(rgba), 8 / 255, seed=1)
    alpha = segment_alpha(frame)
    inner = ndimage.binary_erosion(rgba[..., 3] == 255, iterations=2)  # away from the +-1 pixel silhouette edge
    assert (alpha[inner] == 255).all()  # no holes
    assert (ramp_alpha(frame)[inner] < 255).mean() > 0.2  # the old estimator punches holes into it


def test_background_noise_does_not_become_fog() -> None:
    for colour in (WHITE, YELLOW, BLUE):
        rgba = shape_rgba(colour)
        frame = add_noise(composite_on_white(rgba), 8 / 255, seed=2)
        far = ~ndimage.binary_dilation(rgba[..., 3] > 0, iterations=2)
        assert (segment_alpha(frame)[far] == 0).all()
        assert ramp_alpha(frame)[far].mean() > 20  # old: haze over the whole background


def test_ring_hole_is_transparent_and_a_clean_pixel_is_kept() -> None:
    rgba = shape_rgba(PINK, radius=20.0, hole=8.0)
    alpha = segment_alpha(add_noise(composite_on_white(rgba), 8 / 255, seed=3))
    hole = ndimage.binary_erosion(rgba[..., 3] == 0, iterations=2)
    hole[:6], hole[-6:], hole[:, :6], hole[:, -6:] = False, False, False, False  # the enclosed hole only
    assert hole.sum() > 50 and (alpha[hole] == 0).all()
    frame = np.full((8, 8, 3), 255, np.uint8)
    frame[3, 4] = (200, 0, 0)  # a single object pixel on a clean frame is real, not a noise speck
    assert segment_alpha(frame)[3, 4] == 255 and segment_alpha(frame).sum() == 255


def test_new_estimator_beats_the_old_on_noisy_frames_with_known_masks() -> None:
    rgba = np.stack([shape_rgba(c) for c in (WHITE, YELLOW, PINK, BLUE)])
    old = mask_error(rgba, ramp_alpha, sigma=8 / 255, seed=4)
    new = mask_error(rgba, segment_alpha, sigma=8 / 255, seed=4)
    assert new["alpha_mae"] < 0.25 * old["alpha_mae"] and new["alpha_mae"] < 0.03
    assert new["iou"] > 0.95 > old["iou"]
    assert new["fog"] < 0.01 < old["fog"] and new["holes"] < 0.01
    clean_old, clean_new = mask_error(rgba, ramp_alpha), mask_error(rgba, segment_alpha)
    assert clean_new["alpha_mae"] <= clean_old["alpha_mae"] + 0.005 and clean_new["iou"] > 0.95
    table = compare_estimators(rgba, seed=4)
    assert table["segment/noise8/alpha_mae"] == round(new["alpha_mae"], 5)
    assert set(table) >= {"ramp/clean/iou", "ramp/noise8/fog", "segment/clean/holes"}


def test_mask_error_known_values_and_argument_checks() -> None:
    rgba = shape_rgba(BLUE)[None]
    exact = mask_error(rgba, lambda frames: np.broadcast_to(rgba[..., 3], frames.shape[:-1]))
    assert exact == {"alpha_mae": 0.0, "iou": 1.0, "fog": 0.0, "holes": 0.0}
    nothing = mask_error(rgba, lambda frames: np.zeros(frames.shape[:-1], np.uint8))
    assert nothing["iou"] == 0.0 and nothing["holes"] == 1.0
    with pytest.raises(ValueError, match="RGBA"):
        mask_error(rgba[..., :3], segment_alpha)
    with pytest.raises(ValueError, match="uint8 frames"):
        segment_alpha(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="sigma"):
        add_noise(rgba, -1.0)
    with pytest.raises(ValueError, match="ramp"):
        ramp_alpha(rgba[..., :3], ramp=0)


def test_render_mask_quality_reads_known_alpha_from_shards(tmp_path) -> None:
    from vfusion3d_core.cameras import orbit_cameras
    from vfusion3d_core.data.sample import MultiviewSample
    from vfusion3d_core.data.shards import ShardWriter
    from vfusion3d_core.filtering.masks import render_mask_quality

    cams = orbit_cameras(4, elevation_deg=20.0)
    with ShardWriter(tmp_path, 2) as writer:
        for i, colour in enumerate((WHITE, YELLOW, BLUE)):
            views = np.stack([shape_rgba(colour, radius=10.0 + v) for v in range(4)])
            writer.write(MultiviewSample(f"obj{i}", "a disc", views, cams.c2w.numpy(), cams.intrinsics.numpy(), {}))
    shards = [str(p) for p in writer.shards]
    table = render_mask_quality(shards, count=2)
    assert table["mask_eval/views"] == 8.0  # only the first 2 samples are read
    assert table["segment/noise8/alpha_mae"] < table["ramp/noise8/alpha_mae"]
    assert table["segment/noise8/iou"] > table["ramp/noise8/iou"]
    with pytest.raises(ValueError, match="count"):
        render_mask_quality(shards, count=0)
