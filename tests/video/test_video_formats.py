"""Prompt shard files and the synthetic video sample schema."""

import numpy as np
import pandas as pd
import pytest

from vfusion3d_core.data import SampleError, ShardWriter
from vfusion3d_core.data.video_sample import SyntheticVideoSample, iter_video_samples
from vfusion3d_core.prompts.shards import (
    PromptRecord,
    PromptShardError,
    read_prompt_shard,
    shard_key,
    shard_relpath,
    write_prompt_shard,
)


def test_prompt_shard_round_trip_and_layout(tmp_path) -> None:
    records = [PromptRecord("a1", "a red chair"), PromptRecord("b-2", "a ceramic vase, glossy")]
    path = write_prompt_shard(tmp_path / shard_relpath(shard_key(3)), records)
    assert path.name == "shard-000003.parquet" and path.parent.name == "shards"
    assert read_prompt_shard(path) == records
    df = pd.read_parquet(path)
    assert list(df.columns) == ["prompt_id", "prompt"]
    again = write_prompt_shard(tmp_path / "again.parquet", records)
    assert again.read_bytes() == path.read_bytes()  # deterministic bytes -> stable sha256 input digests


@pytest.mark.parametrize("frame", [
    pd.DataFrame({"prompt_id": ["a", "a"], "prompt": ["x", "y"]}),
    pd.DataFrame({"prompt_id": ["a.b"], "prompt": ["x"]}),
    pd.DataFrame({"prompt_id": ["a"], "prompt": [""]}),
    pd.DataFrame({"id": ["a"], "prompt": ["x"]}),
])
def test_prompt_shard_rejects_bad_tables(tmp_path, frame) -> None:
    with pytest.raises(PromptShardError):
        write_prompt_shard(tmp_path / "bad.parquet", frame)
    with pytest.raises(PromptShardError):
        shard_relpath("../etc")


def test_video_sample_round_trip_and_incomplete_sample(tmp_path) -> None:
    frames = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    sample = SyntheticVideoSample("p1", "a lamp", frames, 1234, "ab" * 32, {"prompt_id": "p1", "num_frames": 4})
    with ShardWriter(tmp_path) as writer:
        writer.write(sample)  # duck-typed: key + to_wds
    back = list(iter_video_samples(sorted(tmp_path.glob("*.tar"))))
    assert len(back) == 1 and back[0].key == "p1" and back[0].seed == 1234 and back[0].model_digest == "ab" * 32
    np.testing.assert_array_equal(back[0].frames, frames)
    raw = sample.to_wds()
    del raw["seed.txt"]
    with pytest.raises(SampleError):
        SyntheticVideoSample.from_wds(raw)
    with pytest.raises(SampleError):
        SyntheticVideoSample("p.1", "x", frames, 0, "ab")
