"""S3ArtifactStore against a real S3-compatible HTTP server (moto): same versions, manifests and digests as the
local store; readers get verified local cache copies; shards stream by s3:// URL into WebDataset."""

from __future__ import annotations

import json

import pytest
from test_data import make_sample

from vfusion3d_core.data import (
    ArtifactStore,
    Manifest,
    ManifestError,
    ShardWriter,
    TooManyBadItems,
    file_entries,
    iter_samples,
)
from vfusion3d_core.data.s3_store import S3ArtifactStore, S3ArtifactVersion, shard_locations


def _publish(store: ArtifactStore, asset: str, partition: str | None, keys: list[str]):
    store.clean_staging(asset, partition)
    with store.staging(asset, partition) as staging:
        with ShardWriter(staging / "train", samples_per_shard=2) as writer:
            for i, k in enumerate(keys):
                writer.write(make_sample(k, seed=i))
        (staging / "notes.txt").write_text("hello")
        files = [f"train/{p.name}" for p in writer.shards] + ["notes.txt"]
        manifest = Manifest(asset, file_entries(staging, files), {"samples": len(keys)}, {"seed": 0},
                            code_version="t1", run_id="run-1")
        return store.commit(staging, manifest, asset, partition)


def test_s3_store_matches_local_store_and_streams_shards(s3_server, tmp_path) -> None:
    local = ArtifactStore(tmp_path / "local")
    s3 = S3ArtifactStore(s3_server.client, s3_server.bucket, "runs/a", tmp_path / "cache")
    lv = _publish(local, "renders_3d", None, ["a", "b", "c"])
    sv = _publish(s3, "renders_3d", None, ["a", "b", "c"])
    assert isinstance(sv, S3ArtifactVersion) and sv.digest == lv.digest  # same content, same digest
    assert sv.url == f"s3://{s3_server.bucket}/runs/a/renders_3d/versions/{lv.digest[:16]}"
    keys = s3_server.keys("runs/a/")
    assert f"runs/a/renders_3d/versions/{lv.digest[:16]}/manifest.json" in keys
    assert "runs/a/renders_3d/LATEST.json" in keys and not any(".staging" in k for k in keys)
    remote_manifest = s3_server.client.get_object(Bucket=s3_server.bucket,
                                                  Key=f"runs/a/renders_3d/versions/{lv.digest[:16]}/manifest.json")
    assert Manifest.from_json(remote_manifest["Body"].read()).digest == lv.digest

    # a fresh reader (empty cache) gets a verified local copy laid out like the local store
    reader = S3ArtifactStore(s3_server.client, s3_server.bucket, "runs/a", tmp_path / "cache2")
    got = reader.latest("renders_3d")
    assert got.digest == lv.digest and got.path == tmp_path / "cache2" / "renders_3d" / "versions" / lv.digest[:16]
    assert got.manifest.verify(got.path) == [] and (got.path / "notes.txt").read_text() == "hello"
    assert reader.version("renders_3d", lv.digest).path == got.path
    assert reader.version_dirs("renders_3d") == [got.path]

    # shards stream by URL, without a local copy
    lazy = S3ArtifactStore(s3_server.client, s3_server.bucket, "runs/a", tmp_path / "cache3")
    remote = lazy.latest("renders_3d", materialize=False)
    urls = shard_locations(remote, "train")
    assert urls and all(u.startswith("s3://") for u in urls) and not remote.path.exists()
    assert [s.key for s in iter_samples(urls)] == ["a", "b", "c"]
    assert [s.key for s in iter_samples(shard_locations(lv, "train"))] == ["a", "b", "c"]


def test_s3_partitions_identical_rerun_and_tampering(s3_server, tmp_path) -> None:
    s3 = S3ArtifactStore(s3_server.client, s3_server.bucket, "", tmp_path / "cache")
    assert s3.latest("synthetic_videos", "shard-000000") is None and s3.partitions("synthetic_videos") == []
    first = _publish(s3, "synthetic_videos", "shard-000001", ["x", "y"])
    _publish(s3, "synthetic_videos", "shard-000000", ["z"])
    assert s3.partitions("synthetic_videos") == ["shard-000000", "shard-000001"]
    again = _publish(s3, "synthetic_videos", "shard-000001", ["x", "y"])  # identical re-run: same version
    assert again.digest == first.digest and len(s3.version_names("synthetic_videos", "shard-000001")) == 1
    pointer = json.loads(s3_server.client.get_object(Bucket=s3_server.bucket,
                                                     Key="synthetic_videos/shard-000001/LATEST.json")["Body"].read())
    assert pointer["digest"] == first.digest

    # one flipped byte on S3: the download is refused naming the object; a truncated shard is refused when streamed
    shard_key = f"synthetic_videos/shard-000001/versions/{first.digest[:16]}/train/shard-000000.tar"
    data = bytearray(s3_server.client.get_object(Bucket=s3_server.bucket, Key=shard_key)["Body"].read())
    data[700] ^= 0xFF
    s3_server.client.put_object(Bucket=s3_server.bucket, Key=shard_key, Body=bytes(data))
    fresh = S3ArtifactStore(s3_server.client, s3_server.bucket, "", tmp_path / "fresh")
    with pytest.raises(ManifestError, match="shard-000000.tar does not match"):
        fresh.latest("synthetic_videos", "shard-000001")
    assert not (tmp_path / "fresh" / "synthetic_videos" / "shard-000001" / "versions").exists() or not any(
        (tmp_path / "fresh" / "synthetic_videos" / "shard-000001" / "versions").iterdir())
    s3_server.client.put_object(Bucket=s3_server.bucket, Key=shard_key, Body=bytes(data[:2048]))
    with pytest.raises(TooManyBadItems, match="truncated"):  # the only shard is bad: nothing usable is left
        list(iter_samples([f"s3://{s3_server.bucket}/{shard_key}"]))
