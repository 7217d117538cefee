"""Bad configs and weight files (docs/reliability.md, "Bad inputs"): every invalid config field listed with the
file's name, JSON errors with their position, shape mismatches and NaN/inf tensors named with the file, unknown
released kwargs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import load_file, save_file

from vfusion3d_core.cli import main
from vfusion3d_core.lrm import LRM, CheckpointMismatchError, LRMConfig, get_preset
from vfusion3d_core.lrm.config import OFFICIAL_IGNORED_KEYS, ConfigError
from vfusion3d_core.lrm.convert import ours_to_official, to_official_state_dict
from vfusion3d_core.lrm.generate import load_model, load_official_config


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_model) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    tiny_model.save_pretrained(path)
    return path


@pytest.fixture()
def copy(tmp_path, checkpoint) -> Path:
    dst = tmp_path / "ckpt"
    shutil.copytree(checkpoint, dst)
    return dst


def edit_config(ckpt: Path, **changes) -> None:
    cfg = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps(dict(cfg, **changes)))


def cli(*args):
    return CliRunner().invoke(main, ["generate", *map(str, args)])


# --- LRMConfig validation ----------------------------------------------------------------------------------
def test_zero_and_negative_sizes_are_all_listed_without_zero_division():
    with pytest.raises(ConfigError) as info:
        LRMConfig(transformer_heads=0, triplane_dim=-3, render_size=0)
    message = str(info.value)
    for needle in ("transformer_heads=0", "triplane_dim=-3", "render_size=0"):
        assert needle in message, message


def test_non_divisible_heads_and_other_errors_are_reported_together():
    with pytest.raises(ConfigError) as info:
        LRMConfig(transformer_dim=1000, transformer_heads=3, rendering_samples_per_ray=7,
                  dino_config=dict(get_preset("paper").dino_config, num_attention_heads=5))
    message = str(info.value)
    assert "transformer_dim=1000 not divisible by transformer_heads=3" in message
    assert "rendering_samples_per_ray=7" in message
    assert "dino_config.hidden_size=768 not divisible by dino_config.num_attention_heads=5" in message


def test_non_integer_sizes_are_refused():
    with pytest.raises(ConfigError, match=r"transformer_layers='16' must be a positive integer"):
        LRMConfig(transformer_layers="16")


def test_invalid_config_file_names_the_file_and_every_field(copy):
    edit_config(copy, transformer_heads=0, triplane_low_res=-1)
    with pytest.raises(CheckpointMismatchError) as info:
        LRM.from_pretrained(copy)
    message = str(info.value)
    assert str(copy / "config.json") in message
    assert "transformer_heads=0" in message and "triplane_low_res=-1" in message


def test_non_json_config_names_the_file_and_position(copy):
    (copy / "config.json").write_text('{\n  "transformer_dim": 64,\n  oops\n}')
    with pytest.raises(CheckpointMismatchError) as info:
        LRM.from_pretrained(copy)
    message = str(info.value)
    assert str(copy / "config.json") in message and "not valid JSON at line 3 column 3" in message


def test_config_that_is_not_an_object_is_refused(copy):
    (copy / "config.json").write_text("[1, 2]")
    with pytest.raises(CheckpointMismatchError, match="JSON object, got list"):
        LRM.from_pretrained(copy)


def test_cli_refuses_a_bad_config_with_its_message_and_no_traceback(tmp_path, copy):
    edit_config(copy, transformer_heads=0)
    image = tmp_path / "in.png"
    Image.new("RGB", (16, 16), (200, 0, 0)).save(image)
    result = cli(image, "--checkpoint", copy, "-o", tmp_path / "out")
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), repr(result.exception)
    assert "cannot load the model" in result.output and str(copy / "config.json") in result.output
    assert "transformer_heads=0" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


# --- weights -----------------------------------------------------------------------------------------------
def test_shape_mismatch_names_the_file_the_tensor_and_both_shapes(copy):
    weights = load_file(copy / "model.safetensors")
    name = "decoder.layers.0.weight"
    expected = tuple(weights[name].shape)
    weights[name] = torch.zeros(expected[0] + 1, *expected[1:])
    save_file(weights, copy / "model.safetensors")
    with pytest.raises(CheckpointMismatchError) as info:
        LRM.from_pretrained(copy)
    message = str(info.value)
    assert str(copy / "model.safetensors") in message
    assert f"{name}: expected {expected} (model config), found {(expected[0] + 1, *expected[1:])} (file)" in message


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_from_pretrained_refuses_non_finite_weights(copy, value):
    weights = load_file(copy / "model.safetensors")
    name = sorted(weights)[3]
    weights[name][..., 0] = value
    save_file(weights, copy / "model.safetensors")
    with pytest.raises(CheckpointMismatchError) as info:
        LRM.from_pretrained(copy)
    message = str(info.value)
    assert str(copy / "model.safetensors") in message and "non-finite" in message and name in message


def test_released_weights_with_nan_or_wrong_shape_name_the_file_and_released_tensor(tmp_path, tiny_model):
    official = {k: v.clone() for k, v in to_official_state_dict(tiny_model.state_dict()).items()}
    ours = "transformer.blocks.0.mlp.fc1.weight"
    released = ours_to_official(ours)
    official[released][0, 0] = float("nan")
    file = tmp_path / "official.safetensors"
    save_file(official, str(file))
    cfg_file = tmp_path / "kwargs.json"
    cfg_file.write_text(json.dumps({"model": tiny_model.config.to_dict()}))
    with pytest.raises(CheckpointMismatchError) as info:
        load_model(official=file, official_config=cfg_file)
    assert str(file) in str(info.value) and released in str(info.value) and "non-finite" in str(info.value)
    meta = LRM(tiny_model.config)
    with pytest.raises(CheckpointMismatchError, match="non-finite"):
        meta.load_official_state_dict(official, source=file)
    official[released] = torch.zeros(3, 3)
    save_file(official, str(file))
    with pytest.raises(CheckpointMismatchError) as info:
        load_model(official=file, official_config=cfg_file)
    assert str(file) in str(info.value) and f"{released} (ours: {ours}): expected" in str(info.value)


# --- released kwargs ---------------------------------------------------------------------------------------
def test_unknown_official_kwargs_are_reported_by_name():
    kwargs = {"transformer_dimm": 1024, "triplane_dim": 80, "encoder_model_name": "facebook/dinov2-base"}
    with pytest.raises(ConfigError, match=r"unknown released model kwargs: \['transformer_dimm'\]"):
        LRMConfig.from_official_kwargs(kwargs)
    assert "encoder_model_name" in OFFICIAL_IGNORED_KEYS  # documented allow-list: accepted
    LRMConfig.from_official_kwargs({"encoder_model_name": "facebook/dinov2-base"})


def test_official_config_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "kwargs.json"
    bad.write_text("{'model': 1}")
    with pytest.raises(ConfigError, match=rf"{bad}: not valid JSON at line 1 column 2"):
        load_official_config(bad)
    bad.write_text(json.dumps({"model": {"transformer_dimm": 3}}))
    with pytest.raises(ConfigError, match=rf"{bad}: unknown released model kwargs: \['transformer_dimm'\]"):
        load_official_config(bad)
    bad.write_text(json.dumps({"model": {"transformer_heads": 0}}))
    with pytest.raises(ConfigError, match=rf"{bad}: invalid LRMConfig: transformer_heads=0"):
        load_official_config(bad)
