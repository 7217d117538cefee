"""Asset checks: the data an asset published is intact and consistent before anything consumes it."""


import csv
from collections import Counter

import dagster as dg

from vfusion3d_core.data import ArtifactStore, BadItemPolicy, SkipReport, iter_samples
from vfusion3d_core.data.video_sample import iter_video_samples
from vfusion3d_core.video.synthesis import prompt_seed
from vfusion3d_pipeline.asset_keys import RENDERS, SYNTHETIC, VIDEO_MODEL
from vfusion3d_pipeline.partitions import object_shards, prompt_shards
from vfusion3d_pipeline.resources import ArtifactStoreResource


@dg.asset_check(asset=RENDERS, blocking=True, partitions_def=object_shards,
                description="The partition's shards readable and hashing as in the manifest, per-split counts match, "
                            "every sample has all its views and cameras, train and held-out uids disjoint.")
def renders_3d_integrity(context: dg.AssetCheckExecutionContext,
                         artifacts: ArtifactStoreResource) -> dg.AssetCheckResult:
    return renders_partition_check(artifacts.store(), context.partition_key)


def renders_partition_check(store: ArtifactStore, key: str) -> dg.AssetCheckResult:
    """The integrity check of one renders_3d partition (callable without a Dagster run)."""
    version = store.latest(RENDERS, key)
    if version is None:
        return dg.AssetCheckResult(passed=False, description=f"{key}: no committed version")
    m = version.manifest
    problems = m.verify(version.path)
    uids: dict[str, set[str]] = {"train": set(), "heldout": set()}
    per_split = Counter()
    views_expected = m.config["num_views"]
    # a check lists every bad shard and sample (never stops at the first) and fails when there is any
    bad = SkipReport(BadItemPolicy.collect_all(), what="renders_3d_integrity")
    for split in uids:
        shards = version.files_under(split)
        for sample in iter_samples(shards, bad):
            if sample.key in uids[split]:
                problems.append(f"duplicate uid {sample.key} in {split}")
            uids[split].add(sample.key)
            per_split[split] += 1
            if sample.num_views != views_expected:
                problems.append(f"{sample.key}: {sample.num_views} views, expected {views_expected}")
        if per_split[split] != m.counts.get(f"{split}_objects", 0):
            problems.append(f"{split}: {per_split[split]} samples, manifest says {m.counts.get(f'{split}_objects', 0)}")
    problems += bad.problems()
    overlap = uids["train"] & uids["heldout"]
    if overlap:
        problems.append(f"{len(overlap)} uid(s) in both train and held-out, e.g. {sorted(overlap)[:3]}")
    with open(version.path / "objects.csv", newline="", encoding="utf-8") as f:
        listed = sum(1 for _ in csv.DictReader(f))
    if listed != m.counts["objects"]:
        problems.append(f"objects.csv lists {listed} objects, manifest says {m.counts['objects']}")
    return dg.AssetCheckResult(
        passed=not problems,
        metadata={"partition": key, "train": per_split["train"], "heldout": per_split["heldout"],
                  "overlap": len(overlap), **bad.counts(), "problems": dg.MetadataValue.json(problems[:50]),
                  "version": version.path.name},
    )


@dg.asset_check(asset=SYNTHETIC, blocking=True, partitions_def=prompt_shards,
                description="The partition's files hash as in the manifest; every shard decodes; one sample per "
                            "prompt of the shard (no duplicates, none missing); frames, seeds and the model digest "
                            "are consistent with the manifest.")
def synthetic_videos_integrity(context: dg.AssetCheckExecutionContext,
                               artifacts: ArtifactStoreResource) -> dg.AssetCheckResult:
    return synthetic_partition_check(artifacts.store(), context.partition_key)


def synthetic_partition_check(store: ArtifactStore, key: str) -> dg.AssetCheckResult:
    """The integrity check of one synthetic_videos partition (callable without a Dagster run)."""
    version = store.latest(SYNTHETIC, key)
    if version is None:
        return dg.AssetCheckResult(passed=False, description=f"{key}: no committed version")
    m = version.manifest
    problems = m.verify(version.path)
    keys: list[str] = []
    bad = SkipReport(BadItemPolicy.collect_all(), what="synthetic_videos_integrity")
    for sample in iter_video_samples(version.shards(), bad):
        keys.append(sample.key)
        if sample.model_digest != m.inputs.get(VIDEO_MODEL):
            problems.append(f"{sample.key}: model digest {sample.model_digest[:12]} is not the manifest's input")
        if sample.seed != prompt_seed(m.config["base_seed"], sample.key):
            problems.append(f"{sample.key}: seed {sample.seed} does not follow from its prompt id")
        if sample.num_frames != sample.meta.get("num_frames"):
            problems.append(f"{sample.key}: {sample.num_frames} frames, meta says {sample.meta.get('num_frames')}")
    problems += bad.problems()  # every bad shard and sample, not only the first
    dupes = sorted(k for k, n in Counter(keys).items() if n > 1)
    if dupes:
        problems.append(f"{len(dupes)} duplicated sample(s), e.g. {dupes[:3]}")
    if len(keys) != m.counts.get("videos"):
        problems.append(f"{len(keys)} samples, manifest says {m.counts.get('videos')}")
    return dg.AssetCheckResult(
        passed=not problems,
        metadata={"partition": key, "samples": len(keys), "duplicates": len(dupes), **bad.counts(),
                  "problems": dg.MetadataValue.json(problems[:50]), "version": version.path.name},
    )
