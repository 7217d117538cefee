"""`vfusion3d label`: terminal review that appends good/bad rows the quality_models asset can read."""

import numpy as np
from click.testing import CliRunner

from vfusion3d_core.cli import main
from vfusion3d_core.data import ArtifactStore, Manifest, file_entries
from vfusion3d_core.data.shards import ShardWriter
from vfusion3d_core.data.video_sample import SyntheticVideoSample
from vfusion3d_core.filtering import read_labels_csv


def _publish_videos(root, part: str, keys: list[str]) -> None:
    store = ArtifactStore(root)
    rng = np.random.default_rng(0)
    with store.staging("synthetic_videos", part) as staging:
        with ShardWriter(staging, 2) as w:
            for k in keys:
                frames = rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
                w.write(SyntheticVideoSample(k, f"prompt of {k}", frames, 1, "ab" * 8, {}))
        files = [p.name for p in w.shards]
        store.commit(staging, Manifest("synthetic_videos", file_entries(staging, files), {"videos": len(keys)}, {}),
                     "synthetic_videos", part)


def test_label_appends_rows_and_skips_labelled(tmp_path) -> None:
    root = tmp_path / "artifacts"
    _publish_videos(root, "shard-000000", ["pa", "pb", "pc"])
    _publish_videos(root, "shard-000001", ["pd"])
    labels = tmp_path / "labels" / "labels.csv"
    runner = CliRunner()
    first = runner.invoke(main, ["label", "--artifacts", str(root), "--labels", str(labels)], input="g\nx\nb\nq\n")
    assert first.exit_code == 0, first.output
    assert "prompt of pa" in first.output and "stopped" in first.output
    assert read_labels_csv(labels) == {"pa": 1, "pb": 0}
    previews = sorted(p.name for p in (tmp_path / "labels" / "previews").iterdir())
    assert previews == ["shard-000000_pa.png", "shard-000000_pb.png", "shard-000000_pc.png"]
    from PIL import Image

    assert Image.open(tmp_path / "labels/previews/shard-000000_pa.png").size == (4 * 96, 96)
    second = runner.invoke(main, ["label", "--artifacts", str(root), "--labels", str(labels)], input="s\ng\n")
    assert second.exit_code == 0, second.output
    assert "prompt of pa" not in second.output and "prompt of pc" in second.output
    assert read_labels_csv(labels) == {"pa": 1, "pb": 0, "pd": 1}
    assert labels.read_text().splitlines()[0] == "video_key,label,partition,labelled_at"
    relabel = runner.invoke(main, ["label", "--artifacts", str(root), "--labels", str(labels), "--relabel",
                                   "--partition", "shard-000000"], input="b\nq\n")
    assert relabel.exit_code == 0 and read_labels_csv(labels)["pa"] == 0
    missing = runner.invoke(main, ["label", "--artifacts", str(tmp_path / "none"), "--labels", str(labels)])
    assert missing.exit_code != 0 and "synthesize a prompt shard first" in missing.output
