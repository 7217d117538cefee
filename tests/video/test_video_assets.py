"""`video_model` and `synthetic_videos` through Dagster, in-process at micro size with a temp artifact root."""

import json
import math

import dagster as dg
import mlflow
from pipeline_utils import hash_embed, materialize_prompt_set, materialize_renders
from video_micro import MICRO

from vfusion3d_core.data import ArtifactStore, sha256_file
from vfusion3d_core.data.video_sample import iter_video_samples
from vfusion3d_core.prompts.promptset import prompt_id
from vfusion3d_core.video.synthesis import prompt_seed
from vfusion3d_pipeline.assets.renders import committed_renders
from vfusion3d_pipeline.assets.video import synthetic_videos, video_model
from vfusion3d_pipeline.checks import synthetic_partition_check, synthetic_videos_integrity
from vfusion3d_pipeline.resources import ArtifactStoreResource, ComputeResource, MLflowResource, PresetResource

PROMPTS = [["a red cube", "a tall green cylinder", "a small blue ball"], ["a yellow cone", "a purple ring"]]
MODEL_CONFIG = {"eval_count": 2, "overrides_json": json.dumps({k: v for k, v in MICRO.items() if k != "eval_count"})}


def _resources(root) -> dict:
    return {"artifacts": ArtifactStoreResource(root=str(root)), "preset": PresetResource(name="tiny"),
            "mlflow": MLflowResource(artifact_root=str(root)),
            "compute": ComputeResource(device="cpu", precision="fp32")}


def _publish_prompt_set(root, instance, shards: int) -> None:
    """The prompt_set asset on a source file of the first ``shards`` groups of PROMPTS, one shard per group
    (growing the source appends a shard)."""
    source = root.parent / "prompts.txt"
    source.write_text("".join(f"{p}\n" for group in PROMPTS[:shards] for p in group))
    materialize_prompt_set(_resources(root), instance, {"source_file": str(source), "template_count": 0,
                                                        "shard_size": len(PROMPTS[0])}, hash_embed)


def _synthesize(root, instance, key: str, config: dict | None = None) -> dg.ExecuteInProcessResult:
    return dg.materialize([synthetic_videos, synthetic_videos_integrity], partition_key=key, instance=instance,
                          resources=_resources(root),
                          run_config={"ops": {"synthetic_videos": {"config": config or {}}}})


def test_video_model_and_partitioned_synthesis(tmp_path) -> None:
    root = tmp_path / "artifacts"
    instance = dg.DagsterInstance.ephemeral()
    materialize_renders(_resources(root), instance)
    result = dg.materialize([video_model], resources=_resources(root), instance=instance,
                            run_config={"ops": {"video_model": {"config": MODEL_CONFIG}}})
    assert result.success
    store = ArtifactStore(root)
    model_version, renders = store.latest("video_model"), committed_renders(store)
    assert model_version.manifest.inputs == renders.inputs and len(renders.inputs) == 2  # both object shards
    assert model_version.manifest.verify(model_version.path) == []
    card = (model_version.path / "model" / "README.md").read_text()
    assert all(digest in card for digest in renders.inputs.values())
    mat = result.asset_materializations_for_node("video_model")[0]
    assert mat.tags["dagster/data_version"] == model_version.digest
    closeness = mat.metadata["closeness"].value
    assert {"untrained/text_to_video_mse", "finetuned/text_to_video_mse", "finetuned/image_to_video_mse"} <= set(
        closeness)
    assert all(math.isfinite(v) for v in closeness.values())
    heldout = mat.metadata["heldout_quality"].value  # image -> orbit on the 2 held-out objects, before and after
    names = ("psnr", "lpips", "colour_mean_distance", "colour_hist_distance", "consistency_gap")
    assert {f"{w}/{k}" for w in ("untrained", "finetuned") for k in names} <= set(heldout)
    assert heldout["finetuned/objects"] == 2.0 and mat.metadata["heldout_psnr/finetuned"].value > 0.0
    assert mat.metadata["heldout_lpips_backbone"].value.startswith("alex")  # RANDOM without local weights
    assert "data:image/png;base64" in mat.metadata["heldout_orbits"].value
    run = mlflow.MlflowClient(f"sqlite:///{root}/mlflow.db").get_run(mat.metadata["mlflow_run_id"].value)
    assert run.data.tags["input.renders_3d/objects-000001"] == renders.inputs["renders_3d/objects-000001"]
    assert run.data.tags["output.digest"] == model_version.digest
    assert run.data.params["compute.resolved_device"] == "cpu" and "finetuned_heldout_lpips" in run.data.metrics
    assert run.data.params["compute.resolved_precision"] == "fp32"
    assert model_version.manifest.config["compute"]["device"] == "cpu"
    assert model_version.manifest.config["random_init"] == ["vae", "image_unet", "video_unet"]  # tiny: all random
    assert mat.metadata["counts"].value["training_orbits"] == 6 and mat.metadata["counts"].value["heldout_orbits"] == 2
    assert mat.metadata["skipped_samples"].value == 0 and run.data.metrics["skipped_samples"] == 0.0
    assert not (store.asset_dir("video_model") / ".checkpoints").exists() or not any(
        (store.asset_dir("video_model") / ".checkpoints").iterdir())

    _publish_prompt_set(root, instance, 1)
    first = _synthesize(root, instance, "shard-000000")
    assert first.success and first.get_asset_check_evaluations()[0].passed
    v1 = store.latest("synthetic_videos", "shard-000000")
    shard_file = store.latest("prompt_set").path / "shards/shard-000000.parquet"
    assert v1.manifest.inputs == {"video_model": model_version.digest,
                                  "prompt_set/shard-000000": sha256_file(shard_file)}
    samples = list(iter_video_samples(sorted(v1.path.glob("*.tar"))))
    assert [s.key for s in samples] == [prompt_id(p) for p in PROMPTS[0]]
    assert samples[1].prompt == "a tall green cylinder" and samples[1].frames.shape == (4, 16, 16, 3)
    assert all(s.model_digest == model_version.digest and s.seed == prompt_seed(0, s.key) for s in samples)

    # same inputs and config -> the same version; another sampler config -> a new version replacing the old one
    assert _synthesize(root, instance, "shard-000000").success
    assert store.latest("synthetic_videos", "shard-000000").digest == v1.digest
    assert _synthesize(root, instance, "shard-000000", {"sample_steps": 2, "samples_per_shard": 2}).success
    v2 = store.latest("synthetic_videos", "shard-000000")
    assert v2.digest != v1.digest
    keys = [s.key for s in iter_video_samples(sorted(v2.path.glob("*.tar")))]
    assert sorted(keys) == sorted(prompt_id(p) for p in PROMPTS[0]) and len(list(v2.path.glob("*.tar"))) == 2
    assert sorted(p.name for p in v2.path.iterdir()) == ["manifest.json", "shard-000000.tar", "shard-000001.tar"]

    # adding a shard to the prompt set leaves shard-000000's input digest unchanged
    _publish_prompt_set(root, instance, 2)
    assert instance.get_dynamic_partitions("prompt_shards") == ["shard-000000", "shard-000001"]
    assert _synthesize(root, instance, "shard-000001").success
    assert store.latest("synthetic_videos", "shard-000001").manifest.counts["videos"] == 2
    new_shard0 = store.latest("prompt_set").path / "shards/shard-000000.parquet"
    assert sha256_file(new_shard0) == v2.manifest.inputs["prompt_set/shard-000000"]

    # the blocking check notices a damaged partition
    tar = v2.path / "shard-000001.tar"
    tar.write_bytes(tar.read_bytes()[:-700])
    evaluation = synthetic_partition_check(store, "shard-000000")
    assert not evaluation.passed and any("shard-000001.tar" in p for p in evaluation.metadata["problems"].value)

def test_synthesis_fails_cleanly_without_a_video_model(tmp_path) -> None:
    root = tmp_path / "artifacts"
    instance = dg.DagsterInstance.ephemeral()
    _publish_prompt_set(root, instance, 1)
    instance.add_dynamic_partitions("prompt_shards", ["shard-000005"])
    result = dg.materialize([synthetic_videos], partition_key="shard-000005", instance=instance,
                            resources=_resources(root), raise_on_error=False)
    assert not result.success
    assert ArtifactStore(root).latest("synthetic_videos", "shard-000005") is None

