"""`prompt_set` through Dagster in-process: shards, dynamic partitions, append-only growth, bad files."""

import dagster as dg

from vfusion3d_core.data import ArtifactStore, sha256_file
from vfusion3d_core.prompts.shards import read_prompt_shard
from vfusion3d_pipeline.assets.prompts import prompt_set
from vfusion3d_pipeline.checks import prompt_set_integrity, prompt_set_problems
from vfusion3d_pipeline.resources import ArtifactStoreResource, ComputeResource, MLflowResource


def build(root, instance, config: dict) -> dg.ExecuteInProcessResult:
    return dg.materialize([prompt_set, prompt_set_integrity], instance=instance, raise_on_error=False,
                          resources={"artifacts": ArtifactStoreResource(root=str(root)),
                                     "mlflow": MLflowResource(artifact_root=str(root)),
                                     "compute": ComputeResource(device="cpu", precision="fp32")},
                          run_config={"ops": {"prompt_set": {"config": config}}})


def test_prompt_set_grows_by_new_shards_only(tmp_path) -> None:
    root, instance = tmp_path / "artifacts", dg.DagsterInstance.ephemeral()
    src = tmp_path / "prompts.csv"
    src.write_text("id,prompt\n1,a red cube\n2,  a red cube\n3,a blue cone\n")
    config = {"source_file": str(src), "template_count": 9, "template_seed": 1, "shard_size": 4}
    first = build(root, instance, config)
    assert first.success and first.get_asset_check_evaluations()[0].passed
    store = ArtifactStore(root)
    v1 = store.latest("prompt_set")
    keys1 = instance.get_dynamic_partitions("prompt_shards")
    assert keys1 == [f"shard-{i:06d}" for i in range(v1.manifest.counts["shards"])]
    mat = first.asset_materializations_for_node("prompt_set")[0]
    dedup = mat.metadata["dedup"].value
    lineage = v1.manifest.config["shard_lineage"]  # the data version: kept by appends (docs/data-engine.md)
    assert dedup["exact_duplicates"] >= 1 and mat.tags["dagster/data_version"] == lineage
    prompts1 = [r.prompt for k in keys1 for r in read_prompt_shard(v1.path / f"shards/{k}.parquet")]
    assert prompts1[:2] == ["a red cube", "a blue cone"] and len(prompts1) == v1.manifest.counts["prompts"]
    shas1 = {f.path: f.sha256 for f in v1.manifest.files}

    # a malformed source fails clearly and changes nothing
    for bad, content in [("bad.csv", b"id,text\n1,a red cube\n"), ("bin.txt", b"\x00\xff\xfe\x00"),
                         ("empty.txt", b"")]:
        (tmp_path / bad).write_bytes(content)
        failed = build(root, instance, {**config, "source_file": str(tmp_path / bad)})
        assert not failed.success
        failure = failed.get_step_failure_events()[0].event_specific_data.error.message
        assert bad in failure and "bad prompt source" in failure
        assert store.latest("prompt_set").digest == v1.digest
        assert instance.get_dynamic_partitions("prompt_shards") == keys1

    # re-running the same source adds nothing; growing the source adds exactly new shards
    assert build(root, instance, config).success
    assert store.latest("prompt_set").digest == v1.digest  # the same version, lineage included
    src.write_text(src.read_text() + "".join(f"{i},a {c} torus next to a {c} ring\n" for i, c in enumerate(
        ["purple", "orange", "brown", "black", "white"], 10)))
    grown = build(root, instance, config)
    assert grown.success and grown.get_asset_check_evaluations()[0].passed
    v2 = store.latest("prompt_set")
    new_keys = grown.asset_materializations_for_node("prompt_set")[0].metadata["new_shards"].value
    assert new_keys and instance.get_dynamic_partitions("prompt_shards") == keys1 + new_keys
    assert new_keys[0] == f"shard-{len(keys1):06d}"
    assert grown.asset_materializations_for_node("prompt_set")[0].tags["dagster/data_version"] == lineage
    for path, sha in shas1.items():
        assert sha256_file(v2.path / path) == sha and sha256_file(v1.path / path) == sha
    # tampering with a published shard is caught by the check
    shard = v2.path / "shards/shard-000000.parquet"
    shard.chmod(0o644)
    shard.write_bytes(shard.read_bytes()[:-10])
    problems, _ = prompt_set_problems(store)
    assert any("shard-000000" in p for p in problems)


def test_a_bad_line_is_skipped_and_counted_in_the_metadata(tmp_path) -> None:
    """One NUL-byte line among 150 prompts: the rest are sharded, the line is named in the log and counted
    (skipped_rows in the dedup metadata and MLflow)."""
    root, instance = tmp_path / "artifacts", dg.DagsterInstance.ephemeral()
    src = tmp_path / "prompts.txt"
    lines = [f"a {c} object number {i}" for i, c in enumerate(["red", "blue", "green"] * 50)]
    src.write_bytes("\n".join(lines[:70] + ["a broken\x00 line"] + lines[70:]).encode() + b"\n")
    result = build(root, instance, {"source_file": str(src), "template_count": 0, "shard_size": 64,
                                    "near_dup_threshold": 1.0})
    assert result.success
    dedup = result.asset_materializations_for_node("prompt_set")[0].metadata["dedup"].value
    assert dedup["skipped_rows"] == 1
    assert ArtifactStore(root).latest("prompt_set").manifest.counts["prompts"] == 150


def test_prompts_matching_heldout_objects_never_enter(tmp_path) -> None:
    """With a source_objects listing, prompts that are (near) copies of a held-out object's caption are excluded,
    counted by name, and the listing's digest is recorded as an input; the check still passes."""
    from pipeline_utils import MICRO_SOURCE

    from vfusion3d_core.objects.listing import read_listing
    from vfusion3d_pipeline.assets.renders import source_objects
    from vfusion3d_pipeline.resources import PresetResource

    root, instance = tmp_path / "artifacts", dg.DagsterInstance.ephemeral()
    resources = {"artifacts": ArtifactStoreResource(root=str(root)), "mlflow": MLflowResource(artifact_root=str(root)),
                 "preset": PresetResource(name="tiny")}
    assert dg.materialize([source_objects], instance=instance, resources=resources,
                          run_config={"ops": {"source_objects": {"config": MICRO_SOURCE}}}).success
    store = ArtifactStore(root)
    listing = store.latest("source_objects")
    heldout = [r.caption for r in read_listing(listing.path / "objects.parquet") if r.split == "heldout"]
    src = tmp_path / "prompts.txt"
    src.write_text(f"a red box\n{heldout[0].upper()}\n{heldout[1]}.\na glossy blue sphere\n")
    result = build(root, instance, {"source_file": str(src), "template_count": 0, "shard_size": 4})
    assert result.success and result.get_asset_check_evaluations()[0].passed
    meta = result.asset_materializations_for_node("prompt_set")[0].metadata
    assert meta["heldout_excluded"].value == 2
    assert meta["dedup"].value["heldout_exact"] == 1 and meta["dedup"].value["heldout_near"] == 1
    assert [m[1] for m in meta["heldout_excluded_examples"].value] == heldout[:2]
    version = store.latest("prompt_set")
    assert version.manifest.inputs == {"source_objects": listing.digest}
    prompts = [r.prompt for r in read_prompt_shard(version.path / "shards/shard-000000.parquet")]
    assert prompts == ["a red box", "a glossy blue sphere"]

    # a prompt set published before the listing existed keeps its prompts (append-only); the check names them
    root2 = tmp_path / "artifacts2"
    early = build(root2, instance, {"source_file": str(src), "template_count": 0, "shard_size": 4})
    assert early.success and early.get_asset_check_evaluations()[0].passed
    assert ArtifactStore(root2).latest("prompt_set").manifest.inputs == {}
    resources2 = {**resources, "artifacts": ArtifactStoreResource(root=str(root2)),
                  "mlflow": MLflowResource(artifact_root=str(root2))}
    assert dg.materialize([source_objects], instance=instance, resources=resources2,
                          run_config={"ops": {"source_objects": {"config": MICRO_SOURCE}}}).success
    problems, info = prompt_set_problems(ArtifactStore(root2))
    assert info["heldout_captions_compared"] == 2 and len(problems) == 1
    assert "1 exact match(es)" in problems[0] and repr(heldout[0].upper()) in problems[0]
    assert f"{heldout[1]}." in problems[0] and "near duplicate" in problems[0]
