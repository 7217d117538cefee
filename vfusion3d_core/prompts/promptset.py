"""Build / grow a prompt set: sources -> normalization -> dedup -> new fixed-size shards.

A prompt set version holds ``shards/shard-NNNNNN.parquet`` (format: ``prompts/shards.py``). Growing the
set never rewrites a shard: the previous version's shard files are copied byte for byte (their sha256
is checked against the previous manifest) and the prompts that are new -- not exact or near duplicates
of anything already published -- go into new shards numbered after the existing ones, ``shard_size``
prompts each (the last new shard may be smaller; it is never refilled later). A prompt's id is
``p`` + the first 16 hex digits of sha256 of its case-folded text, so ids are stable across rebuilds.

Held-out objects stay out of the prompts by construction: given the held-out captions of the 3D listing, a new
prompt that matches one exactly or as a near duplicate (``metrics/leakage.py``: prompt normalization + case
folding, MiniLM cosine >= 0.95) is excluded and counted (``heldout_exact`` / ``heldout_near``). Published shards
are never rewritten, so an excluded prompt simply never enters the set.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from vfusion3d_core import code_versions
from vfusion3d_core.data.bad_items import SkipReport
from vfusion3d_core.data.manifest import Manifest, ManifestError, sha256_file
from vfusion3d_core.prompts.dedup import Embedder, dedup_key, deduplicate
from vfusion3d_core.prompts.shards import (
    KEY_RE,
    SHARD_DIR,
    PromptRecord,
    read_prompt_shard,
    shard_key,
    shard_relpath,
    write_prompt_shard,
)
from vfusion3d_core.prompts.sources import TEMPLATE_SEED_BASE, normalize_all, read_prompt_file, template_prompts

if TYPE_CHECKING:  # metrics.leakage imports this package: imported where used
    from vfusion3d_core.metrics.leakage import CaptionMatch

CODE_VERSION = code_versions.PROMPT_SET  # vfusion3d_core/code_versions.py: bump it there


@dataclass
class PromptSetConfig:
    source_file: str | None = None  # .txt / .csv / .parquet
    source_column: str = "prompt"
    template_count: int = 0  # prompts from the seeded procedural-world template generator
    template_seed: int = 0
    shard_size: int = 64
    min_chars: int = 3
    max_chars: int = 200
    near_dup_threshold: float = 0.95  # cosine of MiniLM sentence embeddings

    def validate(self) -> PromptSetConfig:
        if self.shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {self.shard_size}")
        if self.template_count < 0:
            raise ValueError(f"template_count must be >= 0, got {self.template_count}")
        if not 0 <= self.template_seed < TEMPLATE_SEED_BASE:
            raise ValueError(f"template_seed must be in [0, 2**32), got {self.template_seed}")
        if self.source_file is None and self.template_count == 0:
            raise ValueError("no prompt source: set source_file and/or template_count")
        if not 0.0 < self.near_dup_threshold <= 1.0:
            raise ValueError(f"near_dup_threshold must be in (0, 1], got {self.near_dup_threshold}")
        if not 1 <= self.min_chars <= self.max_chars:
            raise ValueError(f"need 1 <= min_chars <= max_chars, got {self.min_chars}, {self.max_chars}")
        return self


@dataclass
class PromptSetResult:
    files: list[str]
    counts: dict[str, int]
    shard_keys: list[str]
    new_keys: list[str]
    stats: dict[str, int] = field(default_factory=dict)
    near_pairs: list[tuple[str, str, float]] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)  # source -> sha256 (file) or description
    heldout_excluded: list[CaptionMatch] = field(default_factory=list)  # new prompts matching held-out captions


def prompt_id(prompt: str) -> str:
    return "p" + hashlib.sha256(dedup_key(prompt).encode()).hexdigest()[:16]


def collect_prompts(cfg: PromptSetConfig, report: SkipReport | None = None) -> tuple[list[str], dict[str, str]]:
    """Raw prompts of every configured source (file first, then templates) and a description of each; bad lines
    of the file are skipped and counted in ``report`` (the bad-item policy)."""
    raw: list[str] = []
    sources: dict[str, str] = {}
    if cfg.source_file is not None:
        raw += read_prompt_file(cfg.source_file, cfg.source_column, report)
        sources["file"] = str(Path(cfg.source_file).resolve())
        sources["file_sha256"] = sha256_file(cfg.source_file)
    if cfg.template_count:
        raw += template_prompts(cfg.template_count, cfg.template_seed)
        sources["templates"] = f"procedural seed={cfg.template_seed} count={cfg.template_count}"
    return raw, sources


def existing_shards(previous: Path | None, manifest: Manifest | None) -> list[tuple[str, Path, str]]:
    """(key, path, sha256) of the shards of a published version, in key order, each verified."""
    if previous is None or manifest is None:
        return []
    out = []
    for f in sorted(manifest.files, key=lambda f: f.path):
        if not f.path.startswith(f"{SHARD_DIR}/"):
            continue
        key = f.path[len(SHARD_DIR) + 1:].removesuffix(".parquet")
        if not KEY_RE.match(key):
            raise ManifestError(f"{previous}: unexpected shard file {f.path}")
        p = previous / f.path
        if sha256_file(p) != f.sha256:
            raise ManifestError(f"{p}: does not match its manifest hash; a published shard changed")
        out.append((key, p, f.sha256))
    expected = [shard_key(i) for i in range(len(out))]
    if [k for k, _, _ in out] != expected:
        raise ManifestError(f"{previous}: shard keys are not contiguous from shard-000000")
    return out


def build_prompt_set(cfg: PromptSetConfig, out_dir: str | Path, embed: Embedder, previous: Path | None = None,
                     previous_manifest: Manifest | None = None, heldout: list[str] | None = None,
                     heldout_threshold: float | None = None) -> PromptSetResult:
    """Write the grown prompt set into ``out_dir`` (a staging dir): old shards copied verbatim + new shards.

    Every source is read and validated before anything is written, so a bad source raises
    PromptSourceError and leaves ``out_dir`` empty. New prompts matching a ``heldout`` caption (exactly or with
    MiniLM cosine >= ``heldout_threshold``, default ``leakage.NEAR_DUP_THRESHOLD``) are excluded and reported in
    ``heldout_excluded``.
    """
    from vfusion3d_core.metrics.leakage import NEAR_DUP_THRESHOLD, match_captions

    cfg.validate()
    report = SkipReport(what="reading prompts")
    raw, sources = collect_prompts(cfg, report)
    normalized, nstats = normalize_all(raw, cfg.min_chars, cfg.max_chars)
    old = existing_shards(previous, previous_manifest)
    existing = [r.prompt for _, p, _ in old for r in read_prompt_shard(p)]
    dd = deduplicate(normalized, existing, embed, cfg.near_dup_threshold)
    matches = match_captions(heldout or [], dd.kept, embed,
                             NEAR_DUP_THRESHOLD if heldout_threshold is None else heldout_threshold)
    excluded = [m for m in matches if m is not None]
    dd.kept = [p for p, m in zip(dd.kept, matches, strict=True) if m is None]
    out = Path(out_dir)
    files = []
    for key, p, sha in old:
        rel = shard_relpath(key)
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, out / rel)
        if sha256_file(out / rel) != sha:
            raise ManifestError(f"copy of {p} does not hash as published")
        files.append(rel)
    new_keys = []
    for start in range(0, len(dd.kept), cfg.shard_size):
        key = shard_key(len(old) + len(new_keys))
        chunk = dd.kept[start:start + cfg.shard_size]
        write_prompt_shard(out / shard_relpath(key), [PromptRecord(prompt_id(t), t) for t in chunk])
        files.append(shard_relpath(key))
        new_keys.append(key)
    keys = [k for k, _, _ in old] + new_keys
    stats = {**{f"normalize_{k}": v for k, v in nstats.as_dict().items()}, "exact_duplicates": dd.exact,
             "near_duplicates": dd.near, "heldout_exact": sum(m.exact for m in excluded),
             "heldout_near": sum(not m.exact for m in excluded), "new_prompts": len(dd.kept),
             "skipped_rows": report.skipped("row")}
    counts = {"shards": len(keys), "prompts": len(existing) + len(dd.kept), "new_shards": len(new_keys),
              "new_prompts": len(dd.kept)}
    return PromptSetResult(files, counts, keys, new_keys, stats, dd.near_pairs, sources, excluded)
