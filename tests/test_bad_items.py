"""Bad items in batch inputs (docs/reliability.md): one bad item never stops a batch (policy:
vfusion3d_core/data/bad_items.py).

A dataset of good shards with bad samples, a truncated shard and an unsafe-member shard mixed in yields exactly
the good samples with exact skip counts; over the allowed share the run fails naming the culprits."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from test_data import make_sample

from vfusion3d_core.data import (
    BadItemPolicy,
    ShardWriter,
    SkipReport,
    TooManyBadItems,
    iter_raw_samples,
    iter_samples,
)
from vfusion3d_core.data.video_sample import SyntheticVideoSample, iter_video_samples


def _tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def _members(key: str, **replace: bytes | None) -> list[tuple[str, bytes]]:
    """The members of a valid sample ``key``; ``replace`` maps suffix (dots as ``_``) -> bytes, None drops it."""
    raw = make_sample(key).to_wds()
    out = []
    for suffix, data in raw.items():
        if suffix == "__key__":
            continue
        new = replace.get(suffix.replace(".", "_"), data)
        if new is not None:
            out.append((f"{key}.{suffix}", new))
    return out


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def _good_shards(directory: Path, count: int, per_shard: int, prefix: str = "g") -> list[Path]:
    with ShardWriter(directory, per_shard) as w:
        for i in range(count):
            w.write(make_sample(f"{prefix}{i}", seed=i))
    return list(w.shards)


def _mixed_dataset(tmp_path: Path) -> tuple[list[Path], set[str], dict[str, str]]:
    """(shards, the good keys, bad item -> a needle its reason must hold)."""
    shards = _good_shards(tmp_path / "good", 12, 4)
    good = {f"g{i}" for i in range(12)}
    bad_png = _members("png", **{"002_png": b"definitely not a png"})
    bad_cam = _members("cam", c2w_npy=_npy(np.zeros((2, 4, 4), np.float32)))
    missing = _members("miss", meta_json=None)
    # mismatched keys: "mk"'s caption was written under key "mk2"
    mismatched = _members("mk", caption_txt=None) + [("mk2.caption.txt", b"a caption")]
    bad_pickle = _members("pkl", intrinsics_npy=_pickled_npy())
    mixed = (_members("x1") + _members("x2") + bad_png + bad_cam + missing + mismatched + bad_pickle
             + _members("x3") + _members("x4") + _members("x5"))
    shards.append(_tar(tmp_path / "mixed.tar", mixed))
    good |= {"x1", "x2", "x3", "x4", "x5"}
    # truncated in the middle of sample t2's c2w.npy: t0 and t1 are kept, t2 (partial) and the rest are lost
    trunc = _tar(tmp_path / "trunc.tar", [m for k in ("t0", "t1", "t2", "t3") for m in _members(k)])
    with tarfile.open(trunc) as tf:
        cut = next(m for m in tf.getmembers() if m.name == "t2.c2w.npy").offset_data + 20
    trunc.write_bytes(trunc.read_bytes()[:cut])
    shards.append(trunc)
    good |= {"t0", "t1"}
    # an unsafe member: the whole shard is refused (never extracted), its other samples are not read
    shards.append(_tar(tmp_path / "unsafe.tar", _members("u0") + [("../escape.000.png", b"x")] + _members("u1")))
    culprits = {"png": "png.002.png", "cam": "do not match", "miss": "missing ['meta.json']",
                "mk": "missing ['caption.txt']", "mk2": "incomplete", "pkl": "pkl.intrinsics.npy", "t2": "incomplete",
                "trunc.tar": "truncated", "unsafe.tar": "unsafe member path '../escape.000.png'"}
    return shards, good, culprits


def _pickled_npy() -> bytes:
    a = np.empty(1, dtype=object)
    a[0] = {"x": 1}
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=True)
    return buf.getvalue()


def test_bad_samples_and_shards_are_skipped_and_counted_exactly(tmp_path) -> None:
    shards, good, culprits = _mixed_dataset(tmp_path)
    report = SkipReport(BadItemPolicy(max_bad_fraction=0.5), what="test")
    keys = [s.key for s in iter_samples(shards, report)]
    report.check()  # within the share: no raise
    assert sorted(keys) == sorted(good) and len(keys) == len(good)
    assert report.counts() == {"skipped_samples": 7, "skipped_shards": 2, "skipped_rows": 0}
    assert report.good["sample"] == len(good) and report.good["shard"] == 4
    problems = report.problems()
    for item, needle in culprits.items():
        hits = [p for p in problems if (f":{item}: " in p or f"{item}: " in p) and needle in p]
        assert hits, (item, needle, problems)
    png = next(p for p in problems if "png.002.png" in p)
    assert str(tmp_path / "mixed.tar") in png and "BytesIO" not in png


def test_over_the_share_fails_naming_the_culprits(tmp_path) -> None:
    shards, _, _ = _mixed_dataset(tmp_path)
    with pytest.raises(TooManyBadItems) as info:
        list(iter_samples(shards))  # default policy: 1 %
    message = str(info.value)
    assert "1%" in message and "7 of 26 samples" in message and "2 of 6 shards" in message
    assert "png.002.png" in message and "mixed.tar" in message and "unsafe.tar" in message


def test_under_the_share_the_default_policy_goes_on(tmp_path, caplog) -> None:
    shards = _good_shards(tmp_path, 120, 40)
    shards.append(_tar(tmp_path / "one-bad.tar", _members("bad", **{"000_png": b"garbage"})))
    keys = [s.key for s in iter_samples(shards + _good_shards(tmp_path / "more", 4, 4, prefix="h"))]
    assert len(keys) == 124 and "bad" not in keys and keys[-1] == "h3"  # shards after the bad one are read
    assert any("bad.000.png" in r.getMessage() and "one-bad.tar" in r.getMessage() for r in caplog.records)


def test_nothing_usable_left_fails(tmp_path) -> None:
    shard = _tar(tmp_path / "all-bad.tar", _members("a", meta_json=None) + _members("b", c2w_npy=None))
    with pytest.raises(TooManyBadItems, match="a: .*missing \\['meta.json'\\]"):
        list(iter_samples([shard]))  # its own report, checked at the end
    report = SkipReport(BadItemPolicy(max_bad_fraction=1.0))
    list(iter_samples([shard], report))
    with pytest.raises(TooManyBadItems, match="no usable item left"):
        report.check()
    collect = SkipReport(BadItemPolicy.collect_all())
    assert list(iter_samples([shard], collect)) == []
    collect.check()  # integrity checks list the items themselves
    assert collect.counts()["skipped_samples"] == 2 and len(collect.problems()) == 2


def test_raw_reader_keeps_samples_before_a_truncation(tmp_path) -> None:
    shards, _, _ = _mixed_dataset(tmp_path)
    report = SkipReport(BadItemPolicy.collect_all())
    raw = list(iter_raw_samples([shards[-2]], report))
    assert [r["__key__"] for r in raw] == ["t0", "t1", "t2"]  # t2 partial: its decoder will refuse it
    assert report.counts()["skipped_shards"] == 1
    assert "after sample 3" in report.problems()[0]


def test_video_samples_follow_the_policy(tmp_path) -> None:
    frames = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), np.uint8)
    good = [SyntheticVideoSample(f"p{i}", "a cube", frames, i, "ab12", {"num_frames": 3}) for i in range(3)]
    with ShardWriter(tmp_path, 8) as w:
        for s in good:
            w.write(s)
    bad = {k: v for k, v in SyntheticVideoSample("pbad", "x", frames, 1, "ab12").to_wds().items() if k != "__key__"}
    bad["001.png"] = b"not an image"
    shard = _tar(tmp_path / "bad.tar", [(f"pbad.{k}", v) for k, v in bad.items()])
    report = SkipReport(BadItemPolicy(max_bad_fraction=0.5))
    assert [s.key for s in iter_video_samples([shard, *w.shards], report)] == ["p0", "p1", "p2"]
    assert report.counts()["skipped_samples"] == 1 and "pbad.001.png" in report.problems()[0]


def test_policy_validates_its_share() -> None:
    with pytest.raises(ValueError, match="max_bad_fraction"):
        BadItemPolicy(max_bad_fraction=1.5)
    with pytest.raises(ValueError, match="kind"):
        SkipReport().ok("file")


def test_labels_csv_reports_every_bad_row_at_once(tmp_path) -> None:
    from vfusion3d_core.filtering.models import LabelsError, read_labels_csv

    p = tmp_path / "labels.csv"
    p.write_text("video_key,label,partition\npa,good,s0\npb,maybe,s0\n../x,bad,s0\npa,bad,s1\n,good,s0\npc,bad,s0\n")
    with pytest.raises(LabelsError) as info:
        read_labels_csv(p)
    message = str(info.value)
    for line, needle in ((3, "maybe"), (4, "'../x'"), (5, "partition 's1'"), (6, "video_key ''")):
        assert f"{p}:{line}: " in message and needle in message, (line, message)
    assert "4 of 6 rows" in message and "video_key,label,partition" in message and "p0123456789abcdef,good" in message
    report = SkipReport(BadItemPolicy(max_bad_fraction=0.7))
    assert read_labels_csv(p, report=report) == {"pa": 1, "pc": 0}
    assert report.counts()["skipped_rows"] == 4 and report.good["row"] == 2


def test_labels_csv_under_the_share_skips_with_a_warning(tmp_path, caplog) -> None:
    from vfusion3d_core.filtering.models import read_labels_csv

    p = tmp_path / "labels.csv"
    rows = [f"p{i:04d},{'good' if i % 2 else 'bad'}" for i in range(200)]
    rows[57] = "p0057,perhaps"
    p.write_text("video_key,label\n" + "\n".join(rows) + "\n")
    labels = read_labels_csv(p)
    assert len(labels) == 199 and "p0057" not in labels and labels["p0001"] == 1
    assert any(f"{p}:59" in r.getMessage() and "perhaps" in r.getMessage() for r in caplog.records)


def test_header_only_labels_csv_is_an_error(tmp_path) -> None:
    from vfusion3d_core.filtering.models import LabelsError, read_labels_csv

    p = tmp_path / "labels.csv"
    p.write_text("video_key,label\n")
    with pytest.raises(LabelsError, match="no labels .*\n.*video_key,label,partition"):
        read_labels_csv(p)


def test_prompt_file_nul_byte_skips_its_line(tmp_path, caplog) -> None:
    from vfusion3d_core.prompts import PromptSourceError
    from vfusion3d_core.prompts.sources import read_prompt_file

    p = tmp_path / "prompts.txt"
    lines = [f"a red cube number {i}" for i in range(150)]
    lines[41] = "a blue\x00 ball"
    p.write_bytes(("\n".join(lines) + "\n").encode())
    report = SkipReport()
    prompts = read_prompt_file(p, report=report)
    assert len(prompts) == 149 and "a blue\x00 ball" not in prompts and prompts[41] == "a red cube number 42"
    assert report.counts()["skipped_rows"] == 1 and report.problems() == [f"{p}:42: line: binary data (NUL byte)"]
    csv_path = tmp_path / "prompts.csv"
    csv_path.write_bytes(b"prompt\na cube\nbad\x00line\nsphere\n")
    with pytest.raises(PromptSourceError, match=f"(?s)binary.*{csv_path.name}:3"):
        read_prompt_file(csv_path, column="prompt")  # 1 of 4 lines: over 1 %


def test_integrity_check_lists_every_bad_item_and_fails(tmp_path) -> None:
    """A check's job is to report bad items: it fails, listing all of them (not only the first)."""
    from vfusion3d_core.data import ArtifactStore, Manifest, file_entries
    from vfusion3d_pipeline.checks import FILTERED, filtered_partition_problems

    store = ArtifactStore(tmp_path / "root")
    with store.staging(FILTERED, "shard-000000") as d:
        with ShardWriter(d, 8) as w:
            for i in range(3):
                w.write(make_sample(f"k{i}", seed=i))
        _tar(d / "shard-000001.tar", _members("png", **{"002_png": b"nope"}) + _members("miss", meta_json=None)
             + _members("k3"))
        _tar(d / "shard-000002.tar", [("/abs/evil.000.png", b"x")] + _members("k4"))
        files = sorted(p.name for p in d.glob("*.tar"))
        store.commit(d, Manifest(FILTERED, file_entries(d, files), {"kept": 4}, {}), FILTERED, "shard-000000")
    problems, info = filtered_partition_problems(store, "shard-000000")
    joined = "\n".join(problems)
    assert "png.002.png" in joined and "missing ['meta.json']" in joined and "unsafe member path '/abs/evil" in joined
    # 4 samples decode; the tar headers hold 6 keys (the unusable shard's are not counted)
    assert info["decoded_samples"] == 4 and info["samples"] == 6
    assert info["skipped_samples"] == 2 and info["skipped_shards"] == 1


def test_training_stream_skips_bad_samples_and_fails_over_the_share(tmp_path) -> None:
    from vfusion3d_core.lrm.train.data import MultiviewTrainingStream

    shards = [str(p) for p in _good_shards(tmp_path / "good", 12, 4)]
    shards.append(str(_tar(tmp_path / "bad.tar", _members("b0") + _members("bad", **{"001_png": b"garbage"})
                           + _members("b1") + _members("b2"))))
    good = {f"g{i}" for i in range(12)} | {"b0", "b1", "b2"}
    stream = MultiviewTrainingStream(shards, views_per_sample=2, source_size=8, seed=3, max_bad_fraction=0.1)
    it = iter(stream)
    first_epoch = [next(it)["key"] for _ in range(len(good))]
    assert set(first_epoch) == good
    next(it)  # the second epoch begins: the first one's report is in
    assert stream.skip_report.counts()["skipped_samples"] == 1
    assert "bad.001.png" in stream.skip_report.problems()[0]
    strict = iter(MultiviewTrainingStream(shards, views_per_sample=2, source_size=8, seed=3))
    for _ in range(len(good)):
        next(strict)
    with pytest.raises(TooManyBadItems, match="(?s)1 of 16 samples.*bad.001.png"):
        next(strict)

