"""bench/data_memory_workloads/filtering.py runs the asset's filtering path on shards (the memory bench calls it
at 100 / 1,000 / 10,000 videos in a subprocess)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch._dynamo  # noqa: F401  (before the GL renderer: importing triton after EGL is loaded segfaults)

from vfusion3d_core.data import iter_samples
from vfusion3d_core.data.shards import ShardWriter
from vfusion3d_core.data.video_sample import SyntheticVideoSample
from vfusion3d_core.filtering import corrupt
from vfusion3d_core.render.dataset import RenderDatasetConfig, render_dataset

WORKLOAD = Path(__file__).resolve().parents[2] / "bench" / "data_memory_workloads" / "filtering.py"


def _workload():
    spec = importlib.util.spec_from_file_location("filtering_workload", WORKLOAD)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_workload_filters_every_video_and_rejects_blanks(tmp_path) -> None:
    render_dataset(RenderDatasetConfig(num_objects=12, num_heldout=0, num_views=4, resolution=32,
                                       samples_per_shard=5), tmp_path / "renders")
    multiview = sorted(str(p) for p in (tmp_path / "renders/train").glob("*.tar"))
    workload = _workload()
    rng = np.random.default_rng(0)
    with ShardWriter(tmp_path / "videos", samples_per_shard=7) as w:
        for i, s in enumerate(iter_samples(multiview)):
            frames = workload._on_white(s.views)
            if i % 3 == 2:
                frames = corrupt(frames, "blank", rng)
            w.write(SyntheticVideoSample(f"v{i:03d}", s.caption or "x", frames, i, "0" * 64, {}))
    summary = workload.run(multiview, [str(p) for p in w.shards], tmp_path / "work")
    assert summary["videos"] == 12 and summary["kept"] + summary["rejected"] == 12
    scores = (tmp_path / "work/filtered/scores.csv").read_text().splitlines()[1:]
    kept = {line.split(",")[0] for line in scores if line.split(",")[2] == "1"}
    assert not any(int(k[1:]) % 3 == 2 for k in kept)  # blank videos never pass
    written = {s.key for s in iter_samples(sorted((tmp_path / "work/filtered").glob("*.tar")))}
    assert written == kept and summary["views"] == 4 * len(kept)
    with pytest.raises(ValueError, match="needs multi-view shards"):
        workload.run([], [str(p) for p in w.shards], tmp_path / "work2")
