"""Asset checks: the data an asset published is intact and consistent before anything consumes it.

Renders and synthetic videos: every shard readable and hashing as in the manifest, counts and samples
consistent. The data engine: prompt shards immutable and free of held-out captions, filtered samples
well-formed and unique."""

from collections import Counter, defaultdict

import dagster as dg
import numpy as np

from vfusion3d_core.data import ArtifactStore, BadItemPolicy, Manifest, ManifestError, SkipReport, iter_samples
from vfusion3d_core.data.manifest import MANIFEST_NAME
from vfusion3d_core.data.video_sample import iter_video_samples
from vfusion3d_core.metrics.leakage import caption_leaks
from vfusion3d_core.prompts.dedup import minilm_embedder
from vfusion3d_core.prompts.shards import PromptShardError, read_prompt_shard
from vfusion3d_core.video.synthesis import prompt_seed
from vfusion3d_pipeline.asset_keys import FILTERED, PROMPT_SET, RENDERS, SYNTHETIC, VIDEO_MODEL
from vfusion3d_pipeline.assets.filtering import tar_keys
from vfusion3d_pipeline.assets.prompts import heldout_captions
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
    listed = len(version.csv_rows("objects.csv"))
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


def prompt_set_problems(store: ArtifactStore) -> tuple[list[str], dict]:
    """Problems of the published prompt set: damaged files, duplicate prompt ids, any shard whose sha256 differs
    between versions or from what a synthetic_videos partition recorded as its input, and prompts that are
    held-out captions of the latest source_objects listing (exact or MiniLM near duplicates; prompt_set excludes
    them when it is built after the listing, so this catches a set published before it)."""
    version = store.latest(PROMPT_SET)
    if version is None:
        return ["no committed version"], {}
    problems = version.manifest.verify(version.path)
    ids: Counter = Counter()
    prompts: list[str] = []
    shard_files = [f for f in version.manifest.files if f.path.startswith("shards/")]
    for f in shard_files:
        try:
            records = read_prompt_shard(version.path / f.path)
        except PromptShardError as exc:
            problems.append(str(exc))
            continue
        ids.update(r.prompt_id for r in records)
        prompts += [r.prompt for r in records]
    dupes = [k for k, n in ids.items() if n > 1]
    if dupes:
        problems.append(f"{len(dupes)} prompt id(s) in more than one place, e.g. {dupes[:3]}")
    seen: dict[str, set[str]] = defaultdict(set)
    for d in store.version_dirs(PROMPT_SET):
        try:
            m = Manifest.read(d / MANIFEST_NAME)
        except ManifestError as exc:
            problems.append(str(exc))
            continue
        for f in m.files:
            if f.path.startswith("shards/"):
                seen[f.path].add(f.sha256)
    changed = sorted(p for p, shas in seen.items() if len(shas) > 1)
    if changed:
        problems.append(f"shard(s) whose bytes changed between versions: {changed[:5]}")
    current = {f.path.removeprefix("shards/").removesuffix(".parquet"): f.sha256 for f in shard_files}
    for key, sha in current.items():
        synth = store.latest(SYNTHETIC, key)
        recorded = synth and synth.manifest.inputs.get(f"{PROMPT_SET}/{key}")
        if recorded and recorded != sha:
            problems.append(f"{key}: synthetic_videos was made from shard bytes {recorded[:12]}, now {sha[:12]}")
    heldout, listing = heldout_captions(store)
    if heldout and prompts:
        leaks = caption_leaks(heldout, {"published prompts": prompts}, minilm_embedder())
        if leaks.leaking():
            problems.append(f"held-out captions of source_objects {next(iter(listing.values()))[:12]} in the "
                            f"prompts: " + leaks.describe())
    return problems, {"shards": len(shard_files), "prompts": sum(ids.values()), "versions_seen": len(
        {s for shas in seen.values() for s in shas}), "heldout_captions_compared": len(heldout)}


@dg.asset_check(asset=PROMPT_SET, blocking=True,
                description="Shards hash as in the manifest, prompt ids unique across shards, every shard's "
                            "sha256 is the same in all versions and in the synthetic_videos partitions made from it, "
                            "and no prompt is (or nearly is) a held-out object's caption.")
def prompt_set_integrity(artifacts: ArtifactStoreResource) -> dg.AssetCheckResult:
    problems, info = prompt_set_problems(artifacts.store())
    return dg.AssetCheckResult(passed=not problems, description="\n".join(problems[:10]) or None,
                               metadata={**info, "problems": dg.MetadataValue.json(problems[:50])})




def filtered_partition_problems(store: ArtifactStore, key: str) -> tuple[list[str], dict]:
    """Problems of one filtered_multiview_dataset partition: damaged files, samples whose view count differs from
    the synthetic videos' frame count or with non-finite cameras, count mismatch, and sample keys that also appear
    in another partition."""
    version = store.latest(FILTERED, key)
    if version is None:
        return [f"{key}: no committed version"], {}
    m = version.manifest
    problems = m.verify(version.path)
    synth = store.latest(SYNTHETIC, key)
    frames = None
    if synth is not None:
        first = next(iter_video_samples(synth.shards(), SkipReport(BadItemPolicy.collect_all())), None)
        frames = first.num_frames if first is not None else None
    keys: list[str] = []
    bad = SkipReport(BadItemPolicy.collect_all(), what="filtered_multiview_integrity")
    for s in iter_samples(version.shards(), bad):
        keys.append(s.key)
        if frames is not None and s.num_views != frames:
            problems.append(f"{s.key}: {s.num_views} views, the synthetic videos have {frames} frames")
        if not (np.isfinite(s.c2w).all() and np.isfinite(s.intrinsics).all()):
            problems.append(f"{s.key}: non-finite camera")
    problems += bad.problems()  # every bad shard and sample, not only the first
    if len(keys) != m.counts.get("kept"):
        problems.append(f"{len(keys)} samples, manifest says {m.counts.get('kept')} kept")
    mine = set(keys)
    if len(mine) != len(keys):
        problems.append("duplicate sample keys inside the partition")
    for other in store.partitions(FILTERED):
        if other == key:
            continue
        ov = store.latest(FILTERED, other)
        if ov is None:
            continue
        for shard in ov.shards():
            clash = mine & tar_keys(shard)
            if clash:
                problems.append(f"sample key(s) also in partition {other}: {sorted(clash)[:3]}")
    return problems, {"partition": key, "samples": len(keys), "views_per_sample": frames, **bad.counts()}


@dg.asset_check(asset=FILTERED, blocking=True, partitions_def=prompt_shards,
                description="Files hash as in the manifest; every kept sample has as many views as the synthetic "
                            "videos have frames (16 at tiny) with finite cameras; sample count = kept count; "
                            "sample keys unique across all partitions.")
def filtered_multiview_integrity(context: dg.AssetCheckExecutionContext,
                                 artifacts: ArtifactStoreResource) -> dg.AssetCheckResult:
    problems, info = filtered_partition_problems(artifacts.store(), context.partition_key)
    return dg.AssetCheckResult(passed=not problems,
                               metadata={**info, "problems": dg.MetadataValue.json(problems[:50])})
