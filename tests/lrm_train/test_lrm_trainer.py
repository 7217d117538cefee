import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vfusion3d_core.lrm import LRM
from vfusion3d_core.lrm.train import LRMTrainConfig, LRMTrainer, NonFiniteLossError, StageConfig
from vfusion3d_core.lrm.train.checkpoint import CheckpointError, list_checkpoints
from vfusion3d_core.lrm.train.losses import LPIPSUnavailable, build_lpips

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def shards(make_shards) -> list[str]:
    return make_shards(4)


def micro_config(**kw) -> LRMTrainConfig:
    base = dict(model_preset="tiny", steps=6, batch_size=2, views_per_sample=2, warmup_steps=2,
                stages=[StageConfig(0, 32), StageConfig(4, 48, 32)], lpips_random_backbone=True, mse_weight=1.0,
                camera_noise_std=0.01, checkpoint_every=2, log_every=2, shuffle_buffer=2)
    return LRMTrainConfig(**{**base, **kw})


def test_loss_goes_down(shards, tmp_path) -> None:
    cfg = micro_config(steps=40, warmup_steps=5, lr=2e-3, stages=[StageConfig(0, 32)], checkpoint_every=1000,
                       lpips_weight=0.2, camera_noise_std=0.0)
    result = LRMTrainer(cfg, shards[:1], tmp_path).train()
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
    assert result.step == 40 and last < 0.8 * first, (first, last)


def test_resume_continues_exactly(shards, tmp_path) -> None:
    cfg = micro_config()
    straight = LRMTrainer(cfg, shards, tmp_path / "straight")
    straight.train()
    LRMTrainer(cfg, shards, tmp_path / "interrupted").train(until_step=2)  # "killed" after step 2's checkpoint
    resumed = LRMTrainer(cfg, shards, tmp_path / "interrupted")
    assert resumed.step == 2 and resumed.batches == 2
    resumed.train()
    assert resumed.step == straight.step == 6
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items(),
                                 strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=name)
    ckpts = list_checkpoints(tmp_path / "interrupted")
    assert [p.name for p in ckpts] == ["step-00000004", "step-00000006"]  # keep_checkpoints=2
    reloaded = LRM.from_pretrained(ckpts[-1]).state_dict()
    for name, tensor in resumed.model.state_dict().items():
        torch.testing.assert_close(reloaded[name], tensor, msg=name)


def test_resume_with_two_workers_at_an_odd_batch_continues_exactly(shards, tmp_path) -> None:
    """A fresh DataLoader starts at worker 0; resumed after an odd number of batches, the stream must continue
    with worker 1's batch, as the uninterrupted run does (in_stream_order)."""
    cfg = micro_config(steps=4, num_workers=2, checkpoint_every=1, stages=[StageConfig(0, 32)])
    straight = LRMTrainer(cfg, shards, tmp_path / "straight")
    straight.train()
    LRMTrainer(cfg, shards, tmp_path / "interrupted").train(until_step=3)
    resumed = LRMTrainer(cfg, shards, tmp_path / "interrupted")
    assert resumed.batches == 3
    resumed.train()
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items(),
                                 strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=name)


def test_grad_accumulation_and_patch_stage_run(shards, tmp_path) -> None:
    cfg = micro_config(steps=3, grad_accum=2, stages=[StageConfig(0, 48, 32)], checkpoint_every=100)
    trainer = LRMTrainer(cfg, shards, tmp_path)
    result = trainer.train()
    assert trainer.batches == 6 and len(result.losses) == 3
    assert result.last_metrics["render_size"] == 48


def test_non_finite_loss_stops_without_a_poisoned_checkpoint(shards, tmp_path) -> None:
    trainer = LRMTrainer(micro_config(checkpoint_every=1), shards, tmp_path)
    trainer.train(until_step=1)
    with torch.no_grad():
        next(trainer.model.decoder.parameters()).fill_(float("nan"))
    with pytest.raises(NonFiniteLossError):
        trainer.train()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000001"]
    # a checkpoint whose weights were corrupted with NaN is refused on resume
    ckpt = list_checkpoints(tmp_path)[0]
    from safetensors.torch import load_file, save_file

    weights = load_file(ckpt / "model.safetensors")
    first = next(iter(weights))
    weights[first] = torch.full_like(weights[first], float("inf"))
    save_file(weights, ckpt / "model.safetensors")
    with pytest.raises(CheckpointError, match="non-finite"):
        LRMTrainer(micro_config(), shards, tmp_path)


def test_lpips_too_small_renders_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 32"):
        micro_config(stages=[StageConfig(0, 32, 16)])


def test_lpips_without_local_weights_is_a_clear_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(LPIPSUnavailable, match="lpips_random_backbone"):
        build_lpips("alex", random_backbone=False)


@pytest.mark.slow
def test_ddp_two_processes_gloo(shards, tmp_path) -> None:
    """torchrun with 2 CPU processes (gloo): ranks stay in sync and rank 0 writes the checkpoint."""
    overrides = ["steps=2", "batch_size=1", "views_per_sample=2", "warmup_steps=1", 'stages=[{"start_step":0,'
                 '"render_size":32}]', "checkpoint_every=2", "log_every=1", "shuffle_buffer=1"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "vfusion3d_core.lrm.train", "--shards", *shards, "--out", str(tmp_path / "ddp"), "--preset",
           "tiny", "--set", *overrides]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["step"] == 2
    ckpt = list_checkpoints(tmp_path / "ddp")[-1]
    state = torch.load(ckpt / "training_state.pt", weights_only=True)
    assert state["world_size"] == 2 and state["step"] == 2 and state["batches"] == 2
    # the final model differs from the initial one (gradients were applied) and loads cleanly
    torch.manual_seed(0)
    final = LRM.from_pretrained(tmp_path / "ddp" / "final")
    init = LRM(final.config)
    assert any(not torch.equal(a, b) for a, b in zip(final.state_dict().values(), init.state_dict().values(),
                                                     strict=True))


def _shard_with_a_bad_sample(good_shard: str, path: Path) -> str:
    """good_shard's two samples renamed c0 / c1 with a copy of the first between them whose view 001 is not an
    image: the bad sample is never the last of its shard."""
    import io
    import tarfile

    with tarfile.open(good_shard) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers() if m.isfile()]
    keys = sorted({name.split(".", 1)[0] for name, _ in members})
    renamed = {keys[0]: "c0", keys[1]: "c1"}
    out = []
    for key in keys:
        for name, data in members:
            if name.split(".", 1)[0] == key:
                out.append((renamed[key] + "." + name.split(".", 1)[1], data))
        if key == keys[0]:
            out += [("bad." + name.split(".", 1)[1], b"garbage" if name.endswith(".001.png") else data)
                    for name, data in members if name.split(".", 1)[0] == key]
    with tarfile.open(path, "w") as tar:
        for name, data in out:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return str(path)


def test_training_counts_the_bad_samples_its_stream_skipped(make_shards, tmp_path) -> None:
    """One bad sample among 11: skipped once per epoch read, totalled through the DataLoader batches into the
    result and the logged metrics, and carried across a resume."""
    shards = make_shards(8) + [_shard_with_a_bad_sample(make_shards(8)[0], tmp_path / "bad.tar")]
    cfg = micro_config(steps=6, batch_size=5, checkpoint_every=2, log_every=1, shuffle_buffer=1, max_bad_fraction=0.2,
                       stages=[StageConfig(0, 32)])
    logged = []
    first = LRMTrainer(cfg, shards, tmp_path / "run", log_fn=lambda m, step: logged.append(m)).train(until_step=2)
    assert first.skipped == {"skipped_samples": 1, "skipped_shards": 0}  # 10 good samples: exactly epoch 1
    assert logged[-1]["skipped_samples"] == 1.0
    resumed = LRMTrainer(cfg, shards, tmp_path / "run")
    assert resumed.step == 2 and resumed.skipped["skipped_samples"] == 1
    assert resumed.train().skipped == {"skipped_samples": 3, "skipped_shards": 0}  # epochs 2 and 3 met it again
