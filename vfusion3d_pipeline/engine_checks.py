"""Asset checks of the data engine: prompt shards immutable, filtered samples well-formed and unique."""

from collections import Counter, defaultdict

import dagster as dg

from vfusion3d_core.data import ArtifactStore, Manifest, ManifestError
from vfusion3d_core.data.manifest import MANIFEST_NAME
from vfusion3d_core.prompts.shards import PromptShardError, read_prompt_shard
from vfusion3d_pipeline.resources import ArtifactStoreResource

PROMPT_SET = "prompt_set"
SYNTHETIC = "synthetic_videos"


def prompt_set_problems(store: ArtifactStore) -> tuple[list[str], dict]:
    """Problems of the published prompt set: damaged files, duplicate prompt ids, and any shard whose sha256
    differs between versions or from what a synthetic_videos partition recorded as its input."""
    version = store.latest(PROMPT_SET)
    if version is None:
        return ["no committed version"], {}
    problems = version.manifest.verify(version.path)
    ids: Counter = Counter()
    shard_files = [f for f in version.manifest.files if f.path.startswith("shards/")]
    for f in shard_files:
        try:
            ids.update(r.prompt_id for r in read_prompt_shard(version.path / f.path))
        except PromptShardError as exc:
            problems.append(str(exc))
    dupes = [k for k, n in ids.items() if n > 1]
    if dupes:
        problems.append(f"{len(dupes)} prompt id(s) in more than one place, e.g. {dupes[:3]}")
    seen: dict[str, set[str]] = defaultdict(set)
    versions_dir = store.asset_dir(PROMPT_SET) / "versions"
    for d in sorted(versions_dir.iterdir()) if versions_dir.is_dir() else []:
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
    return problems, {"shards": len(shard_files), "prompts": sum(ids.values()), "versions_seen": len(
        {s for shas in seen.values() for s in shas})}


@dg.asset_check(asset=PROMPT_SET, blocking=True,
                description="Shards hash as in the manifest, prompt ids unique across shards, and every shard's "
                            "sha256 is the same in all versions and in the synthetic_videos partitions made from it.")
def prompt_set_integrity(artifacts: ArtifactStoreResource) -> dg.AssetCheckResult:
    problems, info = prompt_set_problems(artifacts.store())
    return dg.AssetCheckResult(passed=not problems,
                               metadata={**info, "problems": dg.MetadataValue.json(problems[:50])})
