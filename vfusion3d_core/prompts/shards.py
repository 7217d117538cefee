"""Prompt shard files: the unit of work of `synthetic_videos` (one Dagster partition per shard).

A shard is one parquet file with exactly two string columns, ``prompt_id`` (unique within the set) and
``prompt``, in a fixed order. The `prompt_set` artifact (unpartitioned) holds them as
``shards/<shard_key>.parquet`` with keys ``shard-000000``, ``shard-000001``, ...; a shard's bytes never
change once published, so a consumer records the sha256 of the one file it read as its input digest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from vfusion3d_core.data.files import atomic_write_bytes

SHARD_DIR = "shards"
COLUMNS = ("prompt_id", "prompt")
KEY_RE = re.compile(r"^shard-\d{6}$")


class PromptShardError(ValueError):
    """A prompt shard that is missing, malformed or inconsistent."""


@dataclass(frozen=True)
class PromptRecord:
    prompt_id: str
    prompt: str


def shard_key(index: int) -> str:
    """Partition / file key of shard ``index`` ("shard-000000")."""
    if index < 0:
        raise ValueError(f"shard index must be >= 0, got {index}")
    return f"shard-{index:06d}"


def shard_relpath(key: str) -> str:
    """Path of a shard inside a prompt_set version ("shards/shard-000000.parquet")."""
    if not KEY_RE.match(key):
        raise PromptShardError(f"invalid prompt shard key {key!r} (expected shard-NNNNNN)")
    return f"{SHARD_DIR}/{key}.parquet"


def write_prompt_shard(path: str | Path, records: list[PromptRecord] | pd.DataFrame) -> Path:
    """Atomically write a shard; ids must be unique non-empty strings, prompts non-empty strings."""
    df = records if isinstance(records, pd.DataFrame) else pd.DataFrame(
        [(r.prompt_id, r.prompt) for r in records], columns=list(COLUMNS))
    df = _validate(df[list(COLUMNS)] if set(COLUMNS) <= set(df.columns) else df, str(path))
    import io

    buf = io.BytesIO()
    df.to_parquet(buf, index=False, engine="pyarrow", compression="zstd")
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def read_prompt_shard(path: str | Path) -> list[PromptRecord]:
    """Records of a shard, in file order."""
    p = Path(path)
    if not p.is_file():
        raise PromptShardError(f"{p}: no such prompt shard")
    try:
        df = pd.read_parquet(p, engine="pyarrow")
    except (OSError, ValueError) as exc:
        raise PromptShardError(f"{p}: unreadable parquet: {exc}") from exc
    df = _validate(df, str(p))
    return [PromptRecord(str(i), str(t)) for i, t in zip(df["prompt_id"], df["prompt"], strict=True)]


def _validate(df: pd.DataFrame, source: str) -> pd.DataFrame:
    if tuple(df.columns) != COLUMNS:
        raise PromptShardError(f"{source}: columns {list(df.columns)}, expected {list(COLUMNS)}")
    for col in COLUMNS:
        if not all(isinstance(v, str) and v.strip() for v in df[col]):
            raise PromptShardError(f"{source}: column {col!r} must hold non-empty strings")
    dup = df["prompt_id"][df["prompt_id"].duplicated()]
    if len(dup):
        raise PromptShardError(f"{source}: duplicate prompt_id(s) {sorted(set(dup))[:3]}")
    if any(any(c in v for c in "./\\") or v.startswith("_") for v in df["prompt_id"]):
        raise PromptShardError(f"{source}: prompt_id may not contain '.', '/', '\\\\' or start with '_'")
    return df.reset_index(drop=True).astype({"prompt_id": "string", "prompt": "string"}).astype(object)
