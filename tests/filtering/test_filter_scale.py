"""The quality filter made scale-ready: a real DINOv2 folder's own preprocessing (checked against its image
processor), device/precision settings, the typed FilterRequest, streaming in bounded memory, and the
pretrained-weights gate of quality_models / filtered_multiview_dataset at small / paper."""

import gc
import io
import json
import tarfile
import weakref

import dagster as dg
import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
from pipeline_utils import VIDEO_MICRO, materialize_renders

from vfusion3d_core.compute import ComputeSettings
from vfusion3d_core.data import ArtifactStore, TooManyBadItems, iter_samples
from vfusion3d_core.data.artifacts import default_tracking_uri
from vfusion3d_core.data.shards import ShardWriter
from vfusion3d_core.data.video_sample import SyntheticVideoSample
from vfusion3d_core.filtering import (
    DinoConfig,
    DinoFeaturizer,
    FilterRequest,
    Orbit,
    QualityTrainConfig,
    corrupt,
    filter_videos,
    keep_decisions,
    run_filter,
    stream_video_features,
    train_quality_models,
)
from vfusion3d_core.preprocess import ImagePreprocess, PreprocessConfigError
from vfusion3d_core.render.dataset import RenderDatasetConfig, render_dataset
from vfusion3d_core.video.data import composite_on_white
from vfusion3d_pipeline.assets.filtering import filtered_multiview_dataset, quality_models
from vfusion3d_pipeline.assets.prompts import prompt_set
from vfusion3d_pipeline.assets.video import synthetic_videos, video_model
from vfusion3d_pipeline.resources import ArtifactStoreResource, ComputeResource, MLflowResource, PresetResource

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def write_dino_folder(path, shortest_edge: int = 256, crop: int = 224, seed: int = 0):
    """A tiny Dinov2Model + the BitImageProcessor DINOv2 ships with, both written by save_pretrained."""
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    torch.manual_seed(seed)
    Dinov2Model(Dinov2Config(image_size=crop, patch_size=14, hidden_size=32, num_hidden_layers=2,
                             num_attention_heads=2, mlp_ratio=2)).save_pretrained(path)
    processor = BitImageProcessor(size={"shortest_edge": shortest_edge}, crop_size={"height": crop, "width": crop},
                                  do_center_crop=True, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD, resample=3)
    processor.save_pretrained(path)
    return processor


def smooth_frames(n: int, size: int, seed: int) -> np.ndarray:
    """uint8 [n, size, size, 3] images with structure at several scales (not per-pixel noise)."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, size, size, 3)) * 255
    return np.stack([ndi.uniform_filter(f, size=(3, 3, 1)) for f in x]).clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def dino_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("dinov2")
    write_dino_folder(d)
    return d


def test_dino_folder_preprocessing_matches_its_image_processor(dino_dir) -> None:
    from transformers import AutoImageProcessor

    featurizer = DinoFeaturizer.build(DinoConfig(path=str(dino_dir)), ComputeSettings("cpu", "fp32"))
    assert not featurizer.is_random and featurizer.weights == f"pretrained:{dino_dir.name}"
    pre = featurizer.preprocess
    assert (pre.shortest_edge, pre.crop_hw, pre.resample, pre.mean) == (256, (224, 224), "bicubic",
                                                                          tuple(IMAGENET_MEAN))
    processor = AutoImageProcessor.from_pretrained(dino_dir)
    for size in (32, 40, 300):  # upscaled, and downscaled with antialiasing
        frames = smooth_frames(3, size, seed=size)
        ours = featurizer.pixel_values(frames)
        ref = processor(images=list(frames), return_tensors="pt")["pixel_values"]
        assert ours.shape == ref.shape == (3, 3, 224, 224)
        # within about one 8-bit level after normalization (1 / 255 / 0.224 = 0.0175)
        assert (ours - ref).abs().mean() < 0.006, (size, (ours - ref).abs().mean())
        assert (ours - ref).abs().max() < 0.05, (size, (ours - ref).abs().max())
    # a processor with other settings gives other inputs: the folder's settings are really used
    other = ImagePreprocess(resize_hw=(224, 224), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    frames = smooth_frames(1, 32, seed=1)
    assert (other(torch.from_numpy(frames).permute(0, 3, 1, 2)) - featurizer.pixel_values(frames)).abs().max() > 0.1
    feats = featurizer.frame_features(frames)
    assert feats.shape == (1, 64) and np.allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)


def test_dino_folder_without_processor_config_is_an_error_naming_it(tmp_path) -> None:
    from transformers import Dinov2Config, Dinov2Model

    d = tmp_path / "bare_dino"
    Dinov2Model(Dinov2Config(image_size=28, patch_size=14, hidden_size=32, num_hidden_layers=1,
                             num_attention_heads=2)).save_pretrained(d)
    with pytest.raises(PreprocessConfigError, match="bare_dino.*preprocessor_config.json"):
        DinoFeaturizer.build(DinoConfig(path=str(d)))
    (d / "preprocessor_config.json").write_text(json.dumps({"do_resize": True, "do_normalize": False}))
    with pytest.raises(PreprocessConfigError, match="no size"):
        DinoFeaturizer.load(d)


def test_saved_quality_models_keep_the_folder_preprocessing(dino_dir, tmp_path) -> None:
    featurizer = DinoFeaturizer.build(DinoConfig(path=str(dino_dir)))
    featurizer.save(tmp_path / "dino")
    again = DinoFeaturizer.load(tmp_path / "dino")
    assert again.preprocess == featurizer.preprocess and again.weights == featurizer.weights
    frames = smooth_frames(2, 24, seed=3)
    np.testing.assert_allclose(again.frame_features(frames), featurizer.frame_features(frames), atol=1e-6)
    random = DinoFeaturizer.build(DinoConfig())
    assert random.is_random and "RANDOM weights" in random.weights
    random.save(tmp_path / "random")
    assert DinoFeaturizer.load(tmp_path / "random").weights == random.weights


def test_bf16_precision_runs_the_featurizer_under_autocast() -> None:
    fp32 = DinoFeaturizer.build(DinoConfig(), ComputeSettings("cpu", "fp32"))
    bf16 = DinoFeaturizer.build(DinoConfig(), ComputeSettings("cpu", "bf16"))
    seen = []
    bf16.model.embeddings.register_forward_hook(lambda m, i, o: seen.append(torch.is_autocast_enabled("cpu")))
    frames = smooth_frames(4, 32, seed=4)
    a, b = fp32.frame_features(frames), bf16.frame_features(frames)
    assert seen == [True] and b.dtype == np.float32
    assert not np.array_equal(a, b) and np.abs(a - b).max() < 0.1  # bf16 rounding, same features


def test_filter_request_round_trips_as_plain_json(tmp_path) -> None:
    req = FilterRequest(partition="shard-000001", video_shards=[str(tmp_path / "a.tar"), "s3://b/c.tar"],
                        quality_models_dir=str(tmp_path / "m"), output_dir=str(tmp_path / "o"), threshold=-0.5,
                        min_keep_fraction=0.25, batch_size=3, compute=ComputeSettings("cpu", "bf16"))
    wire = json.loads(json.dumps(req.to_dict()))
    assert wire["compute"] == {"device": "cpu", "precision": "bf16", "gradient_checkpointing": False}
    again = FilterRequest.from_dict(wire)
    assert again == req and isinstance(again.compute, ComputeSettings)
    with pytest.raises(ValueError, match="unknown fields"):
        FilterRequest.from_dict({**wire, "thresold": 1.0})
    with pytest.raises(ValueError, match="at least one video shard"):
        FilterRequest("p", [], "m", "o")


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("renders")
    render_dataset(RenderDatasetConfig.preset("tiny", num_objects=12, num_heldout=4, num_views=6, resolution=32,
                                              seed=2), d)
    orbits = {split: [Orbit(s.key, composite_on_white(s.views), s.meta["elevation_deg"], s.meta["radius"],
                            s.intrinsics[0]) for s in iter_samples(sorted(d.glob(f"{split}/*.tar")))]
              for split in ("train", "heldout")}
    models = train_quality_models(DinoFeaturizer.build(DinoConfig()), orbits["train"], orbits["heldout"], [], [],
                                  QualityTrainConfig(appearance_pca=8), (0.0, 45.0))
    return models, orbits


def _videos(orbits, n: int) -> list[SyntheticVideoSample]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        o = orbits[i % len(orbits)]
        frames = o.frames if i % 2 == 0 else corrupt(o.frames, "blank", rng)
        out.append(SyntheticVideoSample(f"v{i:03d}", f"object {i}", frames, i, "ab" * 8, {}))
    return out


def test_filtering_streams_holding_at_most_a_batch_of_videos(tiny_models, tmp_path) -> None:
    models, orbits = tiny_models
    frames = [v.frames for v in _videos(orbits["train"], 21)]
    alive: list[weakref.ref] = []
    peak = {"alive": 0, "calls": 0}

    def stream():  # new samples on every pass, decoded one at a time like a shard reader
        for i, f in enumerate(frames):
            v = SyntheticVideoSample(f"v{i:03d}", f"object {i}", f.copy(), i, "ab" * 8, {})
            alive.append(weakref.ref(v))
            yield v

    featurize = models.featurizer.video_features

    def counting(videos):
        gc.collect()
        peak["alive"] = max(peak["alive"], sum(r() is not None for r in alive))
        peak["calls"] += 1
        return featurize(videos)

    models.featurizer.video_features = counting
    try:
        result = filter_videos(stream, models, tmp_path / "out", "p", batch=4)
    finally:
        models.featurizer.video_features = featurize
    assert result.counts["videos"] == 21 and peak["calls"] == 6  # ceil(21 / 4) batches
    assert peak["alive"] <= 4 + 1, peak  # the batch being featurized (+ the generator's current one)
    kept = {k for k, _, keep, _ in result.scores if keep}
    assert {s.key for s in iter_samples(sorted((tmp_path / "out").glob("*.tar")))} == kept

    passes = []

    def unstable():
        passes.append(1)
        yield from stream()
        if len(passes) == 2:  # the second pass sees one video more than the first
            yield SyntheticVideoSample("extra", "x", frames[0], 0, "ab" * 8, {})

    with pytest.raises(ValueError, match="second pass"):
        filter_videos(unstable, models, tmp_path / "out2", "p", batch=4)


def test_run_filter_on_shards_matches_filter_videos(tiny_models, tmp_path) -> None:
    models, orbits = tiny_models
    videos = _videos(orbits["heldout"], 10)
    with ShardWriter(tmp_path / "in", samples_per_shard=4) as w:
        for v in videos:
            w.write(v)
    models.save(tmp_path / "models")
    request = FilterRequest("shard-000003", [str(p) for p in w.shards], str(tmp_path / "models"),
                            str(tmp_path / "out"), batch_size=3, compute=ComputeSettings("cpu", "fp32"))
    result, loaded = run_filter(FilterRequest.from_dict(request.to_dict()))
    direct = filter_videos(lambda: videos, models, tmp_path / "direct", "shard-000003", batch=5)
    assert result.counts == direct.counts and result.counts["videos"] == 10
    np.testing.assert_allclose([s for _, s, _, _ in result.scores], [s for _, s, _, _ in direct.scores], atol=1e-5)
    assert loaded.featurizer.device == torch.device("cpu")
    # blank videos never pass; every kept sample is one of the real orbits
    assert all(int(k[1:]) % 2 == 0 for k, _, keep, _ in result.scores if keep)


def test_run_filter_skips_a_bad_video_and_counts_it(tiny_models, tmp_path) -> None:
    """Bad-item policy (docs/reliability.md, "Bad items in batch inputs"): one undecodable video does not stop
    the partition; above the share the run fails naming it."""
    models, orbits = tiny_models
    videos = _videos(orbits["heldout"], 6)
    with ShardWriter(tmp_path / "in", samples_per_shard=3) as w:
        for v in videos:
            w.write(v)
    bad = {k: v for k, v in videos[0].to_wds().items() if k != "__key__"}
    bad["001.png"] = b"not a png"
    with tarfile.open(tmp_path / "in" / "bad.tar", "w") as tf:
        for suffix, data in bad.items():
            info = tarfile.TarInfo(f"vbad.{suffix}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    shards = [str(w.shards[0]), str(tmp_path / "in" / "bad.tar"), str(w.shards[1])]
    models.save(tmp_path / "models")
    request = FilterRequest("shard-000004", shards, str(tmp_path / "models"), str(tmp_path / "out"), batch_size=3,
                            compute=ComputeSettings("cpu", "fp32"), max_bad_fraction=0.2)
    result, _ = run_filter(request)
    assert result.counts["videos"] == 6 and [k for k, *_ in result.scores] == [v.key for v in videos]
    assert result.skipped == {"skipped_samples": 1, "skipped_shards": 0}
    assert "vbad.001.png" in result.skipped_items[0] and "bad.tar" in result.skipped_items[0]
    strict = FilterRequest("shard-000004", shards, str(tmp_path / "models"), str(tmp_path / "out2"), batch_size=3,
                           compute=ComputeSettings("cpu", "fp32"))
    with pytest.raises(TooManyBadItems, match="vbad.001.png"):
        run_filter(strict)


def test_keep_floor_is_linear_in_the_number_of_videos() -> None:
    scores = list(np.random.default_rng(0).normal(-1, 0.1, 200_000))
    why = keep_decisions(scores, 0.0, min_keep_fraction=0.25)  # quadratic before: minutes; now well under a second
    assert why.count("floor") == 50_000 and why.count("threshold") == 0
    best = np.argsort(scores)[::-1][:50_000]
    assert all(why[i] == "floor" for i in best)


def test_stream_video_features_equals_one_batch(tiny_models) -> None:
    models, orbits = tiny_models
    videos = [o.frames for o in orbits["train"][:7]]
    np.testing.assert_allclose(stream_video_features(models.featurizer, iter(videos), batch=3),
                               models.featurizer.video_features(videos), atol=1e-5)
    with pytest.raises(ValueError, match="user_features must be"):
        train_quality_models(models.featurizer, orbits["train"], [], np.zeros((2, 5)), [1, 0], QualityTrainConfig(),
                             (0.0, 45.0))


# ---- pipeline: a real DINOv2 folder at `paper`, and the pretrained gate ----

def _resources(root, preset: str) -> dict:
    return {"artifacts": ArtifactStoreResource(root=str(root)), "preset": PresetResource(name=preset),
            "mlflow": MLflowResource(artifact_root=str(root)),
            "compute": ComputeResource(device="cpu", precision="fp32")}


def test_quality_models_and_filtering_through_a_dinov2_folder_and_the_paper_gate(tmp_path, dino_dir) -> None:
    import mlflow

    root = tmp_path / "artifacts"
    src = tmp_path / "prompts.txt"
    src.write_text("a red box\na glossy blue sphere\na green cone\n")
    (tmp_path / "dagster_home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster_home")) as instance:
        materialize_renders(_resources(root, "tiny"), instance)  # upstream at tiny (not what this test is about)
        assert dg.materialize(
            [video_model, prompt_set], instance=instance, resources=_resources(root, "tiny"),
            run_config={"ops": {"video_model": {"config": {"eval_count": 2, "overrides_json": json.dumps(VIDEO_MICRO)}},
                                "prompt_set": {"config": {"source_file": str(src), "template_count": 0,
                                                          "shard_size": 3}}}}).success
        (key,) = instance.get_dynamic_partitions("prompt_shards")
        assert dg.materialize([synthetic_videos], partition_key=key, instance=instance,
                              resources=_resources(root, "tiny")).success

        # paper without dino_path: refused before any work, naming the path and the opt-out
        with pytest.raises(dg.Failure, match=r"dino_path is not set.*from_scratch"):
            dg.materialize([quality_models], instance=instance, resources=_resources(root, "paper"))
        store = ArtifactStore(root)
        assert store.latest("quality_models") is None

        # a tiny-trained (RANDOM DINO) model set is refused by filtering at paper, naming dino_path
        assert dg.materialize([quality_models], instance=instance, resources=_resources(root, "tiny")).success
        with pytest.raises(dg.Failure, match=r"dino_path of quality_models is not set.*RANDOM"):
            dg.materialize([filtered_multiview_dataset], partition_key=key, instance=instance,
                           resources=_resources(root, "paper"))
        assert store.latest("filtered_multiview_dataset", key) is None
        scratch = dg.materialize([filtered_multiview_dataset], partition_key=key, instance=instance,
                                 resources=_resources(root, "paper"),
                                 run_config={"ops": {"filtered_multiview_dataset": {"config": {"from_scratch": True}}}})
        assert scratch.success
        assert "RANDOM weights" in scratch.asset_materializations_for_node(
            "filtered_multiview_dataset")[0].metadata["dino_model"].value

        # the real folder at paper: quality models and filtering run through it
        qm = dg.materialize([quality_models], instance=instance, resources=_resources(root, "paper"),
                            run_config={"ops": {"quality_models": {"config": {"dino_path": str(dino_dir),
                                                                              "precision": "fp32"}}}})
        assert qm.success
        meta = qm.asset_materializations_for_node("quality_models")[0].metadata
        assert meta["dino_model"].value == f"pretrained:{dino_dir.name}"
        assert meta["compute"].value["resolved_device"] == "cpu"
        qv = store.latest("quality_models")
        assert qv.manifest.config["compute"]["resolved_precision"] == "fp32"
        saved = json.loads((qv.path / "models/dino/preprocessor_config.json").read_text())
        assert saved["size"] == {"shortest_edge": 256} and saved["crop_size"] == {"height": 224, "width": 224}

        fm = dg.materialize([filtered_multiview_dataset], partition_key=key, instance=instance,
                            resources=_resources(root, "paper"))
        assert fm.success
        fmeta = fm.asset_materializations_for_node("filtered_multiview_dataset")[0].metadata
        assert fmeta["dino_model"].value == f"pretrained:{dino_dir.name}"
        assert fmeta["kept"].value + fmeta["rejected"].value == 3
        fv = store.latest("filtered_multiview_dataset", key)
        assert fv.manifest.inputs["quality_models"] == qv.digest
        assert fv.manifest.config["compute"]["device"] == "cpu" and fv.manifest.config["batch_size"] == 16
        client = mlflow.MlflowClient(default_tracking_uri(root))
        run = client.get_run(fmeta["mlflow_run_id"].value)
        assert run.data.params["compute.resolved_device"] == "cpu"
        assert run.data.params["dino_weights"] == f"pretrained:{dino_dir.name}"
