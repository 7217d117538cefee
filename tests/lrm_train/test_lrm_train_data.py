import math

import pytest
import torch

from vfusion3d_core import cameras as C
from vfusion3d_core.lrm.train.data import (
    MultiviewTrainingStream,
    StreamPosition,
    batches_for_worker,
    canonicalize_poses,
    prepare_targets,
)
from vfusion3d_core.lrm.train.optim import cosine_with_warmup, parameter_groups


@pytest.fixture(scope="module")
def shards(make_shards) -> list[str]:
    return make_shards(8)


def test_canonicalize_maps_source_to_canonical_and_keeps_relative_poses() -> None:
    cams = C.orbit_cameras(8, elevation_deg=30.0)
    c2w = canonicalize_poses(cams.c2w, 3)
    canonical = C.look_at(torch.tensor([[1.5, 0.0, 0.0]]))[0]
    torch.testing.assert_close(c2w[3], canonical, atol=1e-5, rtol=0)
    rel_before = torch.linalg.inv(cams.c2w[0]) @ cams.c2w[5]
    rel_after = torch.linalg.inv(c2w[0]) @ c2w[5]
    torch.testing.assert_close(rel_before, rel_after, atol=1e-5, rtol=0)
    # a rotation about the origin: every camera keeps its distance and still looks at the origin
    torch.testing.assert_close(c2w[:, :3, 3].norm(dim=-1), torch.full((8,), 1.5), atol=1e-5, rtol=0)
    uv, _ = C.project_points(torch.zeros(8, 1, 3), c2w, cams.intrinsics)
    torch.testing.assert_close(uv, torch.full((8, 1, 2), 0.5), atol=1e-5, rtol=0)


def test_stream_items_have_the_documented_shapes(shards) -> None:
    stream = MultiviewTrainingStream(shards, views_per_sample=3, source_size=24, seed=1)
    item = next(iter(stream))
    assert item["source_image"].shape == (3, 24, 24)
    assert 0 <= item["source_image"].min() <= item["source_image"].max() <= 1
    assert item["render_cameras"].shape == (3, 25) and item["target_rgba"].shape == (3, 4, 32, 32)
    expected_source = C.default_source_camera(radius=1.5)
    torch.testing.assert_close(item["source_camera"], expected_source, atol=1e-5, rtol=0)


def _keys(stream: MultiviewTrainingStream, n: int) -> list[str]:
    it = iter(stream)
    return [next(it)["key"] for _ in range(n)]


def test_stream_is_deterministic_and_resumes_at_its_position(shards) -> None:
    full = _keys(MultiviewTrainingStream(shards, 2, 16, seed=3, shuffle_buffer=4), 20)
    assert full == _keys(MultiviewTrainingStream(shards, 2, 16, seed=3, shuffle_buffer=4), 20)
    assert sorted(full[:8]) == sorted(full[8:16])  # each epoch is a permutation of all 8 objects
    assert full[:8] != full[8:16]  # ... reshuffled per epoch
    resumed = MultiviewTrainingStream(shards, 2, 16, seed=3, shuffle_buffer=4, position=StreamPosition(3, 2))
    a = next(iter(resumed))
    it = iter(MultiviewTrainingStream(shards, 2, 16, seed=3, shuffle_buffer=4))
    for _ in range(6):
        next(it)
    reference = next(it)
    assert a["key"] == reference["key"]
    torch.testing.assert_close(a["render_cameras"], reference["render_cameras"])
    torch.testing.assert_close(a["backgrounds"], reference["backgrounds"])


def test_ranks_split_the_data_disjointly(shards) -> None:
    r0 = _keys(MultiviewTrainingStream(shards, 2, 16, rank=0, world_size=2, shuffle_buffer=1), 4)
    r1 = _keys(MultiviewTrainingStream(shards, 2, 16, rank=1, world_size=2, shuffle_buffer=1), 4)
    assert not set(r0) & set(r1) and len(set(r0) | set(r1)) == 8
    # more slots than shards: sample-level split still disjoint
    few = shards[:1]
    s0 = _keys(MultiviewTrainingStream(few, 2, 16, rank=0, world_size=2, shuffle_buffer=1), 1)
    s1 = _keys(MultiviewTrainingStream(few, 2, 16, rank=1, world_size=2, shuffle_buffer=1), 1)
    assert s0 != s1


def test_batches_for_worker_matches_round_robin() -> None:
    for total in range(10):
        assert sum(batches_for_worker(total, 3, w) for w in range(3)) == total
    assert [batches_for_worker(7, 3, w) for w in range(3)] == [3, 2, 2]


def test_prepare_targets_composites_on_the_background() -> None:
    rgba = torch.zeros(1, 2, 4, 8, 8)
    rgba[0, 0, :, 2:6, 2:6] = torch.tensor([1.0, 0.0, 0.0, 1.0])[:, None, None]
    bg = torch.tensor([[[0.0, 1.0, 0.0], [0.2, 0.2, 0.2]]])
    rgb, mask = prepare_targets(rgba, bg, 8, crop=(0, 0, 8, 4))
    assert rgb.shape == (1, 2, 3, 8, 4) and mask.shape == (1, 2, 1, 8, 4)
    torch.testing.assert_close(rgb[0, 0, :, 3, 3], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(rgb[0, 0, :, 0, 0], torch.tensor([0.0, 1.0, 0.0]))
    torch.testing.assert_close(rgb[0, 1, :, 0, 0], torch.tensor([0.2, 0.2, 0.2]))
    _, small = prepare_targets(rgba, bg, 4)
    assert small.shape == (1, 2, 1, 4, 4) and math.isclose(float(small[0, 0].sum()), 4.0, rel_tol=1e-4)


def test_no_weight_decay_on_biases_norms_and_tokens() -> None:
    from vfusion3d_core.lrm import LRM, get_preset

    model = LRM(get_preset("tiny"))
    decay, no_decay = parameter_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay_names = [names[id(p)] for p in no_decay["params"]]
    decay_names = [names[id(p)] for p in decay["params"]]
    assert all(not n.endswith(".bias") and "norm" not in n for n in decay_names)
    assert any(n.endswith(".bias") for n in no_decay_names) and any("norm" in n for n in no_decay_names)
    assert len(decay_names) + len(no_decay_names) == sum(1 for _ in model.parameters())
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0


def test_cosine_schedule_with_warmup() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = cosine_with_warmup(opt, warmup_steps=4, total_steps=14, min_lr_ratio=0.1)
    lrs = []
    for _ in range(14):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lrs[9] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:], strict=False))


def test_stream_reads_shards_lazily_through_a_bounded_buffer(shards, monkeypatch) -> None:
    """The first item arrives after reading only `shuffle_buffer` raw samples; every later item reads one more
    (memory is bounded by the buffer, whatever the dataset size)."""
    import vfusion3d_core.lrm.train.data as data_module

    pulled = []
    real = data_module.iter_raw_samples

    def counting(paths, *report):
        for raw in real(paths, *report):
            pulled.append(raw["__key__"])
            yield raw
    monkeypatch.setattr(data_module, "iter_raw_samples", counting)
    total = sum(1 for _ in real(shards))
    assert total >= 4
    it = iter(MultiviewTrainingStream(shards, 2, 16, seed=0, shuffle_buffer=2))
    next(it)
    assert len(pulled) == 2 < total
    next(it)
    assert len(pulled) == 3
