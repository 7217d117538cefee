"""Caption leakage: held-out object captions found in training data, exactly or as near duplicates.

Held-out ids being absent from the training data is not enough: a synthetic sample is identified by its prompt,
and a prompt that *is* a held-out object's caption makes the video model draw that object, so the LRM trains on
it. Captions are compared two ways:

* exact: equal after the prompt normalization of `prompt_set` (``prompts.sources.normalize_prompt``: NFKC,
  control / format characters removed, whitespace collapsed; no truncation here) and case folding
  (``prompts.dedup.dedup_key``), so "A red  box" is an exact match of "a red box";
* near duplicate: cosine of the MiniLM sentence embeddings (``prompts.dedup.minilm_embedder``) at or above
  ``threshold``. The default, 0.95, is the threshold `prompt_set` already uses to call two prompts the same
  (measured: "a red box" vs "a red box." 0.98, vs "a small red box" 0.92, vs "a red cube" 0.63). MiniLM is
  nearly blind to attribute swaps ("a red torus on a blue box" vs "a blue torus on a red box" ~0.99), so such
  pairs count as near duplicates: erring towards calling a caption leaked.

Pure functions; the embedder is passed in (tests and the pipeline use the real MiniLM).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from vfusion3d_core.prompts.dedup import Embedder, dedup_key
from vfusion3d_core.prompts.sources import normalize_prompt
from vfusion3d_core.thresholds import NEAR_DUP_THRESHOLD  # re-exported: defined where it imports nothing

BLOCK = 4096  # training captions compared per matrix product (bounds memory at 100k captions)


def caption_key(text: str) -> str:
    """The exact-match key of a caption: prompt normalization without truncation, case folded ("" if empty)."""
    s, _ = normalize_prompt(text, 1, max(len(text), 1))
    return dedup_key(s) if s is not None else ""


@dataclass(frozen=True)
class CaptionMatch:
    """A training caption that matches a held-out caption; ``cosine`` is 1.0 for an exact match."""

    training: str
    heldout: str
    cosine: float
    exact: bool

    def as_list(self) -> list:
        return [self.training, self.heldout, round(self.cosine, 4)]


@dataclass
class SourceLeaks:
    """Matches of one named training source (distinct training captions, each matched once)."""

    captions: int  # distinct training captions compared
    exact: list[CaptionMatch] = field(default_factory=list)
    near: list[CaptionMatch] = field(default_factory=list)

    @property
    def leaked(self) -> bool:
        return bool(self.exact or self.near)

    def heldout_hit(self) -> set[str]:
        """The held-out captions this source contains (exactly or nearly)."""
        return {m.heldout for m in self.exact + self.near}

    def summary(self, max_examples: int = 5) -> dict:
        return {"captions": self.captions, "exact": len(self.exact), "near": len(self.near),
                "heldout_captions_hit": len(self.heldout_hit()),
                "exact_examples": [m.as_list() for m in self.exact[:max_examples]],
                "near_examples": [m.as_list() for m in self.near[:max_examples]]}


@dataclass
class LeakageReport:
    heldout: int  # distinct held-out captions
    threshold: float
    sources: dict[str, SourceLeaks]

    def leaking(self) -> dict[str, SourceLeaks]:
        return {n: s for n, s in self.sources.items() if s.leaked}

    def describe(self, max_examples: int = 3) -> str:
        """One sentence per leaking source, with examples; "" when nothing leaks."""
        lines = []
        for name, s in self.leaking().items():
            parts = []
            if s.exact:
                parts.append(f"{len(s.exact)} exact match(es) of held-out captions, e.g. "
                             + ", ".join(repr(m.training) for m in s.exact[:max_examples]))
            if s.near:
                parts.append(f"{len(s.near)} near duplicate(s) (MiniLM cosine >= {self.threshold}), e.g. "
                             + ", ".join(f"{m.training!r} ~ held-out {m.heldout!r} ({m.cosine:.3f})"
                                         for m in s.near[:max_examples]))
            lines.append(f"{name}: " + "; ".join(parts) + f" ({len(s.heldout_hit())} of {self.heldout} held-out "
                         f"captions hit)")
        return "\n".join(lines)

    def to_dict(self, max_examples: int = 5) -> dict:
        return {"heldout_captions": self.heldout, "threshold": self.threshold,
                "sources": {n: s.summary(max_examples) for n, s in self.sources.items()}}


def match_captions(heldout: Iterable[str], candidates: list[str], embed: Embedder | None,
                   threshold: float = NEAR_DUP_THRESHOLD) -> list[CaptionMatch | None]:
    """For each candidate: its exact match among the held-out captions, else its most similar held-out caption when
    the cosine is at least ``threshold``, else None. ``embed=None`` compares exactly only."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"near-duplicate cosine threshold must be in (0, 1], got {threshold}")
    held: dict[str, str] = {}
    for h in heldout:
        k = caption_key(h)
        if k:
            held.setdefault(k, h)
    out: list[CaptionMatch | None] = []
    pending: list[int] = []  # candidates without an exact match, compared by embedding
    for i, c in enumerate(candidates):
        k = caption_key(c)
        if k and k in held:
            out.append(CaptionMatch(c, held[k], 1.0, True))
        else:
            out.append(None)
            if k:
                pending.append(i)
    if embed is None or not held or not pending:
        return out
    held_texts = list(held.values())
    emb_held = np.asarray(embed(held_texts), np.float32)
    if emb_held.ndim != 2 or len(emb_held) != len(held_texts):
        raise ValueError(f"embedder returned shape {emb_held.shape} for {len(held_texts)} texts")
    for start in range(0, len(pending), BLOCK):
        block = pending[start:start + BLOCK]
        emb = np.asarray(embed([candidates[i] for i in block]), np.float32)
        sim = emb @ emb_held.T
        best = sim.argmax(1)
        for row, i in enumerate(block):
            cosine = float(sim[row, best[row]])
            if cosine >= threshold:
                out[i] = CaptionMatch(candidates[i], held_texts[best[row]], cosine, False)
    return out


def caption_leaks(heldout: Iterable[str], sources: Mapping[str, Iterable[str]], embed: Embedder | None,
                  threshold: float = NEAR_DUP_THRESHOLD) -> LeakageReport:
    """Held-out captions found in each named training source (distinct captions compared once per source).

    Embeddings are cached across sources, so a caption shared by several sources (a checkpoint's data seen
    through the checkpoint trained on it) is embedded once."""
    held = list(dict.fromkeys(heldout))
    cache: dict[str, np.ndarray] = {}

    def cached(texts: list[str]) -> np.ndarray:
        new = [t for t in dict.fromkeys(texts) if t not in cache]
        if new:
            cache.update(zip(new, np.asarray(embed(new), np.float32), strict=True))  # type: ignore[misc]
        return np.stack([cache[t] for t in texts]) if texts else np.zeros((0, 1), np.float32)

    report = LeakageReport(len({caption_key(h) for h in held} - {""}), threshold, {})
    for name, captions in sources.items():
        distinct = list(dict.fromkeys(captions))
        leaks = SourceLeaks(len(distinct))
        for m in match_captions(held, distinct, cached if embed is not None else None, threshold):
            if m is not None:
                (leaks.exact if m.exact else leaks.near).append(m)
        report.sources[name] = leaks
    return report
