"""Input preprocessing for generate: safe decoding, recentring, white compositing."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from vfusion3d_core.lrm.preprocess import (
    ImageError,
    open_image,
    prepare_image,
    recentre,
    rembg_status,
    require_rembg,
    to_rgba,
)


def rgba_square(h=100, w=80, box=(20, 70, 10, 60), colour=(200, 50, 50)) -> np.ndarray:
    img = np.zeros((h, w, 4), np.uint8)
    top, bottom, left, right = box
    img[top:bottom, left:right] = (*colour, 255)
    return img


def test_recentre_centres_pads_and_composites_on_white():
    out = recentre(rgba_square(), 64, border_ratio=0.25)  # 50x50 object -> 32 px square in the middle
    assert out.shape == (3, 64, 64)
    fg = (out - 1).abs().sum(0) > 0.1
    rows, cols = torch.nonzero(fg, as_tuple=True)
    assert abs(rows.float().mean().item() - 31.5) < 1 and abs(cols.float().mean().item() - 31.5) < 1
    assert 30 <= rows.max() - rows.min() + 1 <= 34
    assert torch.allclose(out[:, 0, 0], torch.ones(3))  # background is white
    torch.testing.assert_close(out[:, 32, 32], torch.tensor([200, 50, 50]) / 255.0, atol=0.01, rtol=0)


def test_fully_transparent_image_is_rejected():
    with pytest.raises(ImageError, match="transparent"):
        recentre(np.zeros((10, 10, 4), np.uint8), 16)


def test_alpha_detection(tmp_path):
    Image.fromarray(rgba_square()).save(tmp_path / "a.png")
    Image.fromarray(rgba_square()[..., :3]).save(tmp_path / "b.png")
    assert to_rgba(open_image(tmp_path / "a.png"))[1] is True
    assert to_rgba(open_image(tmp_path / "b.png"))[1] is False
    prepared = prepare_image(tmp_path / "b.png", 32, background="never")
    assert prepared.image.shape == (3, 32, 32) and "whole image" in prepared.mask_source


def test_unreadable_and_oversized_images(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"definitely not a png")
    with pytest.raises(ImageError, match="cannot read"):
        open_image(tmp_path / "bad.png")
    with pytest.raises(ImageError, match="no such file"):
        open_image(tmp_path / "missing.png")
    Image.fromarray(np.zeros((50, 50, 3), np.uint8)).save(tmp_path / "big.png")
    with pytest.raises(ImageError, match="decompression-bomb"):
        open_image(tmp_path / "big.png", max_pixels=2000)


def test_rembg_always_without_model_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "no_models"))
    usable, why = rembg_status()
    assert not usable and ("not installed" in why or "not available locally" in why)
    Image.fromarray(rgba_square()[..., :3]).save(tmp_path / "b.png")
    with pytest.raises(ImageError, match="rembg"):
        prepare_image(tmp_path / "b.png", 32, background="always")


def test_rembg_missing_says_how_to_install_or_skip(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "rembg", None)  # `import rembg` raises ImportError, as when not installed
    usable, why = rembg_status()
    assert not usable and "pip install 'vfusion3d[rembg]'" in why
    Image.fromarray(rgba_square()[..., :3]).save(tmp_path / "b.png")
    with pytest.raises(ImageError) as err:
        prepare_image(tmp_path / "b.png", 32, background="always")
    message = str(err.value)
    assert "pip install 'vfusion3d[rembg]'" in message and "--remove-background never" in message
    # auto falls back to the whole image and says why; never does not touch rembg
    assert "vfusion3d[rembg]" in prepare_image(tmp_path / "b.png", 32, background="auto").mask_source
    assert "disabled" in prepare_image(tmp_path / "b.png", 32, background="never").mask_source


def test_rembg_without_its_model_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "rembg", types.ModuleType("rembg"))  # installed, but no u2net.onnx
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "no_models"))
    with pytest.raises(ImageError) as err:
        require_rembg()
    message = str(err.value)
    assert str(tmp_path / "no_models" / "u2net.onnx") in message and "--remove-background never" in message


def test_generate_always_without_rembg_is_a_usage_error_before_loading(tmp_path, monkeypatch):
    from vfusion3d_core.cli import main

    monkeypatch.setitem(sys.modules, "rembg", None)
    Image.fromarray(rgba_square()[..., :3]).save(tmp_path / "b.png")
    (tmp_path / "ckpt").mkdir()  # no checkpoint inside: the refusal must come before the model is loaded
    result = CliRunner().invoke(main, ["generate", str(tmp_path / "b.png"), "--checkpoint", str(tmp_path / "ckpt"),
                                       "-o", str(tmp_path / "out"), "--remove-background", "always"])
    assert result.exit_code == 2, result.output
    assert "pip install 'vfusion3d[rembg]'" in result.output and "--remove-background never" in result.output
    assert not (tmp_path / "out").exists()
