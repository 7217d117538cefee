"""Held-out image -> orbit quality metrics: known values on synthetic orbits, and the sampled path at micro size."""

import numpy as np
import pytest
import torch
from video_micro import micro_model

from vfusion3d_core.lrm.train.losses import build_lpips
from vfusion3d_core.video import OrbitData
from vfusion3d_core.video.metrics import image_to_video_quality, orbit_quality, vae_fidelity


def disc_orbit(colour: tuple[int, int, int], frames: int = 4, size: int = 32, radii: list[float] | None = None
               ) -> torch.Tensor:
    """One orbit of a coloured disc on white (radius per frame) -> float [1, F, 3, S, S] in [-1, 1]."""
    radii = radii or [9.0] * frames
    y, x = np.mgrid[0:size, 0:size] - size / 2 + 0.5
    out = np.full((frames, size, size, 3), 255, np.uint8)
    for f, r in enumerate(radii):
        out[f][np.hypot(x, y) <= r] = colour
    return torch.from_numpy(out).permute(0, 3, 1, 2)[None].float() / 127.5 - 1


@pytest.fixture(scope="module")
def lpips_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_lpips("alex", random_backbone=True)


def test_identical_orbits_have_perfect_scores(lpips_net) -> None:
    real = torch.cat([disc_orbit((200, 40, 40)), disc_orbit((40, 60, 200), radii=[6, 8, 10, 12])])
    q = orbit_quality(real.clone(), real, lpips_net)
    assert q["psnr"] == pytest.approx(100.0)
    assert q["lpips"] == pytest.approx(0.0, abs=1e-6)
    assert q["colour_mean_distance"] == 0.0 and q["colour_hist_distance"] == 0.0 and q["consistency_gap"] == 0.0
    assert q["area_cv"] == q["area_cv_true"] > 0.1  # the growing disc's silhouette varies; the red one's does not


def test_colour_shift_grows_the_colour_distances(lpips_net) -> None:
    real = disc_orbit((200, 40, 40))
    scores = [orbit_quality(disc_orbit((200 - d, 40 + d, 40)), real, lpips_net) for d in (0, 40, 120)]
    mean = [s["colour_mean_distance"] for s in scores]
    hist = [s["colour_hist_distance"] for s in scores]
    assert mean[0] == 0.0 < mean[1] < mean[2]
    assert hist[0] == 0.0 < hist[1] <= hist[2]
    assert scores[0]["psnr"] > scores[1]["psnr"] > scores[2]["psnr"]
    assert scores[2]["lpips"] > 0.0
    assert all(s["consistency_gap"] == pytest.approx(0.0, abs=1e-9) for s in scores)  # shape and per-frame colour
    np.testing.assert_allclose(mean[1], np.linalg.norm([40, 40, 0]) / 255, rtol=1e-5)


def test_self_consistency_and_missing_objects() -> None:
    real = disc_orbit((40, 160, 60))
    flicker = disc_orbit((40, 160, 60), radii=[9, 3, 12, 6])  # the silhouette jumps from frame to frame
    q = orbit_quality(flicker, real)
    assert "lpips" not in q and q["area_cv"] > 0.3 and q["area_cv_true"] == 0.0 and q["consistency_gap"] > 0.3
    blank = torch.ones_like(real)  # white frames: no object at all
    assert orbit_quality(blank, real)["colour_hist_distance"] == 1.0
    with pytest.raises(ValueError, match="generated and real"):
        orbit_quality(real[:, :1], real[:, :1])
    with pytest.raises(ValueError, match="generated and real"):
        orbit_quality(real, real[:, :3])


def test_image_to_video_quality_is_seeded(lpips_net) -> None:
    model = micro_model()
    frames = ((disc_orbit((200, 40, 40), size=16, radii=[5, 5, 5, 5]) + 1) * 127.5).round().to(torch.uint8)
    data = OrbitData(frames.permute(0, 1, 3, 4, 2).repeat(2, 1, 1, 1, 1).contiguous(), ["a red disc"] * 2,
                     ["a", "b"])
    q, generated, true = image_to_video_quality(model, data, count=2, lpips_net=lpips_net)
    again, generated2, _ = image_to_video_quality(model, data, count=2, lpips_net=lpips_net)
    assert q == again and (generated == generated2).all()
    assert generated.shape == true.shape == (2, 4, 16, 16, 3) and q["objects"] == 2.0
    assert {"psnr", "lpips", "colour_mean_distance", "colour_hist_distance", "area_cv", "consistency_gap"} <= set(q)
    with pytest.raises(ValueError, match="count"):
        image_to_video_quality(model, data, count=0)


def test_vae_fidelity_measures_the_colour_the_decoder_keeps() -> None:
    model = micro_model()
    frames = torch.ones(2, 3, 16, 16)  # white, with a pure red square: chroma 1 on the object pixels
    frames[:, 1:, 4:12, 4:12] = -1.0
    q = vae_fidelity(model, frames)
    assert q["vae_chroma_true"] == pytest.approx(1.0)
    assert 0.0 <= q["vae_chroma"] <= 1.0 and q["vae_chroma"] < 0.9  # an untrained decoder greys the red out
    assert q == vae_fidelity(model, frames)  # deterministic (latent mode, no sampling)
    with pytest.raises(ValueError, match="frames"):
        vae_fidelity(model, frames[:, :2])
