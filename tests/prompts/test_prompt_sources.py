"""Prompt sources, normalization, MiniLM dedup and append-only shard building (core, no Dagster)."""

import pandas as pd
import pytest

from vfusion3d_core.data import Manifest, file_entries, sha256_file
from vfusion3d_core.objects.listing import ObjectListingConfig, build_listing
from vfusion3d_core.objects.procedural import (
    ARRANGEMENTS_2,
    ARRANGEMENTS_3,
    COLORS,
    KINDS,
    MATERIALS,
    ProceduralObjectGenerator,
)
from vfusion3d_core.prompts import (
    PromptSetConfig,
    PromptSourceError,
    build_prompt_set,
    deduplicate,
    minilm_embedder,
    normalize_all,
    normalize_prompt,
    read_prompt_file,
    template_prompts,
)
from vfusion3d_core.prompts.shards import read_prompt_shard


@pytest.fixture(scope="module")
def embed():
    return minilm_embedder()


def test_normalization_strips_controls_bidi_and_whitespace() -> None:
    assert normalize_prompt("  a\u202e red\t\tcube\x00\u200b\n ") == ("a red cube", False)
    assert normalize_prompt("\u2066a\u2069 ｂｌｕｅ ball") == ("a blue ball", False)  # isolates, NFKC full-width
    assert normalize_prompt("ab") == (None, False)
    text, truncated = normalize_prompt("a very long prompt about a red cube", 3, 20)
    assert truncated and text == "a very long prompt" and len(text) <= 20
    kept, stats = normalize_all(["a red cube", "", "   ", "\u202e\u200b", "x", "a blue cone " * 40], 3, 50)
    assert kept[0] == "a red cube" and len(kept) == 2 and len(kept[1]) <= 50
    assert (stats.raw, stats.empty, stats.too_short, stats.truncated, stats.kept) == (6, 3, 1, 1, 2)


def test_template_prompts_are_seeded_and_use_the_procedural_vocabulary() -> None:
    a, b = template_prompts(50, seed=3), template_prompts(50, seed=3)
    assert a == b and a != template_prompts(50, seed=4)
    words = set(KINDS) | set(COLORS) | set(MATERIALS) | {w for x in ARRANGEMENTS_2 + ARRANGEMENTS_3 for w in x.split()}
    words |= {"a", "and"}
    for p in a:
        assert set(p.replace(",", "").split()) <= words, p
    assert any(k in " ".join(a) for k in KINDS)
    with pytest.raises(ValueError, match="2\\*\\*32"):
        template_prompts(1, seed=1 << 32)


def test_template_prompts_do_not_replay_the_3d_world_of_the_same_seed() -> None:
    """Before, template_prompts(n, s) were the captions of ProceduralObjectGenerator(s): with the default seeds every
    held-out object's caption was a prompt. Now the streams differ; only chance collisions of short captions
    remain (removed by prompt_set against the held-out captions)."""
    for seed in (0, 3):
        world = ProceduralObjectGenerator(seed)
        world_captions = [world.spec(i).caption for i in range(256)]
        prompts = template_prompts(256, seed)
        assert sum(p == w for p, w in zip(prompts, world_captions, strict=True)) == 0
        heldout = [r.caption for r in build_listing(ObjectListingConfig(num_objects=64, num_heldout=16, seed=seed)).rows
                   if r.split == "heldout"]
        multi_part = [h for h in heldout if " a " in h]  # 2-3 part captions: ~10^9 combinations
        assert multi_part and not set(multi_part) & set(prompts)


def test_file_sources_and_clear_errors(tmp_path) -> None:
    txt = tmp_path / "p.txt"
    txt.write_text("a red cube\n\n  a blue   ball \n")
    assert read_prompt_file(txt) == ["a red cube", "", "  a blue   ball "]
    csv = tmp_path / "p.csv"
    pd.DataFrame({"text": ["a", "b"], "prompt": ["a green cone", "a pink torus"]}).to_csv(csv, index=False)
    assert read_prompt_file(csv) == ["a green cone", "a pink torus"]
    pq = tmp_path / "p.parquet"
    pd.DataFrame({"prompt": ["a teal ring"]}).to_parquet(pq)
    assert read_prompt_file(pq) == ["a teal ring"]
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00garbage")
    bad_utf8 = tmp_path / "latin.txt"
    bad_utf8.write_bytes("caf\xe9 cube".encode("latin-1"))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n\n")
    fake_pq = tmp_path / "fake.parquet"
    fake_pq.write_text("prompt\nnot parquet\n")
    for path, column, message in [(binary, "prompt", "binary"), (bad_utf8, "prompt", "UTF-8"),
                                  (empty, "prompt", "no prompts"), (csv, "caption", "no column 'caption'"),
                                  (fake_pq, "prompt", "parquet"), (tmp_path / "missing.csv", "prompt", "no such"),
                                  (tmp_path / "p.json", "prompt", "unsupported")]:
        with pytest.raises(PromptSourceError, match=message) as info:
            read_prompt_file(path, column)
        assert str(path) in str(info.value)


def test_dedup_exact_and_near(embed) -> None:
    prompts = ["a red cube", "A Red Cube", "a red cube.", "a blue sphere", "a tall green cylinder", "a blue sphere"]
    r = deduplicate(prompts, ["a tall green cylinder."], embed, threshold=0.95)
    assert r.kept == ["a red cube", "a blue sphere"]
    assert r.exact == 2 and r.near == 2  # "a red cube." ~ "a red cube"; cylinder ~ the existing prompt
    assert {p[0] for p in r.near_pairs} == {"a red cube.", "a tall green cylinder"}
    assert all(c >= 0.95 for _, _, c in r.near_pairs)
    loose = deduplicate(prompts, [], embed, threshold=1.0)
    assert len(loose.kept) == 4 and loose.exact == 2  # threshold 1.0: only (numerically) identical embeddings


def test_prompts_matching_heldout_captions_are_excluded_and_counted(tmp_path, embed) -> None:
    src = tmp_path / "prompts.txt"
    src.write_text("a green cone\nA  Red Box\na checkered white sphere.\na blue sphere\na small red box\n")
    cfg = PromptSetConfig(source_file=str(src), shard_size=4)
    r = build_prompt_set(cfg, tmp_path / "v1", embed, heldout=["a red box", "a checkered white sphere"])
    prompts = [x.prompt for k in r.shard_keys for x in read_prompt_shard(tmp_path / "v1" / f"shards/{k}.parquet")]
    assert prompts == ["a green cone", "a blue sphere", "a small red box"]  # "a small red box": cosine 0.92 < 0.95
    assert r.stats["heldout_exact"] == 1 and r.stats["heldout_near"] == 1 and r.counts["prompts"] == 3
    assert [(m.training, m.heldout, m.exact) for m in r.heldout_excluded] == [
        ("A Red Box", "a red box", True), ("a checkered white sphere.", "a checkered white sphere", False)]
    # without held-out captions nothing is excluded
    free = build_prompt_set(cfg, tmp_path / "v2", embed)
    assert free.counts["prompts"] == 5 and free.stats["heldout_exact"] == free.stats["heldout_near"] == 0


def _publish(directory, result):
    return Manifest("prompt_set", file_entries(directory, result.files), result.counts, {})


def test_append_only_adds_shards_and_keeps_old_bytes(tmp_path, embed) -> None:
    src = tmp_path / "prompts.txt"
    first = [f"a {c} {k}" for c in ("red", "blue") for k in ("box", "sphere", "cone")]
    src.write_text("\n".join(first[:3] + [""] + first[3:] + ["a red box"]))
    cfg = PromptSetConfig(source_file=str(src), shard_size=4, near_dup_threshold=0.99)
    v1 = tmp_path / "v1"
    r1 = build_prompt_set(cfg, v1, embed)
    assert r1.shard_keys == ["shard-000000", "shard-000001"] and r1.counts["prompts"] == 6
    assert r1.stats["exact_duplicates"] == 1 and r1.stats["normalize_empty"] == 1
    m1 = _publish(v1, r1)
    before = {f.path: sha256_file(v1 / f.path) for f in m1.files}
    src.write_text("\n".join(first + [f"a {c} torus" for c in ("green", "yellow", "pink", "white", "black")]))
    v2 = tmp_path / "v2"
    r2 = build_prompt_set(cfg, v2, embed, v1, m1)
    assert r2.new_keys == ["shard-000002", "shard-000003"] and r2.counts["new_prompts"] == 5
    assert r2.stats["exact_duplicates"] == 6  # the old prompts are already published
    for path, sha in before.items():
        assert sha256_file(v2 / path) == sha and sha256_file(v1 / path) == sha
    all_records = [r for k in r2.shard_keys for r in read_prompt_shard(v2 / f"shards/{k}.parquet")]
    assert len({r.prompt_id for r in all_records}) == len(all_records) == 11
    assert [len(read_prompt_shard(v2 / f"shards/{k}.parquet")) for k in r2.shard_keys] == [4, 2, 4, 1]
    # a bad source raises before anything is written
    src.write_bytes(b"\x00\x01\x02")
    v3 = tmp_path / "v3"
    v3.mkdir()
    with pytest.raises(PromptSourceError, match="binary"):
        build_prompt_set(cfg, v3, embed, v2, _publish(v2, r2))
    assert not any(v3.iterdir())
