"""`prompt_set`: prompts from a file and/or the seeded template generator, normalized, deduplicated and
split into fixed-size parquet shards; each shard is a dynamic partition of `prompt_shards`.

Re-materializing after the source grew appends new shards only; published shard files never change.
Prompts matching a held-out caption of the current `source_objects` listing (exactly or as MiniLM near
duplicates) are excluded by construction; the listing's digest is recorded as the input ``source_objects``.

(No `from __future__ import annotations` in Dagster modules: Dagster resolves config and resource
annotations at decoration time.)
"""

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

from vfusion3d_core.code_versions import PROMPT_SET as CODE_VERSION
from vfusion3d_core.data import ArtifactStore, ArtifactVersion, ManifestError, sha256_file
from vfusion3d_core.objects.listing import read_listing
from vfusion3d_pipeline.asset_keys import PROMPT_SET
from vfusion3d_pipeline.assets.renders import LISTING_FILE, SOURCE
from vfusion3d_pipeline.metadata import materialize_result
from vfusion3d_pipeline.partitions import prompt_shards, register_partitions
from vfusion3d_pipeline.publish import publishing
from vfusion3d_pipeline.resources import ArtifactStoreResource, MLflowResource

if TYPE_CHECKING:
    from vfusion3d_core.prompts.promptset import PromptSetConfig

ASSET = PROMPT_SET


class PromptSetAssetConfig(dg.Config):
    """Where prompts come from and how they are cleaned and sharded."""

    source_file: str | None = Field(None, description="Prompt file: .txt (one prompt a line) / .csv / .parquet.")
    source_column: str = Field("prompt", description="Column of a CSV / parquet source.")
    template_count: int = Field(256, description="Prompts from the procedural-world template generator (0: none).")
    template_seed: int = Field(0, description="In [0, 2**32): templates use the procedural seeds 2**32 + seed, not "
                                              "the 3D world's.")
    shard_size: int = Field(64, description="Prompts per parquet shard (= per prompt_shards partition).")
    min_chars: int = Field(3, description="Shorter prompts are dropped.")
    max_chars: int = Field(200, description="Longer prompts are dropped.")
    near_dup_threshold: float = Field(0.95, description="MiniLM cosine at or above which a prompt is a near "
                                                        "duplicate.")

    def to_core(self) -> "PromptSetConfig":
        from vfusion3d_core.prompts.promptset import PromptSetConfig

        try:
            return PromptSetConfig(**self.model_dump()).validate()
        except (TypeError, ValueError) as exc:
            raise dg.Failure(f"invalid prompt_set config: {exc}") from exc


def minilm_embedder():
    """The MiniLM embedder of near-duplicate removal, imported on first use (tests stand in for this function)."""
    from vfusion3d_core.prompts.dedup import minilm_embedder as load

    return load()


def heldout_captions(store: ArtifactStore) -> tuple[list[str], dict[str, str]]:
    """Held-out captions of the latest source_objects listing and the input to record ({} without a listing)."""
    listing = store.latest(SOURCE)
    if listing is None:
        return [], {}
    rows = read_listing(listing.path / LISTING_FILE)
    return [r.caption for r in rows if r.split == "heldout"], {SOURCE: listing.digest}


def shard_lineage(previous: ArtifactVersion | None, staging: Path, files: list[str]) -> str:
    """prompt_set's Dagster data version: the same for every version of one append-only chain (an append copies
    the earlier shards byte for byte and only adds new ones), so a new shard leaves the synthetic_videos partitions
    of the earlier shards up to date (their staleness follows their own shard); a fresh build (no previous
    version) starts a new chain, marking every partition stale. Kept in the manifest's config for the next append."""
    if previous is not None:
        kept = previous.manifest.config.get("shard_lineage")
        if kept:
            return kept
        files, staging = [f.path for f in previous.manifest.files], previous.path  # a version older than chains
    shards = sorted(f for f in files if f.startswith("shards/"))
    return "shards-" + hashlib.sha256(json.dumps([(f, sha256_file(staging / f)) for f in shards]).encode()
                                      ).hexdigest()[:24]


@dg.asset(
    name=ASSET,
    deps=[SOURCE],
    group_name="prompts",
    kinds={"parquet", "pandas"},
    code_version=CODE_VERSION,
    description="Text prompts (file and/or seeded procedural templates): normalized, exact + MiniLM "
                "near-duplicate removal, prompts matching a held-out object's caption (source_objects) "
                "excluded, fixed-size parquet shards; each shard registers a prompt_shards partition. Growing "
                "the source appends shards; published shards never change.",
)
def prompt_set(context: dg.AssetExecutionContext, config: PromptSetAssetConfig, artifacts: ArtifactStoreResource,
               mlflow: MLflowResource) -> dg.MaterializeResult:
    from vfusion3d_core.prompts.promptset import build_prompt_set, collect_prompts
    from vfusion3d_core.prompts.sources import PromptSourceError

    cfg = config.to_core()
    try:
        collect_prompts(cfg)  # validate every source before touching the artifact root
    except PromptSourceError as exc:
        raise dg.Failure(f"bad prompt source: {exc}") from exc
    store = artifacts.store()
    heldout, listing_input = heldout_captions(store)
    if not listing_input:
        context.log.warning(f"no {SOURCE} listing yet: prompts are not checked against held-out captions")
    previous = store.latest(ASSET)
    if previous is not None:
        problems = previous.manifest.verify(previous.path)
        if problems:
            raise ManifestError(f"published prompt_set {previous.path.name} is damaged: {problems[:5]}")
    with publishing(context, store, mlflow, ASSET, CODE_VERSION) as pub:
        try:
            result = build_prompt_set(cfg, pub.staging, minilm_embedder(), previous and previous.path,
                                      previous and previous.manifest, heldout)
        except PromptSourceError as exc:
            raise dg.Failure(f"bad prompt source: {exc}") from exc
        lineage = shard_lineage(previous, pub.staging, result.files)
        run_config = {**config.model_dump(), "sources": result.sources, "shard_lineage": lineage}
        pub.run.log_params(config.model_dump())
        # new_shards / new_prompts describe this run (relative to the previous version), not the content: kept
        # out of the digest, so a re-run on the same source (e.g. after a kill past the commit) is the same version
        content_counts = {k: v for k, v in result.counts.items() if not k.startswith("new_")}
        version = pub.commit(result.files, content_counts, run_config, inputs=listing_input)
        pub.run.log_metrics({**{f"count_{k}": v for k, v in result.counts.items()}, **result.stats})
    added = register_partitions(context.instance, prompt_shards, result.shard_keys)
    context.log.info(f"committed {ASSET} version {version.path.name}: {result.counts['shards']} shards, "
                     f"{len(result.new_keys)} new {result.new_keys[:5]}; registered {len(added)} partition(s); "
                     f"dedup {result.stats}; excluded {len(result.heldout_excluded)} prompt(s) matching held-out "
                     f"captions {[m.training for m in result.heldout_excluded[:5]]}")
    return materialize_result(version, data_version=lineage, extra={
        "new_shards": dg.MetadataValue.json(result.new_keys),
        **{f"count/{k}": v for k, v in result.counts.items() if k.startswith("new_")},
        "registered_partitions": dg.MetadataValue.json(added),
        "dedup": dg.MetadataValue.json(result.stats),
        "near_duplicate_examples": dg.MetadataValue.json([list(p) for p in result.near_pairs[:10]]),
        "heldout_excluded": len(result.heldout_excluded),
        "heldout_excluded_examples": dg.MetadataValue.json([m.as_list() for m in result.heldout_excluded[:10]]),
        "mlflow_run_id": pub.run.run_id,
    })
