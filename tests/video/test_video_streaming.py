"""Video training streams renders_3d shards (bounded reads, workers, exact resume) and honours ComputeSettings."""

import torch
from torch.utils.data import IterableDataset
from video_micro import micro_config, micro_model, random_orbits, text_encoder, write_orbit_shards

from vfusion3d_core.compute import ComputeSettings
from vfusion3d_core.lrm.train.data import StreamPosition
from vfusion3d_core.video import OrbitVideoModel, VideoTrainer, sample_orbits
from vfusion3d_core.video.data import OrbitShards
from vfusion3d_core.video.metrics import orbit_closeness


class Counting:
    """An orbit source that counts every orbit its streams and ``first`` hand out."""

    def __init__(self, inner) -> None:
        self.inner, self.num_frames, self.resolution = inner, inner.num_frames, inner.resolution
        self.read = 0

    def stream(self, seed: int, position: StreamPosition) -> IterableDataset:
        outer, inner = self, self.inner.stream(seed, position)

        class _Stream(IterableDataset):
            def __iter__(self):
                for item in inner:
                    outer.read += 1
                    yield item

        return _Stream()

    def first(self, count: int):
        frames, captions = self.inner.first(count)
        self.read += len(captions)
        return frames, captions

    def count(self) -> int:
        return self.inner.count()


def test_stream_order_is_seeded_and_skips_consumed_batches(tmp_path) -> None:
    source = OrbitShards(write_orbit_shards(tmp_path, n=6), 4, 16, shuffle_buffer=3)
    full = [item["key"] for _, item in zip(range(18), source.stream(5, StreamPosition(0, 2)), strict=False)]
    assert sorted(full[:6]) == sorted(full[6:12]) == [f"obj{i:03d}" for i in range(6)]  # epochs cover all
    assert full[:6] != full[6:12]  # reshuffled per epoch
    resumed = [item["key"] for _, item in zip(range(8), source.stream(5, StreamPosition(5, 2)), strict=False)]
    assert resumed == full[10:18]
    other_seed = [item["key"] for _, item in zip(range(6), source.stream(6, StreamPosition(0, 2)), strict=False)]
    assert other_seed != full[:6]
    frames, captions = source.first(2)
    assert frames.shape == (2, 4, 16, 16, 3) and frames.dtype == torch.uint8
    assert captions == ["a small object number 0", "a small object number 1"] and source.count() == 6


def test_training_reads_a_bounded_number_of_orbits_and_fits_scale_on_few_batches(tmp_path) -> None:
    shards = write_orbit_shards(tmp_path, n=10, per_shard=3)
    source = Counting(OrbitShards(shards, 4, 16, shuffle_buffer=4))
    cfg = dict(vae_steps=2, image_steps=1, video_steps=1, vae_batch=2, image_batch=2, video_batch=2, scale_batches=2)
    trainer = VideoTrainer(micro_model(**cfg), source)
    trainer.train()
    # per stage: steps x batch; scale fit: scale_batches x vae_batch orbits; never the whole set
    expected = 2 * 2 + 1 * 2 + 1 * 2 + 2 * 2
    assert trainer.orbits_read == expected - 2 * 2  # the scale fit is not a training read
    assert source.read <= expected + 3 * 4  # + what the stream buffers/prefetches ahead of the last batch
    assert trainer.model.vae.config.scaling_factor != 1.0  # fitted (from-scratch VAE)
    metric_source = Counting(OrbitShards(shards, 4, 16))
    closeness = orbit_closeness(trainer.model, metric_source, count=3)
    assert metric_source.read == 3 and closeness["objects"] == 3.0


def test_resume_from_shards_with_workers_continues_exactly(tmp_path) -> None:
    source = OrbitShards(write_orbit_shards(tmp_path / "data", n=6), 4, 16, shuffle_buffer=3)
    overrides = dict(ema_decay=0.5, checkpoint_every=100, data_workers=2)
    straight = micro_model(**overrides)
    VideoTrainer(straight, source).train()
    first = VideoTrainer(micro_model(**overrides), source, tmp_path / "ckpt")
    first.train(until=5)  # mid "video" stage (2 vae + 2 image + 2 video)
    resumed_model = micro_model(seed=99, **overrides)
    second = VideoTrainer(resumed_model, source, tmp_path / "ckpt")
    assert second.resume() and second.step == 5
    second.train()
    sa, sb = straight.state_dict(), resumed_model.state_dict()
    assert [k for k in sa if not torch.equal(sa[k], sb[k])] == []


def _unet_output_dtypes(model: OrbitVideoModel) -> list[torch.dtype]:
    seen: list[torch.dtype] = []
    for unet in (model.image_unet, model.video_unet):
        unet.register_forward_hook(lambda _m, _i, out: seen.append(out.sample.dtype))
    return seen


def test_bf16_precision_runs_forward_passes_under_autocast_on_cpu() -> None:
    bf16 = ComputeSettings(device="cpu", precision="bf16")
    assert bf16.dtype == torch.bfloat16 and bf16.describe()["resolved_precision"] == "bf16"
    model = micro_model(vae_steps=1, image_steps=1, video_steps=1)
    seen = _unet_output_dtypes(model)
    trainer = VideoTrainer(model, random_orbits(), compute=bf16)
    trainer.train()
    assert seen == [torch.bfloat16, torch.bfloat16]  # one image step, one video step, both autocast
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32
    assert all(torch.isfinite(torch.tensor(h)).all() for h in trainer.history.values() if h)
    seen.clear()
    videos = sample_orbits(model, ["a red cube"], [1], compute=bf16)
    assert videos.shape == (1, 4, 16, 16, 3) and set(seen) == {torch.bfloat16}
    seen.clear()
    sample_orbits(model, ["a red cube"], [1], compute=ComputeSettings(device="cpu", precision="fp32"))
    assert set(seen) == {torch.float32}


def test_gradient_checkpointing_switches_on_the_unets_and_keeps_the_maths() -> None:
    cfg = dict(vae_steps=0, image_steps=1, video_steps=1)
    plain, ckpt = micro_model(**cfg), micro_model(**cfg)
    data = random_orbits()
    VideoTrainer(plain, data, compute=ComputeSettings("cpu", "fp32", gradient_checkpointing=False)).train()
    trainer = VideoTrainer(ckpt, data, compute=ComputeSettings("cpu", "fp32", gradient_checkpointing=True))
    assert ckpt.image_unet.is_gradient_checkpointing and ckpt.video_unet.is_gradient_checkpointing
    assert not plain.image_unet.is_gradient_checkpointing
    trainer.train()
    sa, sb = plain.state_dict(), ckpt.state_dict()
    assert max(float((sa[k] - sb[k]).abs().max()) for k in sa if sa[k].is_floating_point()) < 1e-5


def test_tiny_labels_every_network_random_and_uses_its_vae_factor() -> None:
    cfg = micro_config()
    assert cfg.random_components() == ["vae", "image_unet", "video_unet"]
    model = OrbitVideoModel.build(cfg, text_encoder())
    assert model.latent_size == 8 and model.random_components() == cfg.random_components()
