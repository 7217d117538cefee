"""Asset checks judge the version the materialization recorded (not the store's newest), decode a bounded sample of
shards (all of them hashed and their tar headers read), and say what is wrong in words."""

from pathlib import Path

import dagster as dg
from pipeline_utils import MICRO_SOURCE, materialize_renders

from vfusion3d_core.data import ArtifactStore
from vfusion3d_pipeline.assets.renders import renders_3d
from vfusion3d_pipeline.checks import (
    described,
    filtered_partition_problems,
    materialized_digest,
    prompt_set_problems,
    renders_partition_check,
    sampled,
    synthetic_partition_check,
)
from vfusion3d_pipeline.resources import ArtifactStoreResource, ComputeResource, MLflowResource, PresetResource

KEY = "objects-000000"
ONE_PER_SHARD = {"num_views": 4, "resolution": 32, "samples_per_shard": 1}


def _resources(root: Path) -> dict:
    return {"artifacts": ArtifactStoreResource(root=str(root)), "preset": PresetResource(name="tiny"),
            "mlflow": MLflowResource(artifact_root=str(root)),
            "compute": ComputeResource(device="cpu", precision="fp32")}


def test_sample_is_bounded_strided_and_stable_per_version() -> None:
    shards = [Path(f"s{i:04d}.tar") for i in range(100)]
    chosen = sampled(shards, 8, "digest-a")
    assert len(chosen) == len(set(chosen)) == 8 and chosen == sorted(chosen)
    gaps = {shards.index(b) - shards.index(a) for a, b in zip(chosen, chosen[1:], strict=False)}
    assert gaps <= {12, 13}  # evenly spread over the partition, not the first 8
    assert sampled(shards, 8, "digest-a") == chosen and sampled(shards, 8, "digest-b") != chosen
    assert sampled(shards[:5], 8, "x") == shards[:5]


def test_description_counts_and_names_the_problems() -> None:
    assert described("renders_3d[k] version abc", [], "3 intact") == "renders_3d[k] version abc: 3 intact"
    text = described("x", [f"problem {i}" for i in range(5)], "ok")
    assert text == "x: 5 problem(s): problem 0; problem 1; problem 2 (+2 more in the problems metadata)"


def test_check_reads_the_materialized_version_and_samples_shards(tmp_path) -> None:
    root = tmp_path / "artifacts"
    instance = dg.DagsterInstance.ephemeral()
    results = materialize_renders(_resources(root), instance, MICRO_SOURCE, ONE_PER_SHARD, checks=True)
    store = ArtifactStore(root)
    first = store.latest("renders_3d", KEY)
    check = results[0].get_asset_check_evaluations()[0]
    assert check.passed and check.description.startswith(f"renders_3d[{KEY}] version {first.digest[:12]}: ")
    assert check.metadata["digest"].value == first.digest and check.metadata["shards"].value >= 4
    context = dg.build_asset_check_context(instance=instance)
    assert materialized_digest(context, "renders_3d", KEY) == first.digest
    assert materialized_digest(context, "renders_3d", "objects-000009") is None

    # decoding is bounded: one shard per split here, every shard's headers still counted
    bounded = renders_partition_check(store, KEY, first.digest, max_decoded=1)
    assert bounded.passed and bounded.metadata["decoded_shards"].value == 2
    assert bounded.metadata["train"].value + bounded.metadata["heldout"].value == first.manifest.counts["objects"]

    # another run (another instance) commits a newer version of the partition to the same store
    other = dg.DagsterInstance.ephemeral()
    other.add_dynamic_partitions("object_shards", [KEY])
    assert dg.materialize([renders_3d], resources=_resources(root), instance=other, partition_key=KEY,
                          run_config={"ops": {"renders_3d": {"config": {**ONE_PER_SHARD, "seed": 1}}}}).success
    newer = store.latest("renders_3d", KEY)
    assert newer.digest != first.digest
    # the materialized version (the first) is damaged: its check fails in words, the newest version is intact
    shard = first.files_under("train")[0]
    shard.write_bytes(shard.read_bytes()[:-3000])
    failing = renders_partition_check(store, KEY, materialized_digest(context, "renders_3d", KEY))
    assert not failing.passed
    assert failing.description.startswith(f"renders_3d[{KEY}] version {first.digest[:12]}: ")
    assert f"changed: train/{shard.name} (does not hash as in the manifest)" in failing.description
    assert renders_partition_check(store, KEY).passed  # no materialization to go by: the newest version

    # a digest the store does not hold is named as such
    gone = renders_partition_check(store, KEY, "f" * 64)
    assert not gone.passed and "the materialized version ffffffffffff is not in the artifact store" in \
        gone.description


def test_missing_versions_are_described(tmp_path) -> None:
    store = ArtifactStore(tmp_path)
    assert renders_partition_check(store, KEY).description == f"renders_3d[{KEY}] has no committed version"
    assert synthetic_partition_check(store, "shard-000000").description == \
        "synthetic_videos[shard-000000] has no committed version"
    assert prompt_set_problems(store)[0] == ["prompt_set has no committed version"]
    assert filtered_partition_problems(store, "shard-000000")[0] == \
        ["filtered_multiview_dataset[shard-000000] has no committed version"]
