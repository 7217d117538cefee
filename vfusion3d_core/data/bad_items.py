"""The bad-item policy of batch inputs: one bad item never stops a batch.

A batch input is a set of independent items read in one run: samples in WebDataset shards, shards in a
dataset, rows of a labels CSV or a prompt file. With millions of items some are corrupt; a run must not end on
the first one. The policy, in one place:

* a bad item is **skipped** with a warning naming the file, the item (tar member / sample key / line) and the
  reason, and **counted** (``skipped_samples``, ``skipped_shards``, ``skipped_rows``);
* the run **fails** (``TooManyBadItems``, naming the first culprits) only when the skipped share of a kind
  exceeds ``BadItemPolicy.max_bad_fraction`` (default 1 %) or when no usable item is left;
* security refusals (unsafe tar members, pickled arrays) stay refusals: the item is never extracted or
  unpickled; it is skipped and reported like any other bad item.

Integrity checks use ``BadItemPolicy.collect_all()``: they never raise, they list every bad item.
See docs/reliability.md, "Bad items in batch inputs".
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

LOG = logging.getLogger("vfusion3d.bad_items")
# Kinds of items and the plural used in the counters (skipped_<plural>).
KINDS = {"sample": "samples", "shard": "shards", "row": "rows"}
SHOWN_CULPRITS = 10


class TooManyBadItems(ValueError):
    """More bad items than the policy allows (or nothing usable left); the message names the first culprits."""


@dataclass(frozen=True)
class BadItemPolicy:
    """``max_bad_fraction``: the largest skipped share (bad / (good + bad), per kind) a run tolerates.
    ``fail_when_empty``: fail when items were seen but none was usable."""

    max_bad_fraction: float = 0.01
    fail_when_empty: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_bad_fraction <= 1.0:
            raise ValueError(f"max_bad_fraction must be in [0, 1], got {self.max_bad_fraction}")

    @classmethod
    def collect_all(cls) -> BadItemPolicy:
        """Never fail: integrity checks collect every bad item and report them themselves."""
        return cls(max_bad_fraction=1.0, fail_when_empty=False)


@dataclass(frozen=True)
class BadItem:
    """One skipped item: ``kind`` (sample / shard / row), ``source`` (file or URL), ``item`` (member, key or
    line), ``reason``."""

    kind: str
    source: str
    item: str
    reason: str

    def __str__(self) -> str:
        return f"{self.source}: {self.item}: {self.reason}"


@dataclass
class SkipReport:
    """Collects the good and bad items of one batch run under a ``BadItemPolicy``."""

    policy: BadItemPolicy = field(default_factory=BadItemPolicy)
    what: str = "batch"
    good: Counter = field(default_factory=Counter)
    bad: list[BadItem] = field(default_factory=list)

    def ok(self, kind: str) -> None:
        """Count one usable item of ``kind``."""
        _check_kind(kind)
        self.good[kind] += 1

    def skip(self, kind: str, source: str, item: str, reason: str) -> BadItem:
        """Record one bad item (logged as a warning naming it) and return it."""
        _check_kind(kind)
        bad = BadItem(kind, str(source), str(item), str(reason))
        self.bad.append(bad)
        LOG.warning("%s: skipped bad %s %s", self.what, kind, bad)
        return bad

    def skipped(self, kind: str) -> int:
        """Number of skipped items of ``kind``."""
        _check_kind(kind)
        return sum(1 for b in self.bad if b.kind == kind)

    def counts(self) -> dict[str, int]:
        """``{"skipped_samples": n, "skipped_shards": n, "skipped_rows": n}`` (every kind, zeros included)."""
        return {f"skipped_{plural}": self.skipped(kind) for kind, plural in KINDS.items()}

    def usable(self) -> int:
        """Good items of the finest kind met (samples, else rows, else shards): what the run can go on with."""
        for kind in ("sample", "row", "shard"):
            if self.good[kind] or self.skipped(kind):
                return self.good[kind]
        return 0

    def problems(self) -> list[str]:
        """Every bad item as ``source: item: reason``, in the order met."""
        return [str(b) for b in self.bad]

    def over_share(self) -> list[str]:
        """The kinds whose skipped share exceeds the policy, as ``'3 of 10 samples (30.0%)'``."""
        out = []
        for kind, plural in KINDS.items():
            bad = self.skipped(kind)
            total = bad + self.good[kind]
            if bad and bad / total > self.policy.max_bad_fraction:
                out.append(f"{bad} of {total} {plural} ({100 * bad / total:.1f}%)")
        return out

    def check(self, shown: int | None = SHOWN_CULPRITS) -> None:
        """Raise TooManyBadItems when the skipped share of a kind exceeds the policy or (``fail_when_empty``)
        when bad items were met and no usable item was left (see ``usable``); the message names the first
        ``shown`` bad items (all of them when None)."""
        over = self.over_share()
        empty = self.policy.fail_when_empty and bool(self.bad) and self.usable() == 0
        if not over and not empty:
            return
        why = (f"bad items over the allowed share of {100 * self.policy.max_bad_fraction:g}%: {', '.join(over)}"
               if over else "no usable item left")
        limit = len(self.bad) if shown is None else shown
        listed = "\n  ".join(self.problems()[:limit])
        more = len(self.bad) - limit
        tail = f"\n  ... and {more} more" if more > 0 else ""
        raise TooManyBadItems(f"{self.what}: {why}; skipped:\n  {listed}{tail}")

    def merge(self, other: SkipReport) -> None:
        """Add ``other``'s counts and bad items to this report."""
        self.good.update(other.good)
        self.bad.extend(other.bad)


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown bad-item kind {kind!r} (one of {sorted(KINDS)})")
