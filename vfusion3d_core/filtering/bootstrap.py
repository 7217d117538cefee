"""Bootstrap labels for the quality classifier: real orbits are good; corrupted copies of them are bad.

Corruptions (each seeded): ``shuffled`` (frame order permuted by a permutation that is not a rotation
or reversal of the orbit), ``frozen`` (one frame repeated), ``blank`` (a flat colour with faint noise)
and ``noise`` (the orbit blended with strong per-pixel noise).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

# Render orbits the classifier bootstraps from, per preset: every one at tiny; at scale a sample the size of the
# paper's ~2,000 hand-labelled videos (100,000 renders at 512 px would never fit in memory, nor need to).
MAX_BOOTSTRAP_ORBITS: dict[str, int | None] = {"tiny": None, "small": 1000, "paper": 2000}

CORRUPTIONS = ("shuffled", "frozen", "blank", "noise")


def _orbit_symmetries(f: int) -> set[tuple[int, ...]]:
    base = list(range(f))
    out = set()
    for r in range(f):
        rot = base[r:] + base[:r]
        out.add(tuple(rot))
        out.add(tuple(reversed(rot)))
    return out


def corrupt(frames: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """A bad variant of one uint8 [F, S, S, 3] orbit video."""
    f = frames.shape[0]
    if kind == "shuffled":
        if f < 4:
            raise ValueError("shuffling needs at least 4 frames to differ from a rotation/reversal")
        symmetric = _orbit_symmetries(f)
        while True:
            perm = tuple(int(i) for i in rng.permutation(f))
            if perm not in symmetric:
                return frames[list(perm)].copy()
    if kind == "frozen":
        return np.repeat(frames[int(rng.integers(f))][None], f, axis=0)
    if kind == "blank":
        colour = rng.integers(0, 256, size=3) if rng.random() < 0.5 else np.full(3, 255)
        base = np.broadcast_to(colour, frames.shape).astype(np.float32)
        return np.clip(base + rng.normal(0, 2.0, frames.shape), 0, 255).astype(np.uint8)
    if kind == "noise":
        a = rng.uniform(0.5, 1.0)
        noise = rng.integers(0, 256, size=frames.shape).astype(np.float32)
        return np.clip((1 - a) * frames.astype(np.float32) + a * noise, 0, 255).astype(np.uint8)
    raise ValueError(f"unknown corruption {kind!r}; choose from {CORRUPTIONS}")


def iter_bootstrap(orbits: Iterable[np.ndarray], seed: int = 0) -> Iterator[tuple[np.ndarray, int, str]]:
    """(video, label 1 = good / 0 = bad, kind) for a stream of real orbits: each orbit, then its corruptions;
    one orbit in memory at a time."""
    rng = np.random.default_rng(seed)
    for frames in orbits:
        yield frames, 1, "real"
        for kind in CORRUPTIONS:
            if kind == "shuffled" and frames.shape[0] < 4:
                continue
            yield corrupt(frames, kind, rng), 0, kind


def bootstrap_videos(orbits: list[np.ndarray], seed: int = 0) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    """(videos, labels 1 = good / 0 = bad, kind of each) for real orbits: each orbit + its four corruptions."""
    items = list(iter_bootstrap(orbits, seed))
    return [v for v, _, _ in items], np.asarray([y for _, y, _ in items], np.int64), [k for _, _, k in items]
