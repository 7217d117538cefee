"""CLIP from real folder layouts: normalisation, size and crop read from the folder (no defaults), checked
against the folder's own image processor; device / precision; batched captions."""

import json

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
from clip_folders import tiny_clip_model, tiny_tokenizer, write_hub_folder, write_processor_folder

from vfusion3d_core.compute import ComputeSettings
from vfusion3d_core.metrics import ClipScorer
from vfusion3d_core.metrics.clip import OPENAI_MEAN, OPENAI_STD
from vfusion3d_core.preprocess import PreprocessConfigError


def smooth_images(n: int, size: int, seed: int) -> np.ndarray:
    """uint8 [n, size, size, 3] with structure (not per-pixel noise)."""
    x = np.random.default_rng(seed).random((n, size, size, 3)) * 255
    return np.stack([ndi.uniform_filter(f, size=(3, 3, 1)) for f in x]).clip(0, 255).astype(np.uint8)


def test_processor_config_folder_gives_the_processors_pixels_and_the_models_embeddings(tmp_path) -> None:
    folder = tmp_path / "clip_proc"
    processor = write_processor_folder(folder, shortest_edge=40, crop=32)
    assert (folder / "processor_config.json").is_file() and not (folder / "preprocessor_config.json").exists()
    scorer = ClipScorer.from_pretrained(folder, ComputeSettings("cpu", "fp32"))
    assert not scorer.is_random and scorer.name == "clip_proc"
    assert (scorer.preprocess.shortest_edge, scorer.preprocess.crop_hw) == (40, (32, 32))
    images = smooth_images(3, 48, seed=0)
    ref = processor(images=list(images), return_tensors="pt")["pixel_values"]
    ours = scorer.pixel_values(torch.from_numpy(images).permute(0, 3, 1, 2))
    assert ours.shape == ref.shape == (3, 3, 32, 32)
    assert (ours - ref).abs().max() < 0.05 and (ours - ref).abs().mean() < 0.006  # ~ one 8-bit level
    with torch.no_grad():
        out = scorer.model.get_image_features(pixel_values=ref)
        expected = torch.nn.functional.normalize(out if torch.is_tensor(out) else out.pooler_output, dim=-1)
    got = scorer.image_embeddings(torch.from_numpy(images).permute(0, 3, 1, 2))
    assert (got - expected).abs().max() < 0.05
    # float [0, 1] renders go through the same steps
    floats = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    assert (scorer.pixel_values(floats) - ref).abs().mean() < 0.01


def test_hub_folder_normalisation_is_read_not_defaulted(tmp_path) -> None:
    folder = tmp_path / "clip_hub"
    processor = write_hub_folder(folder, mean=(0.1, 0.2, 0.3), std=(0.6, 0.7, 0.8))
    scorer = ClipScorer.from_pretrained(folder)
    assert scorer.preprocess.mean == (0.1, 0.2, 0.3) and scorer.preprocess.std == (0.6, 0.7, 0.8)
    images = smooth_images(2, 32, seed=1)
    ref = processor(images=list(images), return_tensors="pt")["pixel_values"]
    ours = scorer.pixel_values(torch.from_numpy(images).permute(0, 3, 1, 2))
    assert (ours - ref).abs().max() < 1e-4  # no resize at 32 px: exact up to float rounding
    # the OpenAI defaults would give different inputs: the folder's values are really used
    openai = (torch.from_numpy(images).permute(0, 3, 1, 2) / 255 - torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)) \
        / torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    assert (ours - openai).abs().mean() > 0.3
    t = scorer.text_embeddings(["a red box", "a blue ball", "a red box"])
    assert torch.allclose(t[0], t[2]) and not torch.allclose(t[0], t[1])


def test_folder_without_image_processor_settings_is_an_error_naming_it(tmp_path) -> None:
    folder = tmp_path / "clip_bare"
    tok = tiny_tokenizer(tmp_path / "tok")
    tiny_clip_model(tok).save_pretrained(folder)
    tok.save_pretrained(folder)
    with pytest.raises(PreprocessConfigError, match=r"clip_bare.*preprocessor_config.json.*processor_config.json"):
        ClipScorer.from_pretrained(folder)
    (folder / "processor_config.json").write_text(json.dumps({"processor_class": "CLIPProcessor"}))
    with pytest.raises(PreprocessConfigError, match="no 'image_processor'"):
        ClipScorer.from_pretrained(folder)
    with pytest.raises(FileNotFoundError, match="not a CLIP model directory"):
        ClipScorer.from_pretrained(tmp_path / "tok")


def test_processor_size_must_match_the_vision_tower(tmp_path) -> None:
    folder = tmp_path / "clip_mismatch"
    write_processor_folder(folder, shortest_edge=40, crop=32)
    cfg = json.loads((folder / "processor_config.json").read_text())
    cfg["image_processor"]["crop_size"] = {"height": 24, "width": 24}
    (folder / "processor_config.json").write_text(json.dumps(cfg))
    with pytest.raises(PreprocessConfigError, match="expects 32x32"):
        ClipScorer.from_pretrained(folder)


def test_bf16_autocast_and_batched_captions(tmp_path) -> None:
    folder = tmp_path / "clip_proc"
    write_processor_folder(folder)
    fp32 = ClipScorer.from_pretrained(folder, ComputeSettings("cpu", "fp32"))
    bf16 = ClipScorer.from_pretrained(folder, ComputeSettings("cpu", "bf16"))
    seen = []
    bf16.model.vision_model.embeddings.register_forward_hook(
        lambda m, i, o: seen.append(torch.is_autocast_enabled("cpu")))
    images = torch.from_numpy(smooth_images(2, 32, seed=2)).permute(0, 3, 1, 2).float() / 255
    a, b = fp32.image_embeddings(images), bf16.image_embeddings(images)
    assert seen == [True] and b.dtype == torch.float32 and (a - b).abs().max() < 0.1 and not torch.equal(a, b)
    captions = ["a red box", "a blue ball", "a green cone", "zebra", "a red ball"]
    np.testing.assert_allclose(fp32.text_embeddings(captions, batch_size=2), fp32.text_embeddings(captions),
                               atol=1e-5)
    with pytest.raises(ValueError, match="2 images but 1 captions"):
        fp32.text_similarity(images, ["a red box"])
