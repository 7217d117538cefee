"""Fine-tuning from a video prior (VideoModelConfig.prior_path): the prior's networks are the starting point, only
the temporal layers of stage 2 train, the VAE is kept, and an architecture mismatch is refused by name."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "video"))

from video_micro import micro_config, micro_model, write_orbit_shards  # noqa: E402

from vfusion3d_core.compute import ComputeSettings  # noqa: E402
from vfusion3d_core.video.finetune import finetune_video_model, load_prior  # noqa: E402
from vfusion3d_core.video.model import OrbitVideoModel  # noqa: E402
from vfusion3d_core.video.requests import FinetuneRequest  # noqa: E402
from vfusion3d_core.video.temporal import is_temporal  # noqa: E402


def test_finetune_from_prior_trains_only_temporal_layers_and_first_frames(tmp_path) -> None:
    prior = micro_model(seed=3)
    prior.save_pretrained(tmp_path / "prior")
    before = {k: v.clone() for k, v in prior.state_dict().items()}
    cfg = micro_config(prior_path=str(tmp_path / "prior"), vae_steps=5, image_steps=2, video_steps=3,
                       temporal_lr=1e-3, image_lr=1e-3)
    assert cfg.random_components() == [] and cfg.train_temporal_only
    shards = write_orbit_shards(tmp_path / "orbits", n=4)
    result = finetune_video_model(FinetuneRequest(cfg, shards, str(tmp_path / "out"), eval_count=2,
                                                  compute=ComputeSettings("cpu", "fp32")))
    assert result.counts["steps_vae"] == 0  # the prior's VAE is kept whatever vae_steps says
    assert result.info["temporal_only"] and result.info["random_init"] == []
    after = OrbitVideoModel.from_pretrained(tmp_path / "out").state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    video_changed = {k for k in changed if k.startswith("video_unet.")}
    assert video_changed and all(is_temporal(k) for k in video_changed)  # spatial layers of stage 2 frozen
    assert any(k.startswith("image_unet.") for k in changed)  # stage 1 adapted
    assert not any(k.startswith("vae.") for k in changed)
    assert not any(k.startswith("text_encoder.") for k in changed)


def test_prior_with_another_architecture_is_refused_by_name(tmp_path) -> None:
    micro_model().save_pretrained(tmp_path / "prior")
    cfg = micro_config(prior_path=str(tmp_path / "prior"), video_unet_channels=(16, 16))
    with pytest.raises(ValueError, match="video_unet_channels"):
        load_prior(cfg)


def test_prior_excludes_pretrained_pipeline_folders(tmp_path) -> None:
    with pytest.raises(ValueError, match="prior_path"):
        micro_config(prior_path=str(tmp_path), svd_path=str(tmp_path))
