"""The ablation's object populations, disjoint by construction and by a blocking check.

One procedural world is walked in index order; an object whose caption signature was already drawn is skipped,
so no two objects share a caption. Roles are filled in order: held-out, validation, then the 3D set, the clip
population and the prompt objects, each of the last three skipping objects whose caption is a near duplicate
(MiniLM cosine >= 0.95, metrics/leakage.py) of a held-out or validation caption. ``check_disjoint`` then verifies
what construction promised, with the same comparison the pipeline's leakage checks use, and raises
``LeakageError`` naming the offending captions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from vfusion3d_core.metrics.leakage import NEAR_DUP_THRESHOLD, caption_key, caption_leaks
from vfusion3d_core.objects.listing import PROCEDURAL_PREFIX, ListedObject
from vfusion3d_core.objects.procedural import ProceduralObjectGenerator
from vfusion3d_core.prompts.dedup import Embedder

EVALUATED = ("heldout", "validation")  # roles whose captions no training role may come near
TRAINING = ("train3d", "clips", "prompts")
ROLES = EVALUATED + TRAINING
BLOCK = 256  # candidates embedded at a time


class LeakageError(ValueError):
    """Two ablation populations share an object id or a caption (exact or near duplicate)."""


@dataclass
class Populations:
    """role -> listed objects (procedural locations of ``world_seed``'s world)."""

    world_seed: int
    roles: dict[str, list[ListedObject]]

    def captions(self, role: str) -> list[str]:
        return [r.caption for r in self.roles[role]]

    def to_dict(self) -> dict:
        return {"world_seed": self.world_seed,
                "roles": {k: [[r.uid, r.location, r.caption] for r in v] for k, v in self.roles.items()}}

    @classmethod
    def from_dict(cls, data: dict) -> Populations:
        roles = {k: [_listed(uid, loc, cap, k) for uid, loc, cap in v] for k, v in data["roles"].items()}
        return cls(int(data["world_seed"]), roles)


def build_populations(sizes: dict[str, int], world_seed: int, embed: Embedder | None,
                      threshold: float = NEAR_DUP_THRESHOLD) -> Populations:
    """Fill each role of ``sizes`` (keys from ROLES) from the world of ``world_seed`` (see the module docstring)."""
    unknown = set(sizes) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}; roles are {ROLES}")
    gen = ProceduralObjectGenerator(world_seed)
    seen: set[str] = set()
    index = 0

    def next_unique(role: str) -> ListedObject:
        nonlocal index
        while True:
            spec, i = gen.spec(index), index
            index += 1
            if spec.signature not in seen and caption_key(spec.caption) not in seen:
                seen.update((spec.signature, caption_key(spec.caption)))
                return _listed(gen.uid(i), f"{PROCEDURAL_PREFIX}{i}", spec.caption, role)

    roles: dict[str, list[ListedObject]] = {}
    for role in EVALUATED:
        roles[role] = [next_unique(role) for _ in range(sizes.get(role, 0))]
    guarded = [r.caption for role in EVALUATED for r in roles[role]]
    guard = _near_guard(guarded, embed, threshold)
    for role in TRAINING:
        picked: list[ListedObject] = []
        while len(picked) < sizes.get(role, 0):
            batch = [next_unique(role) for _ in range(min(BLOCK, 2 * (sizes[role] - len(picked))))]
            near = guard([r.caption for r in batch])
            picked += [r for r, bad in zip(batch, near, strict=True) if not bad]
        roles[role] = picked[:sizes.get(role, 0)]
    return Populations(world_seed, roles)


def _listed(uid: str, location: str, caption: str, role: str) -> ListedObject:
    """A population member: split "heldout" for the held-out role, else "train"; the role in ``partition``."""
    return ListedObject(uid, location, caption, "heldout" if role == "heldout" else "train", role)


def _near_guard(guarded: list[str], embed: Embedder | None, threshold: float) -> Callable[[list[str]], list[bool]]:
    """captions -> whether each is within ``threshold`` cosine of a guarded caption (False everywhere without an
    embedder: exact duplicates are already excluded by construction)."""
    if embed is None or not guarded:
        return lambda captions: [False] * len(captions)
    g = np.asarray(embed(guarded), np.float32)

    def near(captions: list[str]) -> list[bool]:
        e = np.asarray(embed(captions), np.float32)
        return list((e @ g.T).max(axis=1) >= threshold)

    return near


def check_disjoint(pop: Populations, embed: Embedder | None, threshold: float = NEAR_DUP_THRESHOLD) -> dict:
    """Raise ``LeakageError`` when two roles share a uid or an exact caption, or a training role holds a near
    duplicate of a held-out or validation caption; returns the comparison summary (for the report)."""
    problems = []
    for i, a in enumerate(ROLES):
        for b in ROLES[i + 1:]:
            ids = {r.uid for r in pop.roles.get(a, [])} & {r.uid for r in pop.roles.get(b, [])}
            caps = ({caption_key(c) for c in pop.captions(a)} & {caption_key(c) for c in pop.captions(b)}
                    if a in pop.roles and b in pop.roles else set())
            if ids or caps:
                problems.append(f"{a} and {b} share {len(ids)} id(s) {sorted(ids)[:3]} and {len(caps)} caption(s) "
                                f"{sorted(caps)[:3]}")
    summary: dict = {"threshold": threshold, "sizes": {k: len(v) for k, v in pop.roles.items()}}
    for role in EVALUATED:
        report = caption_leaks(pop.captions(role), {t: pop.captions(t) for t in TRAINING if t in pop.roles}, embed,
                               threshold)
        summary[role] = report.to_dict()
        if report.leaking():
            problems.append(f"{role} captions found in training roles: {report.describe()}")
    if problems:
        raise LeakageError("; ".join(problems))
    return summary
