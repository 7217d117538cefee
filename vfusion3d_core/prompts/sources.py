"""Prompt sources (a text / CSV / parquet file, a seeded template generator) and normalization.

Normalization of one prompt: Unicode NFKC; every control / format character (category Cc, Cf: NUL,
escape sequences, zero-width characters, the bidi overrides U+202A-U+202E and isolates U+2066-U+2069)
becomes a space; runs of whitespace collapse to one space; leading/trailing space is stripped.
Empty results are dropped, prompts shorter than ``min_chars`` are dropped, longer than ``max_chars``
are cut at the last word boundary that fits.
"""

from __future__ import annotations

import io
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from vfusion3d_core.data.bad_items import SkipReport, TooManyBadItems
from vfusion3d_core.objects.procedural import ProceduralObjectGenerator

FORMATS = {".txt": "text", ".text": "text", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
MAX_SOURCE_BYTES = 1 << 30


class PromptSourceError(ValueError):
    """A prompt source file that cannot be used (missing, binary, wrong column, empty); names the file."""


@dataclass
class NormalizeStats:
    raw: int = 0
    empty: int = 0
    too_short: int = 0
    truncated: int = 0
    kept: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


def normalize_prompt(text: str, min_chars: int = 3, max_chars: int = 200) -> tuple[str | None, bool]:
    """(normalized prompt or None when it must be dropped, whether it was truncated)."""
    if min_chars < 1 or max_chars < min_chars:
        raise ValueError(f"need 1 <= min_chars <= max_chars, got {min_chars}, {max_chars}")
    s = _clean(text)
    truncated = False
    if len(s) > max_chars:
        head = s[:max_chars + 1]
        cut = head.rfind(" ")
        s = (head[:cut] if cut > 0 else s[:max_chars]).rstrip(" ,;:-")
        truncated = True
    if len(s) < min_chars:
        return None, truncated
    return s, truncated


def _clean(text: str) -> str:
    s = unicodedata.normalize("NFKC", text)
    s = "".join(" " if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c for c in s)
    return " ".join(s.split())


def normalize_all(texts: list[str], min_chars: int = 3, max_chars: int = 200) -> tuple[list[str], NormalizeStats]:
    stats = NormalizeStats(raw=len(texts))
    out = []
    for t in texts:
        if not _clean(t):
            stats.empty += 1
            continue
        s, truncated = normalize_prompt(t, min_chars, max_chars)
        if s is None:
            stats.too_short += 1
            continue
        stats.truncated += int(truncated)
        out.append(s)
    stats.kept = len(out)
    return out, stats


def read_prompt_file(path: str | Path, column: str = "prompt", report: SkipReport | None = None) -> list[str]:
    """Raw prompts of a .txt (one per line), .csv or .parquet (column ``column``) file, in file order.

    A text / CSV line holding a NUL byte is a bad row under the bad-item policy (data/bad_items.py): skipped with
    a warning naming ``file:line`` and counted in ``report`` (``skipped_rows``); above the policy's share (1 %)
    or when no line is left the file is refused as binary. Raises PromptSourceError naming the file when it is
    missing, binary / not UTF-8, lacks the column, holds non-text values in it, or holds no prompt at all.
    """
    p = Path(path)
    kind = FORMATS.get(p.suffix.lower())
    if kind is None:
        raise PromptSourceError(f"{p}: unsupported prompt file type {p.suffix!r} (use .txt, .csv or .parquet)")
    if not p.is_file():
        raise PromptSourceError(f"{p}: no such prompt file")
    if p.stat().st_size > MAX_SOURCE_BYTES:
        raise PromptSourceError(f"{p}: larger than {MAX_SOURCE_BYTES} bytes")
    data = p.read_bytes()
    if kind == "parquet":
        try:
            df = pd.read_parquet(io.BytesIO(data), engine="pyarrow")
        except Exception as exc:  # pyarrow raises several unrelated types for a non-parquet file
            raise PromptSourceError(f"{p}: not a readable parquet file: {exc}") from exc
        prompts = _column(df, column, p)
    else:
        data = _drop_nul_lines(p, data, kind, report)
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise PromptSourceError(f"{p}: not UTF-8 text ({exc})") from exc
        if kind == "text":
            prompts = text.splitlines()
        else:
            try:
                df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
            except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
                raise PromptSourceError(f"{p}: malformed CSV: {exc}") from exc
            prompts = _column(df, column, p)
    if not any(s.strip() for s in prompts):
        raise PromptSourceError(f"{p}: no prompts (the file is empty or holds only blank lines)")
    return prompts


def _drop_nul_lines(p: Path, data: bytes, kind: str, report: SkipReport | None) -> bytes:
    """``data`` without its lines holding NUL bytes, each recorded as a skipped row; PromptSourceError (binary
    data) when they are over the policy's share or nothing else is left."""
    if b"\x00" not in data:
        return data
    report = report if report is not None else SkipReport(what="reading prompts")
    kept = []
    for n, line in enumerate(data.split(b"\n"), start=1):
        if b"\x00" in line:
            report.skip("row", f"{p}:{n}", "line", "binary data (NUL byte)")
        else:
            if line.strip():
                report.ok("row")
            kept.append(line)
    try:
        report.check()
    except TooManyBadItems as exc:
        raise PromptSourceError(f"{p}: binary data (NUL bytes) in a {kind} prompt file: {exc}") from exc
    return b"\n".join(kept)


def _column(df: pd.DataFrame, column: str, p: Path) -> list[str]:
    if column not in df.columns:
        raise PromptSourceError(f"{p}: no column {column!r} (columns: {list(map(str, df.columns))[:10]})")
    values = df[column].tolist()
    bad = [v for v in values if not (isinstance(v, str) or v is None or (isinstance(v, float) and np.isnan(v)))]
    if bad:
        raise PromptSourceError(f"{p}: column {column!r} holds non-text values, e.g. {bad[0]!r}")
    return [v if isinstance(v, str) else "" for v in values]


# Template prompts are drawn from the procedural world's vocabulary but from its seeds shifted by 2**32, so they
# never replay the captions (and held-out draw) of a 3D world built with a seed in [0, 2**32): with equal seeds the
# two streams were identical, and every held-out object's caption was a prompt. Chance collisions of short
# captions remain (8 kinds x 12 colours x 6 materials single parts); prompt_set removes those by comparing with the
# held-out captions.
TEMPLATE_SEED_BASE = 1 << 32


def template_prompts(count: int, seed: int = 0, max_parts: int = 3) -> list[str]:
    """``count`` captions of the procedural vocabulary (kinds x colours x materials x arrangements), seeded.

    They are the captions ``ProceduralObjectGenerator(TEMPLATE_SEED_BASE + seed)`` gives its objects: objects like
    those the tiny video model has seen, but not the 3D world's own objects (whose seeds are below 2**32).
    """
    if count < 0:
        raise ValueError("count must be >= 0")
    if not 0 <= seed < TEMPLATE_SEED_BASE:
        raise ValueError(f"template seed must be in [0, 2**32), got {seed}")
    gen = ProceduralObjectGenerator(TEMPLATE_SEED_BASE + seed, max_parts)
    return [gen.spec(i).caption for i in range(count)]
