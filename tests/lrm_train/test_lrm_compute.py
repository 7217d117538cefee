"""LRM training at scale: ComputeSettings (device, bf16 autocast, gradient checkpointing), the typed
LRMTrainRequest, and DINOv2 as the encoder's starting point."""

import json

import pytest
import torch
from transformers import Dinov2Config, Dinov2Model

from vfusion3d_core.cameras import orbit_cameras
from vfusion3d_core.compute import ComputeSettings
from vfusion3d_core.lrm import LRM, get_preset
from vfusion3d_core.lrm.train import LRMTrainConfig, LRMTrainer, StageConfig
from vfusion3d_core.lrm.train.__main__ import build_parser, request_from_args
from vfusion3d_core.lrm.train.request import LRMTrainRequest, run_train_request
from vfusion3d_core.metrics.novel_views import HeldoutObject, predict_novel_views
from vfusion3d_core.pretrained import MissingPretrainedError

CPU32 = ComputeSettings("cpu", "fp32")


@pytest.fixture(scope="module")
def shards(make_shards) -> list[str]:
    return make_shards(4)


def micro_config(**kw) -> LRMTrainConfig:
    base = dict(model_preset="tiny", steps=1, batch_size=2, views_per_sample=2, warmup_steps=1,
                stages=[StageConfig(0, 32)], lpips_weight=0.0, mse_weight=1.0, camera_noise_std=0.0,
                checkpoint_every=1000, log_every=1, shuffle_buffer=2)
    return LRMTrainConfig(**{**base, **kw})


def tiny_dino_folder(tmp_path, seed: int = 7) -> str:
    """A Dinov2Model.save_pretrained folder shaped like the tiny preset's encoder (width 32)."""
    torch.manual_seed(seed)
    cfg = Dinov2Config(**get_preset("tiny").dino_config)
    model = Dinov2Model(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))  # distinct from any default initialisation
    model.save_pretrained(tmp_path / "dino")
    return str(tmp_path / "dino")


# --- gradient checkpointing ---------------------------------------------------------------------

def encode_loss(model: LRM) -> torch.Tensor:
    gen = torch.Generator().manual_seed(3)
    image = torch.rand(2, 3, 64, 64, generator=gen)
    camera = orbit_cameras(2, elevation_deg=10.0, radius=1.0).source_vectors()
    planes = model.encode(image, camera)
    return (planes * torch.linspace(-1, 1, planes.numel()).reshape(planes.shape)).sum()


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    torch.manual_seed(0)
    model = LRM(get_preset("tiny")).train()
    encode_loss(model).backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    calls = []
    hook = model.transformer.blocks[0].register_forward_pre_hook(lambda *_: calls.append(1))
    model.set_gradient_checkpointing(True)
    encode_loss(model).backward()
    hook.remove()
    assert len(calls) == 2  # the block ran again in the backward pass: it was recomputed, not stored
    ckpt = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert set(ckpt) == set(plain) and any(n.startswith("transformer.blocks") for n in ckpt)
    for name, grad in plain.items():
        torch.testing.assert_close(ckpt[name], grad, atol=1e-6, rtol=1e-5, msg=name)


def test_trainer_step_with_checkpointing_matches_without(shards, tmp_path) -> None:
    cfg = micro_config()
    a = LRMTrainer(cfg, shards[:1], tmp_path / "a", compute=CPU32)
    b = LRMTrainer(cfg, shards[:1], tmp_path / "b", compute=ComputeSettings("cpu", "fp32", True))
    assert not a.model.transformer.gradient_checkpointing and b.model.transformer.gradient_checkpointing
    ra, rb = a.train(), b.train()
    assert ra.losses == pytest.approx(rb.losses, rel=1e-5)
    for (name, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-4, msg=name)


# --- precision ----------------------------------------------------------------------------------

@pytest.mark.parametrize("precision,expected", [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_trainer_autocasts_as_compute_says(shards, tmp_path, precision, expected) -> None:
    trainer = LRMTrainer(micro_config(), shards[:1], tmp_path, compute=ComputeSettings("cpu", precision))
    assert trainer.device == torch.device("cpu") and trainer.autocast == (expected == torch.bfloat16)
    seen = []
    hook = trainer.model.transformer.blocks[0].mlp["fc1"].register_forward_hook(
        lambda _m, _i, out: seen.append(out.dtype))
    result = trainer.train()
    hook.remove()
    assert seen and set(seen) == {expected} and result.step == 1 and all(map(torch.isfinite, map(torch.tensor,
                                                                                              result.losses)))


def test_recipe_bf16_false_forces_fp32(shards, tmp_path) -> None:
    trainer = LRMTrainer(micro_config(bf16=False), shards[:1], tmp_path, compute=ComputeSettings("cpu", "bf16"))
    assert not trainer.autocast


def test_novel_views_follow_compute_precision_on_the_model_device() -> None:
    torch.manual_seed(0)
    model = LRM(get_preset("tiny")).eval()
    cams = orbit_cameras(4, elevation_deg=15.0, radius=1.5)
    views = torch.rand(4, 4, 32, 32, generator=torch.Generator().manual_seed(1))
    obj = HeldoutObject("u", "a cube", views, cams.c2w, cams.intrinsics, torch.tensor([1, 2, 3]))
    seen = []
    hook = model.transformer.blocks[0].mlp["fc1"].register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    fp32 = predict_novel_views(model, obj, 16, ComputeSettings("cpu", "fp32"))
    bf16 = predict_novel_views(model, obj, 16, ComputeSettings("cpu", "bf16"))
    hook.remove()
    assert seen == [torch.float32, torch.bfloat16]
    assert fp32.shape == bf16.shape == (3, 3, 16, 16) and bf16.dtype == torch.float32
    assert (bf16 - fp32).abs().max() < 0.05  # same model, bf16 rounding only


# --- typed request ---------------------------------------------------------------------------------

def test_request_round_trips_through_json(tmp_path) -> None:
    request = LRMTrainRequest(recipe=micro_config(steps=3), shards=["a.tar", "s3://b/c.tar"], work_dir=str(tmp_path),
                              dino_pretrained_path="/models/dino", compute=ComputeSettings("cpu", "bf16", True),
                              torch_threads=2)
    back = LRMTrainRequest.from_dict(json.loads(json.dumps(request.to_dict())))
    assert back == request and isinstance(back.recipe, LRMTrainConfig) and isinstance(back.compute, ComputeSettings)
    assert back.recipe.stages == [StageConfig(0, 32)] and back.compute.gradient_checkpointing
    with pytest.raises(ValueError, match="unknown fields"):
        LRMTrainRequest.from_dict({**request.to_dict(), "extra": 1})
    with pytest.raises(ValueError, match="not both"):
        request.replace(init=str(tmp_path))


def test_cli_builds_the_request(tmp_path) -> None:
    args = build_parser().parse_args(["--shards", "x.tar", "--out", str(tmp_path), "--preset", "small",
                                      "--dino-pretrained", "/m/dino", "--precision", "bf16", "--device", "cpu",
                                      "--gradient-checkpointing", "--set", "steps=7"])
    request = request_from_args(args)
    assert request.dino_pretrained_path == "/m/dino" and request.recipe.steps == 7
    assert request.recipe.model_preset == "small" and not request.from_scratch
    assert request.compute == ComputeSettings("cpu", "bf16", True)


# --- DINOv2 starting point ------------------------------------------------------------------------

def test_encoder_starts_from_a_dinov2_folder(shards, tmp_path) -> None:
    folder = tiny_dino_folder(tmp_path)
    stock = Dinov2Model.from_pretrained(folder).state_dict()
    trainer = LRMTrainer(micro_config(), shards[:1], tmp_path / "run", compute=CPU32, dino_pretrained_path=folder)
    ours = trainer.model.encoder.dino.state_dict()
    assert set(ours) == set(stock)
    for name, value in stock.items():
        assert torch.equal(ours[name], value), name
    assert all(p.requires_grad for p in trainer.model.encoder.parameters())  # not frozen
    torch.manual_seed(0)
    random_start = LRM(get_preset("tiny"))
    cls_token = random_start.encoder.dino.state_dict()["embeddings.cls_token"]
    assert not torch.equal(cls_token, stock["embeddings.cls_token"])


def test_training_request_with_dino_folder_trains(shards, tmp_path) -> None:
    folder = tiny_dino_folder(tmp_path)
    request = LRMTrainRequest(recipe=micro_config(), shards=shards[:1], work_dir=str(tmp_path / "w"),
                              dino_pretrained_path=folder, compute=CPU32)
    outcome = run_train_request(request)
    assert outcome.result.step == 1 and (outcome.final / "model.safetensors").is_file()
    saved = LRM.from_pretrained(outcome.final)
    assert saved.config.dino_pretrained_path is None  # the weights live in the checkpoint


@pytest.mark.parametrize("preset", ["small", "paper"])
def test_large_presets_refuse_a_random_encoder(tmp_path, preset) -> None:
    recipe = LRMTrainConfig.preset(preset, lpips_random_backbone=True)  # LPIPS weights: the next test
    request = LRMTrainRequest(recipe=recipe, shards=["x.tar"], work_dir=str(tmp_path))
    with pytest.raises(MissingPretrainedError, match="dino_pretrained_path"):
        run_train_request(request)  # refused before any model is built or shard opened
    request.replace(from_scratch=True).check_starting_point()
    request.replace(init=str(tmp_path)).check_starting_point()
    with pytest.raises(MissingPretrainedError, match="not a directory"):
        request.replace(dino_pretrained_path=str(tmp_path / "missing")).check_starting_point()


def test_missing_lpips_weights_are_named_with_the_missing_encoder(tmp_path, monkeypatch) -> None:
    """Both problems of a `small` run in one refusal, before any work; with the weights present it starts."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    request = LRMTrainRequest(recipe=LRMTrainConfig.preset("small"), shards=["x.tar"], work_dir=str(tmp_path))
    with pytest.raises(MissingPretrainedError) as info:
        request.check_starting_point()
    assert "dino_pretrained_path is not set" in str(info.value) and "alexnet-owt-7be5be79.pth" in str(info.value)
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / "alexnet-owt-7be5be79.pth").write_bytes(b"weights")  # what is checked is presence
    request.replace(from_scratch=True).check_starting_point()


def test_tiny_preset_needs_no_dino_folder(tmp_path) -> None:
    LRMTrainRequest(recipe=micro_config(), shards=["x.tar"], work_dir=str(tmp_path)).check_starting_point()
