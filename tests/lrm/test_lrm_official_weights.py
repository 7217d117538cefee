"""Released-checkpoint compatibility: every TSV key maps onto the `paper` preset (meta device)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch

from vfusion3d_core.lrm import LRM, CheckpointMismatchError, LRMConfig, get_preset
from vfusion3d_core.lrm.convert import convert_official_state_dict, official_to_ours

# The released checkpoint's tensor names and shapes (no weights), kept in the repo so this test always runs.
REFERENCE_TSV = Path(__file__).resolve().parents[1] / "data" / "vfusion3d_released_state_dict_keys.tsv"
RELEASED_KWARGS = {
    "camera_embed_dim": 1024, "rendering_samples_per_ray": 128, "transformer_dim": 1024,
    "transformer_layers": 16, "transformer_heads": 16, "triplane_low_res": 32, "triplane_high_res": 64,
    "triplane_dim": 80, "encoder_feat_dim": 768, "encoder_freeze": False,
    "encoder_model_name": "facebook/dinov2-base",
}


def released_shapes() -> dict[str, tuple[int, ...]]:
    shapes = {}
    for line in REFERENCE_TSV.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, shape = line.split("\t")
        shapes[name] = tuple(ast.literal_eval(shape))
    return shapes


@pytest.fixture(scope="module")
def meta_paper() -> LRM:
    with torch.device("meta"):
        return LRM(get_preset("paper"))


def test_every_released_key_maps_with_its_shape(meta_paper):
    shapes = released_shapes()
    assert len(shapes) == 592
    ours = {k: tuple(v.shape) for k, v in meta_paper.state_dict().items()}
    mapped = {}
    for name, shape in shapes.items():
        target = official_to_ours(name)
        assert target is not None, f"no mapping for {name}"
        assert target in ours, f"{name} -> {target} is not a model parameter"
        assert ours[target] == shape, f"{name}: released {shape} vs ours {ours[target]}"
        mapped[target] = name
    assert set(mapped) == set(ours), sorted(set(ours) - set(mapped))[:5]
    assert sum(torch.Size(s).numel() for s in shapes.values()) == 452135700


def test_load_official_state_dict_on_meta(meta_paper):
    shapes = released_shapes()
    state = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    meta_paper.load_official_state_dict(state)  # validates names and shapes, then loads


def test_mismatches_fail_loudly(meta_paper):
    shapes = released_shapes()
    state = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    missing = dict(state)
    missing.pop("transformer.layers.3.mlp.0.weight")
    with pytest.raises(CheckpointMismatchError, match="missing"):
        meta_paper.load_official_state_dict(missing)
    extra = dict(state, **{"transformer.layers.16.mlp.0.weight": torch.empty(4096, 1024, device="meta")})
    with pytest.raises(CheckpointMismatchError, match="unexpected"):
        meta_paper.load_official_state_dict(extra)
    unknown = dict(state, **{"synthesizer.something": torch.empty(1, device="meta")})
    with pytest.raises(CheckpointMismatchError, match="no mapping"):
        meta_paper.load_official_state_dict(unknown)
    wrong = dict(state, **{"transformer.deconv.weight": torch.empty(1024, 40, 2, 2, device="meta")})
    with pytest.raises(CheckpointMismatchError, match="shape"):
        meta_paper.load_official_state_dict(wrong)


def test_official_values_land_in_the_right_modules(tiny_model, tiny_inputs):
    """Rename a tiny model's weights to released names and load them back into a fresh model."""
    shapes = released_shapes()
    cfg = tiny_model.config
    keep = []
    for name in shapes:
        m = re.match(r"^(encoder\.model\.encoder\.layer|transformer\.layers)\.(\d+)\.", name)
        is_dino = m is not None and m.group(1).startswith("encoder")
        limit = cfg.dino_config["num_hidden_layers"] if is_dino else cfg.transformer_layers
        if m is None or int(m.group(2)) < limit:
            keep.append(name)
    ours = tiny_model.state_dict()
    official = {name: ours[official_to_ours(name)].clone() for name in keep}
    assert set(convert_official_state_dict(official)) == set(ours)
    torch.manual_seed(123)
    fresh = LRM(cfg).eval()
    fresh.load_official_state_dict({"model": official})  # wrapped checkpoints are accepted too
    with torch.no_grad():
        torch.testing.assert_close(fresh.encode(*tiny_inputs), tiny_model.encode(*tiny_inputs), atol=0, rtol=0)


def test_from_official_kwargs_reproduces_paper_preset():
    dino = dict(get_preset("paper").dino_config, transformers_version="4.42.0", architectures=["Dinov2Model"],
                _name_or_path="facebook/dinov2-base", model_type="dinov2")
    cfg = LRMConfig.from_official_kwargs(RELEASED_KWARGS, dino)
    paper = get_preset("paper")
    for field in ("camera_embed_dim", "rendering_samples_per_ray", "transformer_dim", "transformer_layers",
                  "transformer_heads", "triplane_low_res", "triplane_high_res", "triplane_dim",
                  "encoder_feat_dim", "source_size"):
        assert getattr(cfg, field) == getattr(paper, field), field
    assert "transformers_version" not in cfg.dino_config
    with pytest.raises(ValueError, match="encoder_feat_dim"):
        LRMConfig.from_official_kwargs(dict(RELEASED_KWARGS, encoder_feat_dim=1024), dino)


def test_inverse_mapping_round_trips_every_released_key():
    from vfusion3d_core.lrm.convert import ours_to_official

    for name in released_shapes():
        assert ours_to_official(official_to_ours(name)) == name
