"""Asset checks: the data an asset published is intact and consistent before anything consumes it.

Renders and synthetic videos: every file hashing as in the manifest, sample keys and counts consistent (read
from the tar headers of every shard), and a bounded sample of shards decoded in full. The data engine: prompt
shards immutable and free of held-out captions, filtered samples well-formed and unique.

Each check reads the version the asset's latest materialization recorded (its ``digest`` metadata, the data
version), not whatever is newest in the store, so it judges what was just materialized; run on its own (no
materialization event) it falls back to the store's current version. A failing check says what is wrong in its
``description`` (the UI shows it); every problem is in the ``problems`` metadata.

Heavy modules (numpy, torch, webdataset, pandas, MiniLM) are imported inside the checks: the code location loads
without them."""

import random
import tarfile
from collections import Counter, defaultdict
from pathlib import Path

import dagster as dg

from vfusion3d_core.data.artifacts import ArtifactStore, ArtifactVersion
from vfusion3d_core.data.bad_items import BadItemPolicy, SkipReport
from vfusion3d_core.data.manifest import MANIFEST_NAME, Manifest, ManifestError
from vfusion3d_pipeline.asset_keys import FILTERED, PROMPT_SET, RENDERS, SYNTHETIC, VIDEO_MODEL
from vfusion3d_pipeline.partitions import object_shards, prompt_shards
from vfusion3d_pipeline.resources import ArtifactStoreResource

MAX_DECODED_SHARDS = 8  # shards a check decodes in full per split (headers and hashes are read for all of them)
SHOWN_PROBLEMS = 3  # problems quoted in a failing check's description (all of them are in the metadata)


def materialized_digest(context: dg.AssetCheckExecutionContext, asset: str, partition: str | None = None
                        ) -> str | None:
    """The manifest digest the latest materialization of ``asset`` (``partition``) recorded (None: none)."""
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition] if partition else None),
        limit=1)
    if not records.records:
        return None
    materialization = records.records[0].asset_materialization
    digest = materialization.metadata.get("digest") if materialization is not None else None
    return getattr(digest, "value", digest) or None


def checked_version(store: ArtifactStore, asset: str, partition: str | None = None, digest: str | None = None
                    ) -> tuple[ArtifactVersion | None, str | None]:
    """(the version to check, why there is none): the one of ``digest`` (what was materialized), else the store's
    current version."""
    where = f"{asset}[{partition}]" if partition else asset
    if digest is None:
        version = store.latest(asset, partition)
        return version, None if version is not None else f"{where} has no committed version"
    try:
        return store.version(asset, digest, partition), None
    except (OSError, KeyError, ManifestError, ValueError) as exc:
        return None, f"{where}: the materialized version {digest[:12]} is not in the artifact store ({exc})"


def sampled(shards: list[Path], limit: int, seed: str) -> list[Path]:
    """At most ``limit`` of ``shards``: an evenly strided sample from an offset drawn from ``seed`` (the version's
    digest: every run of the check on one version decodes the same shards, other versions other ones)."""
    if len(shards) <= limit:
        return list(shards)
    stride = len(shards) / limit
    offset = random.Random(seed).random() * stride
    return [shards[int(offset + i * stride)] for i in range(limit)]


def shard_keys(path: Path) -> tuple[list[str], str | None]:
    """(sample keys in member order, why the shard is unusable or None) from the tar headers only. As when the
    shard is decoded (vfusion3d_core.data.shards), an unsafe member name (absolute, ``..``) or a member that is not
    a regular file makes the whole shard unusable: its keys are not counted."""
    keys: list[str] = []
    try:
        with tarfile.open(path, "r:") as tf:
            for member in tf:
                name = member.name
                if not member.isfile() or name.startswith("/") or ".." in Path(name).parts:
                    return [], f"{path.name}: unsafe or irregular member {name!r} (the shard is unusable)"
                key = name.split(".", 1)[0]
                if not keys or keys[-1] != key:
                    keys.append(key)
    except (tarfile.TarError, OSError, EOFError) as exc:
        return keys, f"{path.name}: unreadable tar ({exc})"
    return keys, None


def header_keys(shards: list[Path], decoded: list[Path], problems: list[str], prefix: str = "") -> Counter:
    """Sample keys of every shard from its tar headers; a shard's problem is added unless the shard is decoded
    too (decoding names it then)."""
    keys: Counter = Counter()
    chosen = set(decoded)
    for shard in shards:
        shard_samples, unusable = shard_keys(shard)
        keys.update(shard_samples)
        if unusable and shard not in chosen:
            problems.append(prefix + unusable)
    return keys


def described(what: str, problems: list[str], ok: str) -> str:
    """A check's description: what was checked and, on failure, how many problems and the first ones in words."""
    if not problems:
        return f"{what}: {ok}"
    shown = "; ".join(problems[:SHOWN_PROBLEMS])
    more = f" (+{len(problems) - SHOWN_PROBLEMS} more in the problems metadata)" if len(problems) > SHOWN_PROBLEMS \
        else ""
    return f"{what}: {len(problems)} problem(s): {shown}{more}"


def check_result(what: str, problems: list[str], ok: str, metadata: dict) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=not problems, description=described(what, problems, ok),
                               metadata={**metadata, "problems": dg.MetadataValue.json(problems[:50])})


def missing_result(why: str, metadata: dict | None = None) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=False, description=why, metadata={**(metadata or {}), "error": why})


@dg.asset_check(asset=RENDERS, blocking=True, partitions_def=object_shards,
                description="The materialized version of the partition: files hash as in the manifest, per-split "
                            "counts match (tar headers of every shard), train and held-out uids disjoint and unique, "
                            "and a sample of shards decoded: every sample has all its views and cameras.")
def renders_3d_integrity(context: dg.AssetCheckExecutionContext,
                         artifacts: ArtifactStoreResource) -> dg.AssetCheckResult:
    key = context.partition_key
    return renders_partition_check(artifacts.store(), key, materialized_digest(context, RENDERS, key))


def renders_partition_check(store: ArtifactStore, key: str, digest: str | None = None,
                            max_decoded: int = MAX_DECODED_SHARDS) -> dg.AssetCheckResult:
    """The integrity check of one renders_3d partition's version ``digest`` (default: the current one; callable
    without a Dagster run)."""
    from vfusion3d_core.data.shards import iter_samples

    version, why = checked_version(store, RENDERS, key, digest)
    if version is None:
        return missing_result(why, {"partition": key})
    m = version.manifest
    problems = [f"{p} (does not hash as in the manifest)" if p.startswith("changed") else p
                for p in m.verify(version.path)]
    uids: dict[str, Counter] = {"train": Counter(), "heldout": Counter()}
    views_expected = m.config["num_views"]
    # a check lists every bad shard and sample (never stops at the first) and fails when there is any
    bad = SkipReport(BadItemPolicy.collect_all(), what="renders_3d_integrity")
    shards_total = decoded = samples_decoded = 0
    for split in uids:
        shards = version.files_under(split)
        shards_total += len(shards)
        chosen = sampled(shards, max_decoded, f"{m.digest}/{split}")
        uids[split] = header_keys(shards, chosen, problems, f"{split}/")
        decoded += len(chosen)
        for sample in iter_samples(chosen, bad):
            samples_decoded += 1
            if sample.num_views != views_expected:
                problems.append(f"{sample.key}: {sample.num_views} views, expected {views_expected}")
        dupes = sorted(k for k, n in uids[split].items() if n > 1)
        if dupes:
            problems.append(f"{len(dupes)} duplicate uid(s) in {split}, e.g. {dupes[:3]}")
        count, expected = sum(uids[split].values()), m.counts.get(f"{split}_objects", 0)
        if count != expected:
            problems.append(f"{split}: {count} samples in the shards, the manifest says {expected}")
    problems += bad.problems()
    overlap = set(uids["train"]) & set(uids["heldout"])
    if overlap:
        problems.append(f"{len(overlap)} uid(s) in both train and held-out, e.g. {sorted(overlap)[:3]}")
    listed = len(version.csv_rows("objects.csv"))
    if listed != m.counts["objects"]:
        problems.append(f"objects.csv lists {listed} objects, the manifest says {m.counts['objects']}")
    train, heldout = sum(uids["train"].values()), sum(uids["heldout"].values())
    return check_result(
        f"renders_3d[{key}] version {m.digest[:12]}", problems,
        f"{train} train + {heldout} held-out objects intact; {samples_decoded} samples of {decoded}/{shards_total} "
        "shards decoded",
        {"partition": key, "train": train, "heldout": heldout, "overlap": len(overlap), **bad.counts(),
         "shards": shards_total, "decoded_shards": decoded, "decoded_samples": samples_decoded,
         "version": version.path.name, "digest": m.digest})


@dg.asset_check(asset=SYNTHETIC, blocking=True, partitions_def=prompt_shards,
                description="The materialized version of the partition: files hash as in the manifest; one sample "
                            "per prompt of the shard (tar headers of every shard: no duplicates, none missing); a "
                            "sample of shards decoded: frames, seeds and the model digest consistent with the "
                            "manifest.")
def synthetic_videos_integrity(context: dg.AssetCheckExecutionContext,
                               artifacts: ArtifactStoreResource) -> dg.AssetCheckResult:
    key = context.partition_key
    return synthetic_partition_check(artifacts.store(), key, materialized_digest(context, SYNTHETIC, key))


def synthetic_partition_check(store: ArtifactStore, key: str, digest: str | None = None,
                              max_decoded: int = MAX_DECODED_SHARDS) -> dg.AssetCheckResult:
    """The integrity check of one synthetic_videos partition's version ``digest`` (default: the current one;
    callable without a Dagster run)."""
    from vfusion3d_core.data.video_sample import iter_video_samples
    from vfusion3d_core.video.synthesis import prompt_seed

    version, why = checked_version(store, SYNTHETIC, key, digest)
    if version is None:
        return missing_result(why, {"partition": key})
    m = version.manifest
    problems = [f"{p} (does not hash as in the manifest)" if p.startswith("changed") else p
                for p in m.verify(version.path)]
    shards = version.shards()
    chosen = sampled(shards, max_decoded, m.digest)
    keys = header_keys(shards, chosen, problems)
    decoded = 0
    bad = SkipReport(BadItemPolicy.collect_all(), what="synthetic_videos_integrity")
    for sample in iter_video_samples(chosen, bad):
        decoded += 1
        if sample.model_digest != m.inputs.get(VIDEO_MODEL):
            problems.append(f"{sample.key}: model digest {sample.model_digest[:12]} is not the manifest's input")
        if sample.seed != prompt_seed(m.config["base_seed"], sample.key):
            problems.append(f"{sample.key}: seed {sample.seed} does not follow from its prompt id")
        if sample.num_frames != sample.meta.get("num_frames"):
            problems.append(f"{sample.key}: {sample.num_frames} frames, meta says {sample.meta.get('num_frames')}")
    problems += bad.problems()  # every bad shard and sample, not only the first
    dupes = sorted(k for k, n in keys.items() if n > 1)
    if dupes:
        problems.append(f"{len(dupes)} duplicated sample(s), e.g. {dupes[:3]}")
    count = sum(keys.values())
    if count != m.counts.get("videos"):
        problems.append(f"{count} samples in the shards, the manifest says {m.counts.get('videos')} videos")
    return check_result(
        f"synthetic_videos[{key}] version {m.digest[:12]}", problems,
        f"{count} videos intact; {decoded} samples of {len(chosen)}/{len(shards)} shards decoded",
        {"partition": key, "samples": count, "duplicates": len(dupes), **bad.counts(), "shards": len(shards),
         "decoded_shards": len(chosen), "decoded_samples": decoded, "version": version.path.name,
         "digest": m.digest})


def prompt_set_problems(store: ArtifactStore, digest: str | None = None) -> tuple[list[str], dict]:
    """Problems of the published prompt set's version ``digest`` (default: the current one): damaged files,
    duplicate prompt ids, any shard whose sha256 differs between versions or from what a synthetic_videos partition
    recorded as its input, and prompts that are held-out captions of the latest source_objects listing (exact or
    MiniLM near duplicates; prompt_set excludes them when it is built after the listing, so this catches a set
    published before it)."""
    from vfusion3d_core.metrics.leakage import caption_leaks
    from vfusion3d_core.prompts.dedup import minilm_embedder
    from vfusion3d_core.prompts.shards import PromptShardError, read_prompt_shard
    from vfusion3d_pipeline.assets.prompts import heldout_captions

    version, why = checked_version(store, PROMPT_SET, None, digest)
    if version is None:
        return [why], {}
    problems = [f"{p} (does not hash as in the manifest)" if p.startswith("changed") else p
                for p in version.manifest.verify(version.path)]
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
        problems.append(f"shard(s) whose bytes changed between versions (published shards must never change): "
                        f"{changed[:5]}")
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
        {s for shas in seen.values() for s in shas}), "heldout_captions_compared": len(heldout),
        "digest": version.manifest.digest}


@dg.asset_check(asset=PROMPT_SET, blocking=True,
                description="The materialized version: shards hash as in the manifest, prompt ids unique across "
                            "shards, every shard's sha256 is the same in all versions and in the synthetic_videos "
                            "partitions made from it, and no prompt is (or nearly is) a held-out object's caption.")
def prompt_set_integrity(context: dg.AssetCheckExecutionContext,
                         artifacts: ArtifactStoreResource) -> dg.AssetCheckResult:
    problems, info = prompt_set_problems(artifacts.store(), materialized_digest(context, PROMPT_SET))
    what = f"prompt_set version {info['digest'][:12]}" if "digest" in info else "prompt_set"
    return check_result(what, problems, f"{info.get('prompts')} prompts in {info.get('shards')} shards intact",
                        info)


def filtered_partition_problems(store: ArtifactStore, key: str, digest: str | None = None,
                                max_decoded: int = MAX_DECODED_SHARDS) -> tuple[list[str], dict]:
    """Problems of one filtered_multiview_dataset partition's version ``digest`` (default: the current one):
    damaged files, count mismatch and duplicate keys (tar headers of every shard), sample keys that also appear in
    another partition, and in a sample of decoded shards samples whose view count differs from the synthetic
    videos' frame count or with non-finite cameras."""
    import numpy as np

    from vfusion3d_core.data.shards import iter_samples
    from vfusion3d_core.data.video_sample import iter_video_samples

    version, why = checked_version(store, FILTERED, key, digest)
    if version is None:
        return [why], {"partition": key}
    m = version.manifest
    problems = [f"{p} (does not hash as in the manifest)" if p.startswith("changed") else p
                for p in m.verify(version.path)]
    made_from = m.inputs.get(f"{SYNTHETIC}/{key}")  # the synthetic videos this version was filtered from
    synth = checked_version(store, SYNTHETIC, key, made_from)[0]
    frames = None
    if synth is not None:
        first = next(iter_video_samples(synth.shards()[:1], SkipReport(BadItemPolicy.collect_all())), None)
        frames = first.num_frames if first is not None else None
    shards = version.shards()
    chosen = sampled(shards, max_decoded, m.digest)
    keys = header_keys(shards, chosen, problems)
    decoded = 0
    bad = SkipReport(BadItemPolicy.collect_all(), what="filtered_multiview_integrity")
    for s in iter_samples(chosen, bad):
        decoded += 1
        if frames is not None and s.num_views != frames:
            problems.append(f"{s.key}: {s.num_views} views, the synthetic videos have {frames} frames")
        if not (np.isfinite(s.c2w).all() and np.isfinite(s.intrinsics).all()):
            problems.append(f"{s.key}: non-finite camera")
    problems += bad.problems()  # every bad shard and sample, not only the first
    count = sum(keys.values())
    if count != m.counts.get("kept"):
        problems.append(f"{count} samples in the shards, the manifest says {m.counts.get('kept')} kept")
    dupes = sorted(k for k, n in keys.items() if n > 1)
    if dupes:
        problems.append(f"{len(dupes)} duplicate sample key(s) inside the partition, e.g. {dupes[:3]}")
    for other in store.partitions(FILTERED):
        if other == key:
            continue
        ov = store.latest(FILTERED, other)
        if ov is None:
            continue
        for shard in ov.shards():
            clash = set(keys) & set(shard_keys(shard)[0])
            if clash:
                problems.append(f"sample key(s) also in partition {other}: {sorted(clash)[:3]}")
    return problems, {"partition": key, "samples": count, "views_per_sample": frames, **bad.counts(),
                      "shards": len(shards), "decoded_shards": len(chosen), "decoded_samples": decoded,
                      "digest": m.digest}


@dg.asset_check(asset=FILTERED, blocking=True, partitions_def=prompt_shards,
                description="The materialized version of the partition: files hash as in the manifest; sample count "
                            "= kept count and keys unique across all partitions (tar headers); in a sample of "
                            "decoded shards every kept sample has as many views as the synthetic videos have frames "
                            "(16 at tiny) with finite cameras.")
def filtered_multiview_integrity(context: dg.AssetCheckExecutionContext,
                                 artifacts: ArtifactStoreResource) -> dg.AssetCheckResult:
    key = context.partition_key
    problems, info = filtered_partition_problems(artifacts.store(), key, materialized_digest(context, FILTERED, key))
    what = f"filtered_multiview_dataset[{key}]" + (f" version {info['digest'][:12]}" if "digest" in info else "")
    return check_result(what, problems, f"{info.get('samples')} samples intact; {info.get('decoded_samples')} "
                        f"samples of {info.get('decoded_shards')}/{info.get('shards')} shards decoded", info)
