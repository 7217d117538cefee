"""Quality SVM / elevation MLP on DINO features and posed multi-view extraction (core, no Dagster)."""

import numpy as np
import pytest

from vfusion3d_core.data import iter_samples
from vfusion3d_core.data.shards import ShardWriter
from vfusion3d_core.data.video_sample import SyntheticVideoSample
from vfusion3d_core.filtering import (
    DinoConfig,
    DinoFeaturizer,
    LabelsError,
    Orbit,
    QualityModels,
    QualityTrainConfig,
    alpha_from_white,
    bootstrap_videos,
    corrupt,
    filter_videos,
    keep_decisions,
    read_labels_csv,
    train_quality_models,
)
from vfusion3d_core.render.dataset import RenderDatasetConfig, render_dataset
from vfusion3d_core.video.data import composite_on_white


@pytest.fixture(scope="module")
def orbits(tmp_path_factory):
    d = tmp_path_factory.mktemp("renders")
    render_dataset(RenderDatasetConfig.preset("tiny", num_objects=64, num_heldout=10, num_views=8, resolution=32,
                                              seed=5), d)
    out = {}
    for split in ("train", "heldout"):
        out[split] = [Orbit(s.key, composite_on_white(s.views), s.meta["elevation_deg"], s.meta["radius"],
                            s.intrinsics[0]) for s in iter_samples(sorted(d.glob(f"{split}/*.tar")))]
    return out


@pytest.fixture(scope="module")
def models(orbits):
    return train_quality_models(DinoFeaturizer.build(DinoConfig()), orbits["train"], orbits["heldout"], [], [],
                                QualityTrainConfig(), (0.0, 45.0))


def test_corruptions_are_what_they_claim() -> None:
    rng = np.random.default_rng(0)
    video = np.stack([np.full((8, 8, 3), 10 * i, np.uint8) for i in range(6)])
    shuffled = corrupt(video, "shuffled", rng)
    order = [int(f[0, 0, 0]) // 10 for f in shuffled]
    assert sorted(order) == list(range(6))
    assert order not in ([(i + r) % 6 for i in range(6)] for r in range(6))
    frozen = corrupt(video, "frozen", rng)
    assert (frozen == frozen[0]).all()
    assert corrupt(video, "blank", rng).std() < 5
    videos, labels, kinds = bootstrap_videos([video, video], seed=1)
    assert labels.tolist() == [1, 0, 0, 0, 0] * 2 and kinds[:5] == ["real", "shuffled", "frozen", "blank", "noise"]


def test_svm_separates_held_out_bootstrap_labels(models) -> None:
    m = models.info["metrics"]
    assert m["heldout_videos"] == 50
    # chance is 0.5; random-init DINO at 32 px with 32 training objects is a weak featurizer
    assert m["heldout_balanced_accuracy"] > 0.65, m
    by_kind = m["heldout_accuracy_by_kind"]
    assert by_kind["blank"] >= 0.9 and by_kind["noise"] >= 0.9 and by_kind["frozen"] >= 0.7, m
    assert np.isfinite(m["elevation_heldout_mae_deg"]) and m["elevation_heldout_mae_deg"] <= 45


def test_save_load_round_trip_gives_identical_scores(models, orbits, tmp_path) -> None:
    files = models.save(tmp_path / "m")
    assert "quality_svm.joblib" in files and any(f.startswith("dino/") for f in files)
    again = QualityModels.load(tmp_path / "m")
    videos = [o.frames for o in orbits["heldout"][:3]]
    a, b = models.featurizer.video_features(videos), again.featurizer.video_features(videos)
    np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(models.score(a), again.score(b), atol=1e-6)


def test_filter_keeps_orbits_and_poses_them(models, orbits, tmp_path) -> None:
    rng = np.random.default_rng(3)
    held = orbits["heldout"]
    videos = [SyntheticVideoSample(f"good{i}", f"object {i}", o.frames, i, "ab" * 8, {}) for i, o in enumerate(held)]
    videos += [SyntheticVideoSample(f"bad{i}", f"broken {i}", corrupt(o.frames, kind, rng), i, "ab" * 8, {})
               for i, (o, kind) in enumerate(zip(held, ["blank", "frozen"] * 5, strict=True))]
    result = filter_videos(lambda: videos, models, tmp_path / "out", "shard-000000", samples_per_shard=4, batch=6)
    kept = {k for k, _, keep, _ in result.scores if keep}
    assert result.counts["videos"] == 20 and result.counts["kept"] + result.counts["rejected"] == 20
    assert not any(k.startswith("bad") for k in kept)
    assert sum(k.startswith("good") for k in kept) >= 6
    samples = list(iter_samples(sorted((tmp_path / "out").glob("*.tar"))))
    assert {s.key for s in samples} == kept and result.counts["views"] == 8 * len(kept)
    s = samples[0]
    assert s.views.shape == (8, 32, 32, 4) and s.caption.startswith("object")
    np.testing.assert_allclose(s.meta["azimuth_deg"], np.arange(8) * 45.0)
    assert 0 <= s.meta["elevation_deg"] <= 45 and s.meta["radius"] == pytest.approx(held[0].radius)
    np.testing.assert_allclose(np.linalg.norm(s.c2w[:, :3, 3], axis=1), held[0].radius, rtol=1e-5)
    np.testing.assert_allclose(s.intrinsics[0], held[0].intrinsics, rtol=1e-6)
    heights = s.c2w[:, 2, 3] / held[0].radius
    np.testing.assert_allclose(np.degrees(np.arcsin(heights)), s.meta["elevation_deg"], atol=1e-3)
    assert (tmp_path / "out/score_histogram.png").stat().st_size > 0
    assert (tmp_path / "out/scores.csv").read_text().count("\n") == 21


def test_keep_floor_keeps_the_best_scoring_below_threshold() -> None:
    scores = [-3.0, 0.5, -1.0, -2.0, -0.5, -4.0, -1.5, -2.5]
    assert keep_decisions(scores, 0.0) == [None, "threshold"] + [None] * 6
    why = keep_decisions(scores, 0.0, min_keep_fraction=0.3)  # ceil(2.4) = 3 kept: 0.5, then -0.5, -1.0
    assert why == [None, "threshold", "floor", None, "floor", None, None, None]
    assert keep_decisions(scores, -10.0, min_keep_fraction=0.3).count("floor") == 0  # floor never removes
    with pytest.raises(ValueError, match="min_keep_fraction"):
        keep_decisions(scores, 0.0, min_keep_fraction=1.5)


def test_alpha_from_white_and_labels_csv(tmp_path) -> None:
    frames = np.full((1, 2, 2, 3), 255, np.uint8)
    frames[0, 0, 0] = (0, 0, 0)
    rgba = alpha_from_white(frames)
    assert rgba[0, 0, 0, 3] == 255 and rgba[0, 1, 1, 3] == 0 and (rgba[..., :3] == frames).all()
    p = tmp_path / "labels.csv"
    p.write_text("video_key,label\npa,good\npb,bad\npa,BAD\n")
    assert read_labels_csv(p) == {"pa": 0, "pb": 0}
    p.write_text("key,label\npa,good\n")
    with pytest.raises(LabelsError, match="labels.csv"):
        read_labels_csv(p)
    p.write_text("video_key,label\npa,maybe\n")
    with pytest.raises(LabelsError, match="good/bad"):
        read_labels_csv(p)


def test_shard_writer_accepts_posed_samples(tmp_path, orbits) -> None:
    from vfusion3d_core.cameras import Intrinsics
    from vfusion3d_core.filtering import posed_sample

    o = orbits["train"][0]
    video = SyntheticVideoSample("k1", "a red cube", o.frames, 1, "cd" * 8, {})
    with ShardWriter(tmp_path) as w:
        w.write(posed_sample(video, 30.0, 1.5, Intrinsics(), {"prompt_shard": "shard-000001"}))
    (s,) = iter_samples([tmp_path / "shard-000000.tar"])
    assert s.meta["prompt_shard"] == "shard-000001" and s.meta["elevation_deg"] == 30.0


def test_bootstrap_features_stream_orbits_and_match_the_in_memory_bootstrap() -> None:
    """Orbits are pulled lazily (one batch of videos alive), and the features/labels equal those of the
    whole bootstrap built in memory."""
    from vfusion3d_core.filtering.models import bootstrap_features

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8) for _ in range(4)]
    featurizer = DinoFeaturizer.build(DinoConfig(image_size=32, patch_size=8, hidden_size=32, num_layers=1,
                                                 num_heads=2))
    pulled = []

    def stream():
        for i, f in enumerate(frames):
            pulled.append(i)
            yield Orbit(f"o{i}", f, 10.0 * i, 2.0, np.array([1.0, 1.0, 0.5, 0.5]))

    calls = []
    original = featurizer.video_features
    featurizer.video_features = lambda videos: (calls.append((len(pulled), len(videos))), original(videos))[1]
    boot = bootstrap_features(featurizer, stream(), seed=3, batch=5)
    assert calls[0] == (1, 5)  # the first batch (an orbit + its 4 corruptions) before the second orbit is read
    assert max(n for _, n in calls) <= 5 and boot.first.key == "o0"
    videos, labels, kinds = bootstrap_videos(frames, seed=3)
    np.testing.assert_array_equal(boot.y, labels)
    assert boot.kinds == kinds and boot.elevations.tolist() == [0.0, 10.0, 20.0, 30.0]
    np.testing.assert_allclose(boot.x, original(videos), rtol=1e-4, atol=1e-5)
