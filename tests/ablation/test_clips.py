"""Unposed clips for the video prior: random camera paths, pale tinted backgrounds, deterministic bytes, and a bad
object skipped by name while the others are filmed."""

from __future__ import annotations

import numpy as np

from vfusion3d_core.data.shards import iter_samples
from vfusion3d_core.objects.listing import ListedObject
from vfusion3d_core.objects.procedural import ProceduralObjectGenerator
from vfusion3d_core.video.clips import ClipSettings, render_clips
from vfusion3d_core.video.data import OrbitShards


def rows(n: int, seed: int = 5) -> list[ListedObject]:
    gen = ProceduralObjectGenerator(seed)
    return [ListedObject(gen.uid(i), f"procedural:{i}", gen.spec(i).caption, "train", "clips") for i in range(n)]


def test_clips_have_random_paths_tints_and_stream_as_orbits(tmp_path) -> None:
    settings = ClipSettings(resolution=32, num_frames=6, samples_per_shard=2, seed=1)
    counts, skipped = render_clips(rows(4), settings, tmp_path / "a", world_seed=5)
    assert counts == {"clips": 4, "frames": 24, "shards": 2, "skipped": 0} and skipped == []
    samples = list(iter_samples(sorted(str(p) for p in (tmp_path / "a").glob("*.tar"))))
    starts, speeds = set(), set()
    for s in samples:
        assert s.views.shape == (6, 32, 32, 4) and (s.views[..., 3] == 255).all()  # composited: no alpha left
        corner = s.views[:, 0, 0, :3].astype(int)  # background: the clip's pale tint
        assert (corner == np.asarray(s.meta["tint"])).all() and (corner >= 255 - settings.max_tint).all()
        az = np.asarray(s.meta["azimuth_deg"])
        step = (np.diff(az) + 180) % 360 - 180  # signed degrees per frame
        assert np.allclose(step, step[0], atol=1e-3) and 8.0 <= abs(step[0]) <= 36.0
        starts.add(round(az[0], 3))
        speeds.add(round(step[0], 3))
    assert len(starts) == 4 and len(speeds) == 4  # no two clips share a path
    assert {np.sign(s) for s in speeds} == {-1.0, 1.0}  # both directions occur
    frames, captions = OrbitShards([str(p) for p in sorted((tmp_path / "a").glob("*.tar"))], 6, 32).first(4)
    assert frames.shape == (4, 6, 32, 32, 3) and len(captions) == 4
    again, _ = render_clips(rows(4), settings, tmp_path / "b", world_seed=5)
    for a, b in zip(sorted((tmp_path / "a").glob("*.tar")), sorted((tmp_path / "b").glob("*.tar")), strict=True):
        assert a.read_bytes() == b.read_bytes()


def test_a_bad_object_is_skipped_by_name_and_the_rest_filmed(tmp_path) -> None:
    bad = ListedObject("broken-object", str(tmp_path / "missing.glb"), "a missing file", "train", "clips")
    counts, skipped = render_clips([*rows(2), bad], ClipSettings(resolution=16, num_frames=3), tmp_path, 5)
    assert counts["clips"] == 2 and counts["skipped"] == 1
    assert len(skipped) == 1 and skipped[0].startswith("broken-object: ")
