import io
import json
import tarfile

import numpy as np
import pytest

from vfusion3d_core.data import (
    ArtifactStore,
    Manifest,
    ManifestError,
    MultiviewSample,
    SampleError,
    ShardError,
    ShardWriter,
    TooManyBadItems,
    count_samples,
    file_entries,
    iter_samples,
)


def make_sample(key: str, views: int = 3, size: int = 8, seed: int = 0) -> MultiviewSample:
    rng = np.random.default_rng(seed)
    rgba = rng.integers(0, 256, (views, size, size, 4), dtype=np.uint8)
    c2w = np.tile(np.eye(4, dtype=np.float32), (views, 1, 1))
    c2w[:, 0, 3] = np.arange(views)
    intr = np.tile(np.array([0.75, 0.75, 0.5, 0.5], np.float32), (views, 1))
    return MultiviewSample(key, f"caption of {key}", rgba, c2w, intr, {"uid": key, "elevation_deg": 12.5})


def test_shard_round_trip_and_rolling(tmp_path) -> None:
    samples = [make_sample(f"obj{i}", seed=i) for i in range(5)]
    with ShardWriter(tmp_path, samples_per_shard=2) as w:
        for s in samples:
            w.write(s)
    assert [p.name for p in w.shards] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert w.counts == [2, 2, 1] and [count_samples(p) for p in w.shards] == [2, 2, 1]
    back = list(iter_samples(w.shards))
    assert [b.key for b in back] == [s.key for s in samples]
    for a, b in zip(samples, back, strict=True):
        np.testing.assert_array_equal(a.views, b.views)
        np.testing.assert_array_equal(a.c2w, b.c2w)
        assert a.caption == b.caption and a.meta == b.meta
    with tarfile.open(w.shards[0]) as tf:
        names = tf.getnames()
    assert "obj0.000.png" in names and "obj0.c2w.npy" in names and "obj0.meta.json" in names


def test_shards_are_byte_identical_for_equal_samples(tmp_path) -> None:
    for d in ("a", "b"):
        with ShardWriter(tmp_path / d, 4) as w:
            for i in range(3):
                w.write(make_sample(f"k{i}", seed=i))
    assert (tmp_path / "a/shard-000000.tar").read_bytes() == (tmp_path / "b/shard-000000.tar").read_bytes()


def test_open_shard_is_invisible_and_abort_leaves_nothing(tmp_path) -> None:
    w = ShardWriter(tmp_path, samples_per_shard=10)
    w.write(make_sample("x"))
    assert list(tmp_path.glob("shard-*.tar")) == []
    w.abort()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError), ShardWriter(tmp_path / "c", 10) as w2:
        w2.write(make_sample("y"))
        raise RuntimeError("killed")
    assert list((tmp_path / "c").iterdir()) == []


def test_duplicate_keys_and_bad_samples_rejected(tmp_path) -> None:
    with ShardWriter(tmp_path, 4) as w:
        w.write(make_sample("a"))
        with pytest.raises(SampleError, match="duplicate"):
            w.write(make_sample("a"))
    bad = make_sample("b")
    with pytest.raises(SampleError, match="non-finite"):
        MultiviewSample("b", "c", bad.views, bad.c2w * np.nan, bad.intrinsics)
    with pytest.raises(SampleError, match="do not match"):
        MultiviewSample("b", "c", bad.views, bad.c2w[:2], bad.intrinsics)
    with pytest.raises(SampleError, match="invalid sample key"):
        MultiviewSample("../b", "c", bad.views, bad.c2w, bad.intrinsics)


def test_truncated_and_unsafe_shards_are_skipped_and_named(tmp_path) -> None:
    """Alone, a bad shard leaves nothing usable: the run fails naming it (policy: data/bad_items.py)."""
    with ShardWriter(tmp_path, 4) as w:
        w.write(make_sample("a"))
        w.write(make_sample("b"))
    shard = w.shards[0]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(TooManyBadItems, match="shard-000000.tar"):
        list(iter_samples([shard]))
    with pytest.raises(TooManyBadItems, match="unsafe member"):
        list(iter_samples([_one_member_tar(tmp_path / "evil.tar", "../escape.txt")]))
    with pytest.raises(TooManyBadItems, match="incomplete sample"):
        list(iter_samples([_one_member_tar(tmp_path / "incomplete.tar", "k.000.png")]))
    with pytest.raises(ShardError, match="truncated"):
        count_samples(shard)


def _one_member_tar(path, member: str):
    """A tar holding one 2-byte file named ``member``."""
    with tarfile.open(path, "w") as tf:
        info = tarfile.TarInfo(member)
        info.size = 2
        tf.addfile(info, io.BytesIO(b"hi"))
    return path


def _manifest(tmp_path, **kw) -> Manifest:
    (tmp_path / "a.bin").write_bytes(b"hello")
    return Manifest("asset", file_entries(tmp_path, ["a.bin"]), {"n": 1}, {"seed": 0}, run_id=kw.get("run_id"))


def test_manifest_digest_ignores_run_identity_and_detects_tampering(tmp_path) -> None:
    m1, m2 = _manifest(tmp_path, run_id="r1"), _manifest(tmp_path, run_id="r2")
    assert m1.digest == m2.digest
    assert Manifest("asset", m1.files, {"n": 2}, {"seed": 0}).digest != m1.digest
    path = m1.write(tmp_path)
    assert Manifest.read(path).digest == m1.digest
    assert m1.verify(tmp_path) == []
    (tmp_path / "a.bin").write_bytes(b"HELLO")
    assert m1.verify(tmp_path) == ["changed: a.bin"]
    (tmp_path / "a.bin").unlink()
    assert m1.verify(tmp_path) == ["missing: a.bin"]
    d = json.loads(path.read_text())
    d["counts"]["n"] = 99
    path.write_text(json.dumps(d))
    with pytest.raises(ManifestError, match="edited"):
        Manifest.read(path)


def test_artifact_store_publishes_whole_versions_only(tmp_path) -> None:
    store = ArtifactStore(tmp_path / "root")
    with pytest.raises(RuntimeError), store.staging("thing") as d:
        (d / "f.txt").write_text("partial")
        raise RuntimeError("crash")
    assert store.latest("thing") is None
    assert list((tmp_path / "root/thing/.staging").iterdir()) == []

    def publish(text: str):
        with store.staging("thing") as d:
            (d / "f.txt").write_text(text)
            return store.commit(d, Manifest("thing", file_entries(d, ["f.txt"]), {"n": 1}, {}), "thing")

    v1 = publish("one")
    v1_again = publish("one")
    assert v1_again.path == v1.path and store.latest("thing").digest == v1.digest
    v2 = publish("two")
    assert store.latest("thing").digest == v2.digest != v1.digest
    assert store.version("thing", v1.digest).manifest.verify(v1.path) == []  # old versions stay intact
    leftover = tmp_path / "root/thing/.staging/999999999-dead"
    leftover.mkdir()
    assert store.clean_staging("thing") == 1 and not leftover.exists()
    with pytest.raises(ValueError):
        store.asset_dir("../escape")


def test_artifact_store_lists_committed_partitions_and_versions(tmp_path) -> None:
    store = ArtifactStore(tmp_path)
    assert store.partitions("synth") == [] and store.version_dirs("synth") == []
    for key, text in [("shard-000001", "b"), ("shard-000000", "a"), ("shard-000000", "c")]:
        with store.staging("synth", key) as d:
            (d / "f.txt").write_text(text)
            store.commit(d, Manifest("synth", file_entries(d, ["f.txt"]), {}, {}), "synth", key)
    with pytest.raises(RuntimeError), store.staging("synth", "shard-000002") as d:
        raise RuntimeError("never committed")
    assert store.partitions("synth") == ["shard-000000", "shard-000001"]  # uncommitted shard-000002 not listed
    assert len(store.version_dirs("synth", "shard-000000")) == 2
    assert [p.name for p in store.version_dirs("synth", "shard-000001")] == [store.latest("synth", "shard-000001")
                                                                             .path.name]
