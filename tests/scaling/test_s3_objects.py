"""Source objects listed by s3:// URI (a Parquet listing, as Objaverse / Cap3D exports are kept on object stores):
each object is downloaded when its partition renders; a missing key is skipped by name and the others render."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import trimesh

from vfusion3d_core.data import iter_samples
from vfusion3d_core.data.s3_store import ENV_ENDPOINT, ENV_REGION
from vfusion3d_core.objects.listing import ObjectListingConfig, build_listing
from vfusion3d_core.render.dataset import RenderSettings, render_objects

BOX_TEXTURED = Path("/usr/share/assimp/models/glTF2/BoxTextured-glTF-Binary/BoxTextured.glb")


@pytest.mark.skipif(not BOX_TEXTURED.is_file(), reason="sample models missing (scripts/setup.sh installs "
                                                         "assimp-testmodels)")
def test_objects_listed_by_s3_uri_render_and_a_missing_key_is_skipped(s3_server, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(ENV_ENDPOINT, s3_server.endpoint)
    monkeypatch.setenv(ENV_REGION, "us-east-1")
    s3_server.client.upload_file(str(BOX_TEXTURED), s3_server.bucket, "objaverse/box.glb")
    ply = tmp_path / "tall.ply"
    trimesh.creation.box(extents=(0.3, 0.3, 1.0)).export(ply)
    s3_server.client.upload_file(str(ply), s3_server.bucket, "objaverse/tall.ply")
    bucket = f"s3://{s3_server.bucket}/objaverse"
    listing_file = tmp_path / "listing.parquet"
    pq.write_table(pa.table({"uid": ["box", "tall", "gone"],
                             "uri": [f"{bucket}/box.glb", f"{bucket}/tall.ply", f"{bucket}/gone.glb"],
                             "caption": ["a textured box", "a tall grey box", "never uploaded"]}), listing_file)

    listing = build_listing(ObjectListingConfig(source="listing", listing=str(listing_file), num_objects=0,
                                                num_heldout=0, objects_per_partition=2, up_axis="z"))
    assert [(r.uid, r.partition) for r in listing.rows] == sorted(
        [(r.uid, r.partition) for r in listing.rows], key=lambda x: x[1])  # partition order
    assert {r.uid for r in listing.rows} == {"box", "tall", "gone"} and len(listing.partitions) == 2

    out = tmp_path / "renders"
    result = render_objects(listing.rows, RenderSettings(resolution=32, num_views=4, samples_per_shard=4), out,
                            up_axis="z")
    assert [(Path(s.path).name, s.reason.split(":")[0]) for s in result.skipped] == [("gone.glb", "gone")]
    assert result.counts["train_objects"] == 2
    samples = {s.key: s for s in iter_samples(sorted(out.glob("train/*.tar")))}
    assert set(samples) == {"box", "tall"} and samples["box"].caption == "a textured box"
    # the textured box is not one flat grey: its texture (blue and green logo) is sampled per pixel
    rgba = samples["box"].views
    colours = rgba[..., :3][rgba[..., 3] == 255].astype(int)
    assert (colours[:, 2] - colours[:, 0] > 40).any() and (colours[:, 1] - colours[:, 0] > 20).any()
    # up_axis z keeps the tall box standing along world z: its views are taller than wide
    alpha = samples["tall"].views[0, ..., 3] > 0
    rows, cols = np.nonzero(alpha)
    assert np.ptp(rows) > 1.5 * np.ptp(cols)
