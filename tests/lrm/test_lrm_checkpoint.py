"""save_pretrained / from_pretrained round trip and mismatch errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from vfusion3d_core.lrm import LRM, CheckpointMismatchError, LRMConfig, get_preset
from vfusion3d_core.lrm.checkpoint import read_weight_file


def test_round_trip_reproduces_outputs(tmp_path, tiny_model, tiny_inputs, turntable_vectors):
    tiny_model.save_pretrained(tmp_path / "ckpt")
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["triplane_dim"] == 8
    loaded = LRM.from_pretrained(tmp_path / "ckpt")
    assert loaded.config.to_dict() == tiny_model.config.to_dict()
    for (k, a), (k2, b) in zip(tiny_model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b), k
    cams = turntable_vectors(2, 1)
    with torch.no_grad():
        ref = tiny_model.render(tiny_model.encode(*tiny_inputs), cams, 8)
        out = loaded.render(loaded.encode(*tiny_inputs), cams, 8)
    assert torch.equal(ref["rgb"], out["rgb"]) and torch.equal(ref["depth"], out["depth"])


def test_mismatched_config_is_reported(tmp_path, tiny_model):
    tiny_model.save_pretrained(tmp_path / "ckpt")
    cfg = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    cfg["triplane_dim"] = 12
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointMismatchError, match="shape mismatches"):
        LRM.from_pretrained(tmp_path / "ckpt")


def test_not_a_checkpoint_dir(tmp_path):
    with pytest.raises(CheckpointMismatchError, match="not an LRM checkpoint"):
        LRM.from_pretrained(tmp_path)


def test_weights_file_readers(tmp_path, tiny_model):
    tiny_model.save_pretrained(tmp_path / "ckpt")
    st = load_file(str(tmp_path / "ckpt" / "model.safetensors"))
    torch.save({"state_dict": st}, tmp_path / "w.pt")
    assert set(read_weight_file(tmp_path / "w.pt")) == set(st)
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pt")  # a pickled module is refused (weights_only)
    with pytest.raises(CheckpointMismatchError):
        read_weight_file(tmp_path / "module.pt")


def test_config_dict_round_trip_and_unknown_keys():
    cfg = get_preset("small")
    assert LRMConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown"):
        LRMConfig.from_dict(dict(cfg.to_dict(), bogus=1))
    with pytest.raises(ValueError, match="preset"):
        get_preset("huge")
