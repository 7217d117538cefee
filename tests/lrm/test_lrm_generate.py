"""`vfusion3d generate` end to end on a tiny random checkpoint."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import trimesh
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import save_file

from vfusion3d_core.cli import main
from vfusion3d_core.lrm.convert import to_official_state_dict
from vfusion3d_core.lrm.mesh_export import Z_UP_TO_Y_UP
from vfusion3d_core.lrm.turntable import has_ffmpeg


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, shaped_tiny_model):
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    shaped_tiny_model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    rgba = np.zeros((90, 70, 4), np.uint8)
    rgba[15:75, 10:60] = (30, 160, 90, 255)
    Image.fromarray(rgba).save(root / "object.png")
    Image.fromarray(rgba[..., :3]).save(root / "object.jpg")
    return [root / "object.png", root / "object.jpg"]


def run(args):
    result = CliRunner().invoke(main, ["generate", *map(str, args)])
    return result


def test_generate_writes_mesh_video_and_input(tmp_path, checkpoint, images):
    out = tmp_path / "out"
    result = run([*images, "--checkpoint", checkpoint, "-o", out, "--views", 6, "--mesh-resolution", 24,
                  "--video-format", "gif", "--mesh-format", "obj", "--remove-background", "never"])
    assert result.exit_code == 0, result.output
    for sub in ("object", "object_2"):
        mesh = trimesh.load(out / sub / "mesh.obj", force="mesh")
        assert len(mesh.faces) > 0 and np.abs(mesh.vertices).max() <= 1 + 1e-5
        frames = iio.imread(out / sub / "turntable.gif")
        assert frames.shape[:3] == (6, 32, 32)
        assert frames[0].std() > 0  # not a blank frame
        assert Image.open(out / sub / "input.png").size == (64, 64)
    assert "alpha channel" in result.output and "whole image" in result.output


@pytest.mark.skipif(not has_ffmpeg(), reason="imageio-ffmpeg not installed")
def test_generate_mp4_and_glb(tmp_path, checkpoint, images):
    result = run([images[0], "--checkpoint", checkpoint, "-o", tmp_path, "--views", 4, "--mesh-resolution", 16])
    assert result.exit_code == 0, result.output
    assert iio.imread(tmp_path / "object" / "turntable.mp4", plugin="FFMPEG").shape[0] == 4
    assert len(trimesh.load(tmp_path / "object" / "mesh.glb", force="mesh").faces) > 0


def test_generate_from_official_weights(tmp_path, shaped_tiny_model, images):
    save_file({k: v.contiguous() for k, v in to_official_state_dict(shaped_tiny_model.state_dict()).items()},
              str(tmp_path / "official.safetensors"))
    cfg = shaped_tiny_model.config.to_dict()
    (tmp_path / "kwargs.json").write_text(json.dumps({"model": cfg, "source_size": cfg["source_size"]}))
    result = run([images[0], "--official", tmp_path / "official.safetensors", "--official-config",
                  tmp_path / "kwargs.json", "-o", tmp_path / "out", "--views", 2, "--mesh-resolution", 16,
                  "--video-format", "gif"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "object" / "mesh.glb").is_file()


def test_generate_clear_errors(tmp_path, checkpoint, images):
    (tmp_path / "bad.png").write_bytes(b"no image here")
    result = run([tmp_path / "bad.png", "--checkpoint", checkpoint, "-o", tmp_path / "o"])
    assert result.exit_code != 0 and "cannot read image" in result.output
    result = run([images[0], "--checkpoint", checkpoint, "-o", tmp_path / "o", "--max-pixels", 100])
    assert result.exit_code != 0 and "decompression-bomb" in result.output
    result = run([images[0], "-o", tmp_path / "o"])
    assert result.exit_code != 0 and "exactly one of" in result.output
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "model.safetensors").write_bytes((checkpoint / "model.safetensors").read_bytes())
    cfg = json.loads((checkpoint / "config.json").read_text())
    (wrong / "config.json").write_text(json.dumps(dict(cfg, transformer_layers=3)))
    result = run([images[0], "--checkpoint", wrong, "-o", tmp_path / "o"])
    assert result.exit_code != 0 and "missing keys" in result.output and "transformer.blocks.2" in result.output
    assert not (tmp_path / "o").exists()


def test_generate_exact_flag_matches_the_exact_api_path(tmp_path, checkpoint, images, shaped_tiny_model):
    """--exact writes what the exact API path gives (mesh within float rounding of the chunking);
    the default fast path writes a mesh of the same surface."""
    from vfusion3d_core.cameras import default_source_camera
    from vfusion3d_core.lrm.mesh import extract_mesh
    from vfusion3d_core.lrm.preprocess import DEFAULT_MAX_PIXELS, prepare_image

    args = [images[0], "--checkpoint", checkpoint, "--views", 2, "--mesh-resolution", 24, "--video-format", "gif",
            "--mesh-format", "ply", "--remove-background", "never"]
    assert run([*args, "-o", tmp_path / "exact", "--exact"]).exit_code == 0
    assert run([*args, "-o", tmp_path / "fast", "--max-memory-gb", 2, "--up-axis", "z"]).exit_code == 0
    prepared = prepare_image(images[0], 64, 0.15, "never", DEFAULT_MAX_PIXELS)
    with torch.no_grad():
        planes = shaped_tiny_model.encode(prepared.image[None], default_source_camera()[None])
        reference = extract_mesh(shaped_tiny_model, planes, resolution=24)
    exact = trimesh.load(tmp_path / "exact" / "object" / "mesh.ply", force="mesh", process=False)
    exact.apply_transform(np.linalg.inv(Z_UP_TO_Y_UP))  # the default .ply is y-up: back to the z-up world
    fast = trimesh.load(tmp_path / "fast" / "object" / "mesh.ply", force="mesh", process=False)
    assert len(exact.faces) == len(reference.faces)
    # the CLI's model is loaded from the checkpoint: its planes differ from the in-memory model's by float
    # rounding (~6e-7, other kernels for the loaded tensors), and marching cubes amplifies that where two grid
    # densities straddling the level are close: a handful of vertices may move by up to ~1e-4
    np.testing.assert_allclose(exact.vertices, reference.vertices, atol=1e-4)
    assert (np.abs(exact.vertices - reference.vertices) > 1e-5).any(axis=1).mean() < 1e-3
    assert abs(len(fast.faces) - len(reference.faces)) < 0.05 * len(reference.faces)


def test_render_turntable_exact_options_equal_default(shaped_tiny_model, tiny_planes):
    from vfusion3d_core.lrm.generate import render_turntable
    from vfusion3d_core.lrm.inference import InferenceOptions

    with torch.no_grad():
        ref = render_turntable(shaped_tiny_model, tiny_planes[:1], 20, 3)
        exact = render_turntable(shaped_tiny_model, tiny_planes[:1], 20, 3, options=InferenceOptions.exact())
        fast = render_turntable(shaped_tiny_model, tiny_planes[:1], 20, 3, options=InferenceOptions())
    assert np.array_equal(ref, exact)
    assert np.abs(fast.astype(int) - ref.astype(int)).mean() < 3


def test_precision_option_maps_onto_inference_options(tmp_path, checkpoint, images):
    from vfusion3d_core.compute import ComputeSettings
    from vfusion3d_core.lrm.generate import inference_options

    assert inference_options(ComputeSettings("cpu", "fp32")).compute_dtype("cpu") == torch.float32
    bf16 = inference_options(ComputeSettings("cpu", "bf16"))
    assert bf16.compute_dtype("cpu") == bf16.compute_dtype("cpu", "field") == torch.bfloat16
    assert bf16.compute_dtype("cpu", "mesh") == torch.float32  # meshing stays fp32
    assert inference_options(ComputeSettings("cpu", "fp32"), exact=True).is_exact
    with pytest.raises(ValueError, match="fp32"):
        inference_options(ComputeSettings("cpu", "bf16"), exact=True)
    refused = run([images[0], "--checkpoint", checkpoint, "-o", tmp_path, "--exact", "--precision", "bf16"])
    assert refused.exit_code == 2 and "--exact" in refused.output
    out = tmp_path / "fp32"
    result = run([images[0], "--checkpoint", checkpoint, "-o", out, "--views", 2, "--mesh-resolution", 16,
                  "--video-format", "gif", "--mesh-format", "obj", "--remove-background", "never",
                  "--device", "cpu", "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    assert (out / "mesh.obj").is_file() or any(out.glob("*/mesh.obj"))


FAST = ["--views", 2, "--render-size", 16, "--mesh-resolution", 24, "--video-format", "gif",
        "--remove-background", "never"]


def test_no_video_writes_the_mesh_and_no_video(tmp_path, checkpoint, images):
    out = tmp_path / "out"
    result = run([images[0], "--checkpoint", checkpoint, "-o", out, *FAST, "--no-video"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "object").iterdir()) == ["input.png", "mesh.glb"]
    assert len(trimesh.load(out / "object" / "mesh.glb", force="mesh").faces) > 0


def test_glb_from_the_cli_is_y_up(tmp_path, checkpoint, images):
    """The default .glb is the z-up extraction rotated to y-up: re-loaded through its scene graph it equals
    the --up-axis z .obj of the same run with (x, y, z) -> (x, z, -y)."""
    out = tmp_path / "out"
    assert run([images[0], "--checkpoint", checkpoint, "-o", out / "glb", *FAST, "--no-video"]).exit_code == 0
    assert run([images[0], "--checkpoint", checkpoint, "-o", out / "obj", *FAST, "--no-video",
                "--mesh-format", "obj", "--up-axis", "z"]).exit_code == 0
    glb = trimesh.load(out / "glb" / "object" / "mesh.glb", force="scene").to_mesh()
    world = trimesh.load(out / "obj" / "object" / "mesh.obj", force="mesh", process=False)
    expected = world.vertices[:, [0, 2, 1]] * [1, 1, -1]
    np.testing.assert_allclose(np.sort(glb.vertices, axis=0), np.sort(expected, axis=0), atol=1e-5)


def test_max_faces_and_baked_texture(tmp_path, checkpoint, images):
    out = tmp_path / "out"
    result = run([images[0], "--checkpoint", checkpoint, "-o", out / "glb", *FAST, "--no-video",
                  "--max-faces", 1000, "--texture-size", 32])
    assert result.exit_code == 0, result.output
    assert "decimated" in result.output and "texture baked" in result.output
    mesh = trimesh.load(out / "glb" / "object" / "mesh.glb", force="scene").to_mesh()
    assert 0 < len(mesh.faces) <= 1000 and mesh.visual.kind == "texture"
    assert np.asarray(mesh.visual.material.baseColorTexture).shape[:2] == (32, 32)
    result = run([images[0], "--checkpoint", checkpoint, "-o", out / "obj", *FAST, "--no-video",
                  "--max-faces", 1000, "--texture-size", 32, "--mesh-format", "obj"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "obj" / "object").iterdir()) == [
        "input.png", "mesh.mtl", "mesh.obj", "texture.png"]
    assert trimesh.load(out / "obj" / "object" / "mesh.obj", force="mesh").visual.kind == "texture"


def test_mesh_option_usage_errors(tmp_path, checkpoint, images):
    base = [images[0], "--checkpoint", checkpoint, "-o", tmp_path / "o"]
    result = run([*base, "--up-axis", "z"])
    assert result.exit_code == 2 and "always y-up" in result.output
    result = run([*base, "--mesh-format", "ply", "--texture-size", 64])
    assert result.exit_code == 2 and "glb or obj" in result.output
    assert not (tmp_path / "o").exists()


def test_truncated_png_in_a_batch_is_named_and_the_others_written(tmp_path, checkpoint, images):
    data = images[0].read_bytes()
    bad = tmp_path / "truncated.png"
    bad.write_bytes(data[:len(data) // 2])  # a valid PNG header, then the bytes stop
    out = tmp_path / "out"
    result = run([images[0], bad, images[1], "--checkpoint", checkpoint, "-o", out, *FAST, "--no-video"])
    assert result.exit_code == 1, result.output
    assert f"{bad}: cannot read image" in result.output
    assert "2 of 3 image(s) processed; 1 failed" in result.output
    assert (out / "object" / "mesh.glb").is_file() and (out / "object_2" / "mesh.glb").is_file()
    assert not (out / "truncated").exists()
