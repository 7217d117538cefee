"""PSNR / SSIM / LPIPS / CLIP metrics and the held-out novel-view scorer on known inputs."""

import math

import pytest
import torch

from vfusion3d_core.lrm.train.losses import build_lpips
from vfusion3d_core.metrics import ClipScorer, lpips_distance, psnr, ssim


def test_psnr_known_value_and_identity() -> None:
    a = torch.zeros(2, 3, 8, 8)
    b = torch.full_like(a, 0.1)  # MSE 0.01 -> 20 dB
    assert torch.allclose(psnr(a, b), torch.tensor([20.0, 20.0]), atol=1e-4)
    assert psnr(a, a)[0] == pytest.approx(100.0)


def test_ssim_is_one_for_identical_and_lower_for_noise() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 32, generator=g)
    noisy = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-5)
    s = ssim(x, noisy)
    assert s.shape == (2,) and (s < 0.9).all()


def test_lpips_zero_for_identical_and_ordered_by_distortion() -> None:
    torch.manual_seed(0)
    net = build_lpips("alex", random_backbone=True).eval()
    x = torch.rand(1, 3, 32, 32)
    small = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
    big = torch.rand(1, 3, 32, 32)
    assert lpips_distance(net, x, x).item() == pytest.approx(0.0, abs=1e-6)
    assert lpips_distance(net, x, small).item() < lpips_distance(net, x, big).item()


def test_random_clip_is_seeded_and_similarities_are_cosines() -> None:
    a, b = ClipScorer.random(seed=3), ClipScorer.random(seed=3)
    assert a.is_random and "random" in a.name
    x = torch.rand(3, 3, 40, 40, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(a.image_embeddings(x), b.image_embeddings(x))
    assert torch.allclose(a.image_similarity(x, x), torch.ones(3), atol=1e-5)
    t = a.text_similarity(x, ["a red box", "a blue ball", "a green cone"])
    assert t.shape == (3,) and bool(((t >= -1) & (t <= 1)).all())
    e = a.text_embeddings(["a red box", "a red box", "a torus"])
    assert torch.allclose(e[0], e[1]) and not torch.allclose(e[0], e[2])
    assert math.isclose(float(e.norm(dim=-1)[2]), 1.0, rel_tol=1e-5)


def test_clip_from_a_local_directory_matches_the_saved_model(tmp_path) -> None:
    scorer = ClipScorer.random(seed=5)
    scorer.model.save_pretrained(tmp_path / "clip")
    scorer.tokenizer.save_pretrained(tmp_path / "clip")
    scorer.preprocess.save(tmp_path / "clip", "CLIPImageProcessor")  # a folder's own processor settings
    loaded = ClipScorer.from_pretrained(tmp_path / "clip")
    assert not loaded.is_random and loaded.image_size == scorer.image_size
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(loaded.image_embeddings(x), scorer.image_embeddings(x), atol=1e-6)
    assert torch.allclose(loaded.text_embeddings(["a cat"]), scorer.text_embeddings(["a cat"]), atol=1e-6)
    with pytest.raises(FileNotFoundError, match="not a CLIP model directory"):
        ClipScorer.from_pretrained(tmp_path)
