"""Disjoint ablation populations: by construction (unique captions, near duplicates of evaluated captions left out)
and by the blocking check, which names what leaked."""

from __future__ import annotations

import numpy as np
import pytest

from vfusion3d_core.ablation.populations import LeakageError, Populations, build_populations, check_disjoint
from vfusion3d_core.metrics.leakage import caption_key
from vfusion3d_core.objects.listing import ListedObject
from vfusion3d_core.objects.procedural import KINDS
from vfusion3d_core.prompts.dedup import minilm_embedder

SIZES = {"heldout": 6, "validation": 3, "train3d": 4, "clips": 10, "prompts": 12}


@pytest.fixture(scope="module")
def embed():
    return minilm_embedder()


def test_roles_are_filled_disjoint_and_reproducible(embed) -> None:
    pop = build_populations(SIZES, world_seed=3, embed=embed)
    assert {k: len(v) for k, v in pop.roles.items()} == SIZES
    uids = [r.uid for v in pop.roles.values() for r in v]
    keys = [caption_key(r.caption) for v in pop.roles.values() for r in v]
    assert len(set(uids)) == len(uids) and len(set(keys)) == len(keys)
    assert {r.split for r in pop.roles["heldout"]} == {"heldout"}
    assert {r.split for r in pop.roles["prompts"]} == {"train"}
    summary = check_disjoint(pop, embed)
    assert summary["heldout"]["sources"]["prompts"]["near"] == 0
    assert Populations.from_dict(pop.to_dict()).to_dict() == pop.to_dict()
    assert build_populations(SIZES, world_seed=3, embed=embed).to_dict() == pop.to_dict()


def test_near_duplicates_of_heldout_captions_are_left_out_by_construction() -> None:
    def by_first_kind(texts: list[str]) -> np.ndarray:  # "near duplicate" = the same first shape word
        out = np.zeros((len(texts), len(KINDS)), np.float32)
        for i, t in enumerate(texts):
            out[i, min(KINDS.index(k) for k in KINDS if k in t.split())] = 1.0
        return out

    pop = build_populations({"heldout": 1, "validation": 1, "prompts": 20, "clips": 5}, 3, by_first_kind)
    guarded = {next(k for k in KINDS if k in r.caption.split()) for r in pop.roles["heldout"] + pop.roles["validation"]}
    for role in ("prompts", "clips"):
        kinds = {min((KINDS.index(k), k) for k in KINDS if k in r.caption.split())[1] for r in pop.roles[role]}
        assert len(pop.roles[role]) == {"prompts": 20, "clips": 5}[role] and not kinds & guarded


def test_check_disjoint_names_shared_ids_exact_and_near_captions(embed) -> None:
    pop = build_populations(SIZES, world_seed=3, embed=embed)
    held = pop.roles["heldout"][0]
    leaked = Populations.from_dict(pop.to_dict())
    leaked.roles["clips"].append(held)  # the same object
    with pytest.raises(LeakageError, match=f"heldout and clips share 1 id.*{held.uid}"):
        check_disjoint(leaked, embed)
    near = Populations.from_dict(pop.to_dict())
    near.roles["prompts"].append(ListedObject("new-uid", "procedural:999999", held.caption.upper() + " .",
                                              "train", "prompts"))
    with pytest.raises(LeakageError, match="prompts: .*(exact|near)"):
        check_disjoint(near, embed)
