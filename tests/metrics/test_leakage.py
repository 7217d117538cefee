"""Caption leakage (core): exact matches after prompt normalization and MiniLM near duplicates, per source."""

import pytest

from vfusion3d_core.metrics.leakage import NEAR_DUP_THRESHOLD, caption_key, caption_leaks, match_captions
from vfusion3d_core.prompts import minilm_embedder

HELDOUT = ["a red box", "a glossy yellow torus under a checkered brown capsule"]


@pytest.fixture(scope="module")
def embed():
    return minilm_embedder()


def test_caption_key_is_the_prompt_normalization_case_folded() -> None:
    assert caption_key("  A Red\u200b  BOX\t") == caption_key("a red box") == "a red box"
    assert caption_key("a red box.") != caption_key("a red box")
    assert caption_key(" \x00 ") == "" and caption_key("x" * 500) == "x" * 500  # never truncated


def test_planted_exact_and_near_leaks_are_found_per_source(embed) -> None:
    sources = {
        "clean": ["a green cone", "a metallic blue sphere next to a striped pink ring", "a crimson cube"],
        "exact": ["a green cone", "A  Red Box"],
        "near": ["a red box.", "a checkered white sphere"],
    }
    report = caption_leaks(HELDOUT, sources, embed)
    assert report.heldout == 2 and report.threshold == NEAR_DUP_THRESHOLD
    assert set(report.leaking()) == {"exact", "near"}
    exact = report.sources["exact"]
    assert [(m.training, m.heldout, m.exact) for m in exact.exact] == [("A  Red Box", "a red box", True)]
    assert not exact.near and exact.captions == 2
    near = report.sources["near"].near
    assert [(m.training, m.heldout) for m in near] == [("a red box.", "a red box")]
    assert 0.95 <= near[0].cosine < 1.0
    text = report.describe()
    assert "exact: 1 exact match(es)" in text and "'A  Red Box'" in text
    assert "near: 1 near duplicate(s)" in text and "'a red box.' ~ held-out 'a red box'" in text
    assert "clean" not in text
    summary = report.to_dict()["sources"]["near"]
    assert summary["near"] == 1 and summary["near_examples"][0][:2] == ["a red box.", "a red box"]
    # exact only (no embedder): the near duplicate is not seen
    assert set(caption_leaks(HELDOUT, sources, None).leaking()) == {"exact"}


def test_a_clean_setup_passes_and_threshold_is_checked(embed) -> None:
    report = caption_leaks(HELDOUT, {"train": ["a small red box", "a red cube", "a dotted gray sphere"]}, embed)
    assert not report.leaking() and report.describe() == ""  # "a small red box" is 0.92: below 0.95
    assert report.sources["train"].captions == 3
    loose = match_captions(HELDOUT, ["a small red box"], embed, threshold=0.9)
    assert loose[0] is not None and loose[0].heldout == "a red box" and not loose[0].exact
    with pytest.raises(ValueError, match="threshold"):
        match_captions(HELDOUT, ["a"], embed, threshold=0.0)
    assert match_captions([], ["a red box"], embed) == [None]
