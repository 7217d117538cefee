"""Bad inputs of `vfusion3d generate` (docs/lrm.md): several images (a bad one is reported, the rest processed,
outputs written atomically) and image decoding (16-bit greyscale, EXIF orientation, extreme aspect ratios)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from vfusion3d_core.cli import main
from vfusion3d_core.lrm import generate as generate_module
from vfusion3d_core.lrm.generate import GenerateOptions, generate_one, publish
from vfusion3d_core.lrm.preprocess import ImageError, open_image, padded_square, prepare_image, to_rgba

FAST = ["--views", "2", "--render-size", "16", "--mesh-resolution", "16", "--mesh-format", "obj",
        "--video-format", "gif", "--remove-background", "never"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, shaped_tiny_model) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    shaped_tiny_model.save_pretrained(path)
    return path


@pytest.fixture()
def good(tmp_path) -> Path:
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[8:32, 10:30] = (30, 160, 90, 255)
    path = tmp_path / "good.png"
    Image.fromarray(rgba).save(path)
    return path


def run(*args) -> object:
    return CliRunner().invoke(main, ["generate", *map(str, args)])


def leftovers(root: Path) -> list[str]:
    """Staging folders left behind by an interrupted write."""
    return sorted(p.name for p in root.iterdir() if p.name.endswith(".partial")) if root.exists() else []


# --- batches -----------------------------------------------------------------------------------------------
def test_bad_image_is_reported_and_the_rest_processed(tmp_path, checkpoint, good):
    bad = tmp_path / "BAD.png"
    bad.write_text("not an image")
    out = tmp_path / "out"
    result = run(bad, good, "--checkpoint", checkpoint, "-o", out, *FAST)
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert f"{bad}: cannot read image" in result.output
    assert "1 of 2 image(s) processed; 1 failed" in result.output
    assert (out / "good" / "mesh.obj").is_file() and (out / "good" / "input.png").is_file()
    assert sorted(p.name for p in out.iterdir()) == ["good"]  # no folder for BAD


def test_refused_rgba_image_leaves_no_folder(tmp_path, checkpoint, good):
    clear = tmp_path / "clear.png"
    Image.new("RGBA", (32, 32), (0, 0, 0, 0)).save(clear)
    out = tmp_path / "out"
    result = run(clear, good, "--checkpoint", checkpoint, "-o", out, *FAST)
    assert result.exit_code == 1, result.output
    assert f"{clear}: the image is fully transparent" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["good"]
    alone = tmp_path / "alone"
    result = run(clear, "--checkpoint", checkpoint, "-o", alone, *FAST)
    assert result.exit_code == 1 and "0 of 1 image(s) processed" in result.output, result.output
    assert not alone.exists()


def test_the_same_bad_file_twice_is_counted_twice(tmp_path, checkpoint, good):
    bad = tmp_path / "BAD.png"
    bad.write_bytes(b"")
    result = run(bad, good, bad, "--checkpoint", checkpoint, "-o", tmp_path / "out", *FAST)
    assert result.exit_code == 1, result.output
    assert "1 of 3 image(s) processed; 2 failed" in result.output


def test_all_good_batch_exits_zero_with_a_summary(tmp_path, checkpoint, good):
    result = run(good, "--checkpoint", checkpoint, "-o", tmp_path / "out", *FAST)
    assert result.exit_code == 0, result.output
    assert "1 of 1 image(s) processed" in result.output


def test_failure_part_way_leaves_no_partial_folder(tmp_path, shaped_tiny_model, good, monkeypatch):
    def broken_video(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(generate_module, "write_video", broken_video)
    out = tmp_path / "out"
    opts = GenerateOptions(render_size=16, num_views=1, mesh_resolution=8, remove_background="never")
    with pytest.raises(RuntimeError, match="disk full"):
        generate_one(shaped_tiny_model, good, out / "good", opts, log=lambda _: None, progress_bar=False)
    assert not (out / "good").exists() and leftovers(out) == []


def test_publish_replaces_outputs_of_an_earlier_run_and_keeps_other_files(tmp_path):
    out = tmp_path / "good"
    out.mkdir()
    (out / "input.png").write_text("old")
    (out / "notes.txt").write_text("mine")
    staging = tmp_path / ".good.x.partial"
    staging.mkdir()
    (staging / "input.png").write_text("new")
    written = publish(staging, out, {"input": staging / "input.png"})
    assert written == {"input": out / "input.png"}
    assert (out / "input.png").read_text() == "new" and (out / "notes.txt").read_text() == "mine"


# --- images ------------------------------------------------------------------------------------------------
def test_16bit_greyscale_is_scaled_to_8_bits(tmp_path):
    path = tmp_path / "grey16.png"
    Image.fromarray(np.array([[0, 257, 32768, 65535]], np.uint16)).save(path)
    img = open_image(path)
    assert img.mode.startswith("I"), img.mode  # PIL decodes it as 16/32-bit integers
    rgba, has_alpha = to_rgba(img)
    assert not has_alpha
    np.testing.assert_array_equal(rgba[0, :, 0], [0, 1, 128, 255])  # not clipped to white
    np.testing.assert_array_equal(rgba[0, :, 0], rgba[0, :, 2])


def test_exif_orientation_is_applied(tmp_path):
    stored = np.zeros((20, 40, 3), np.uint8)  # 40 wide, 20 high: red left half, blue right half
    stored[:, :20] = (255, 0, 0)
    stored[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.png"
    Image.fromarray(stored).save(path, exif=exif)
    img = open_image(path)
    assert img.size == (20, 40)  # (width, height) once upright
    arr = np.asarray(img.convert("RGB"))
    assert tuple(arr[5, 10]) == (255, 0, 0) and tuple(arr[35, 10]) == (0, 0, 255)  # left half -> top half


@pytest.mark.parametrize("shape", [(300, 20000), (20000, 300)])
def test_extreme_aspect_ratio_is_resized_before_padding(shape):
    rgba = np.full((*shape, 4), 200, np.uint8)
    tracemalloc.start()
    try:
        square = padded_square(rgba, 64, border_ratio=0.1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert square.shape == (64, 64, 4)
    # the long side squared would be 20000^2 * 4 bytes = 1.6 GB; the input itself is 24 MB
    assert peak < rgba.nbytes, f"peak {peak} bytes while padding a {shape} image"
    long_axis = int(np.argmax(shape))
    filled = (square[..., 3] > 0).any(axis=1 - long_axis)
    assert 49 <= filled.sum() <= 53  # the long side spans 64 * (1 - 2 * 0.1) = 51 px


def test_extreme_aspect_ratio_end_to_end(tmp_path):
    path = tmp_path / "strip.png"
    Image.new("RGB", (20000, 30), (0, 0, 255)).save(path)
    prepared = prepare_image(path, 32, background="never")
    assert prepared.image.shape == (3, 32, 32)
    assert float(prepared.image[2].min()) > 0.9  # blue strip on white: the blue channel stays high


def test_32bit_integer_outside_16bit_range_is_refused(tmp_path):
    img = Image.fromarray(np.array([[0, 70000]], np.int32), "I")
    with pytest.raises(ImageError, match="only 16-bit ranges"):
        to_rgba(img)
