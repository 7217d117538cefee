"""Video model: temporal-only fine-tuning, CFG / seed determinism, save/load round trip, exact resume."""

import json

import pytest
import torch
from diffusers import AutoencoderKLTemporalDecoder
from pretrained_folders import svd_folder
from video_micro import micro_config, micro_model, random_orbits, text_encoder

from vfusion3d_core.video import OrbitVideoModel, SampleSettings, VideoTrainer, is_temporal, sample_orbits
from vfusion3d_core.video.card import model_card
from vfusion3d_core.video.model import text_encoder_reference


def test_temporal_rule_matches_design() -> None:
    for name in ("down_blocks.0.attentions.0.temporal_transformer_blocks.0.attn1.to_q.weight",
                 "down_blocks.0.resnets.0.temporal_res_block.conv1.weight",
                 "mid_block.attentions.0.time_mixer.mix_factor",
                 "down_blocks.0.attentions.0.time_pos_embed.linear_1.weight"):
        assert is_temporal(name), name
    for name in ("time_embedding.linear_1.weight", "add_embedding.linear_1.weight",
                 "down_blocks.0.resnets.0.spatial_res_block.time_emb_proj.weight", "conv_in.weight"):
        assert not is_temporal(name), name


def test_temporal_only_finetuning_leaves_every_spatial_parameter_unchanged(tmp_path) -> None:
    cfg = micro_config(svd_path=str(svd_folder(tmp_path)), vae_steps=5, image_steps=0,
                       video_steps=1, temporal_lr=1e-2, weight_decay=0.1, warmup_steps=0)
    assert cfg.train_temporal_only
    model = OrbitVideoModel.build(cfg, text_encoder())
    assert isinstance(model.vae, AutoencoderKLTemporalDecoder)
    before = {n: p.detach().clone() for n, p in model.video_unet.named_parameters()}
    others = {n: p.detach().clone() for n, p in model.named_parameters() if not n.startswith("video_unet.")}
    trainer = VideoTrainer(model, random_orbits())
    assert trainer.steps == {"vae": 0, "image": 0, "video": 1}  # pretrained VAE is never trained
    trainer.train()
    spatial = [n for n in before if not is_temporal(n)]
    temporal = [n for n in before if is_temporal(n)]
    assert spatial and temporal
    after = dict(model.video_unet.named_parameters())
    changed_spatial = [n for n in spatial if not torch.equal(before[n], after[n])]
    assert changed_spatial == []
    assert sum(not torch.equal(before[n], after[n]) for n in temporal) > 0.5 * len(temporal)
    assert all(torch.equal(p, others[n]) for n, p in model.named_parameters() if n in others)
    assert set(trainer.params) == {n for n in temporal}


def test_sampling_is_deterministic_per_seed_and_guidance_matters() -> None:
    model = micro_model().eval()
    prompts, seeds = ["a red cube", "a blue ball", "a green cone"], [3, 4, 5]
    a = sample_orbits(model, prompts, seeds)
    assert a.shape == (3, 4, 16, 16, 3) and a.dtype.name == "uint8"
    assert (a == sample_orbits(model, prompts, seeds)).all()
    assert not (a == sample_orbits(model, prompts, [3, 4, 6])).all()
    alone = sample_orbits(model, prompts[1:2], seeds[1:2], batch_size=1)  # batch composition does not matter
    assert int((alone[0].astype(int) - a[1].astype(int)).__abs__().max()) <= 2
    no_cfg = SampleSettings("euler", 3, image_guidance=1.0, video_guidance=(1.0, 1.0))
    assert not (sample_orbits(model, prompts, seeds, no_cfg) == a).all()
    dpm = sample_orbits(model, prompts, seeds, SampleSettings("dpmpp", 3))
    assert dpm.shape == a.shape and not (dpm == a).all()


def test_save_pretrained_round_trip_with_model_card(tmp_path) -> None:
    model = micro_model(seed=7).eval()
    card = model_card(model.config, {"renders_3d": "ab" * 32}, {"finetuned/text_to_video_mse": 0.1}, "test",
                      text_encoder_reference(model.text_encoder))
    model.save_pretrained(tmp_path / "m", card)
    index = json.loads((tmp_path / "m" / "model_index.json").read_text())
    assert index["video_unet"] == ["diffusers", "UNetSpatioTemporalConditionModel"]
    assert (tmp_path / "m" / "video_unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert "ab" * 32 in (tmp_path / "m" / "README.md").read_text()
    loaded = OrbitVideoModel.from_pretrained(tmp_path / "m", text_encoder()).eval()
    for name in ("vae", "image_unet", "video_unet"):
        sa, sb = getattr(model, name).state_dict(), getattr(loaded, name).state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert (sample_orbits(model, ["a cup"], [1]) == sample_orbits(loaded, ["a cup"], [1])).all()


def test_resume_continues_exactly(tmp_path) -> None:
    data = random_orbits()
    overrides = dict(ema_decay=0.5, checkpoint_every=100)
    straight = micro_model(**overrides)
    VideoTrainer(straight, data).train()
    first = VideoTrainer(micro_model(**overrides), data, tmp_path / "ckpt")
    first.train(until=3)  # stops mid "image" stage, checkpointing at the stop
    resumed_model = micro_model(seed=99, **overrides)  # different init: everything must come from the checkpoint
    second = VideoTrainer(resumed_model, data, tmp_path / "ckpt")
    assert second.resume() and second.step == 3
    second.train()
    sa, sb = straight.state_dict(), resumed_model.state_dict()
    mismatched = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert mismatched == []
    assert straight.vae.config.scaling_factor == resumed_model.vae.config.scaling_factor


def test_config_rejects_bad_scheduler() -> None:
    with pytest.raises(ValueError):
        micro_config(scheduler="ddim")
