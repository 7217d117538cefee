"""`latest:ASSET[/PARTITION]` in `vfusion3d generate --checkpoint` and `vfusion3d audit`: the current version of
an asset under the artifact root, instead of a copied versions/<digest> path."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner
from test_audit import lineage, publish

from vfusion3d_core.cli import main
from vfusion3d_core.data import ArtifactStore
from vfusion3d_core.data.latest_ref import LatestRefError, resolve_latest
from vfusion3d_core.lrm.cli import CheckpointDir


def test_resolves_the_version_latest_points_at(tmp_path):
    store = ArtifactStore(tmp_path)
    publish(store, "lrm_finetuned", {"model/config.json": "old"})
    newest = publish(store, "lrm_finetuned", {"model/config.json": "new"})
    shard = publish(store, "synthetic_videos", {"a.tar": "x"}, partition="shard-000001")
    assert resolve_latest("latest:lrm_finetuned", tmp_path) == newest.path
    assert resolve_latest("latest:synthetic_videos/shard-000001", tmp_path) == shard.path


def test_an_asset_without_a_version_names_what_is_there(tmp_path):
    publish(ArtifactStore(tmp_path), "lrm_3d_only", {"model/config.json": "c"})
    publish(ArtifactStore(tmp_path), "synthetic_videos", {"a.tar": "x"}, partition="shard-000000")
    with pytest.raises(LatestRefError) as err:
        resolve_latest("latest:lrm_finetuned", tmp_path)
    assert "lrm_finetuned has no committed version" in str(err.value)
    assert "lrm_3d_only" in str(err.value) and "synthetic_videos/shard-000000" in str(err.value)
    with pytest.raises(LatestRefError, match="none"):
        resolve_latest("latest:lrm_finetuned", tmp_path / "empty")
    with pytest.raises(LatestRefError, match="invalid"):
        resolve_latest("latest:../etc", tmp_path)


def test_checkpoint_option_takes_latest_model_folder(tmp_path, monkeypatch):
    version = publish(ArtifactStore(tmp_path), "lrm_finetuned", {"model/config.json": "{}"})
    monkeypatch.setenv("VFUSION3D_ARTIFACT_ROOT", str(tmp_path))
    assert CheckpointDir().convert("latest:lrm_finetuned", None, None) == version.path / "model"
    assert CheckpointDir().convert(str(tmp_path), None, None) == tmp_path  # plain directories as before
    with pytest.raises(click.BadParameter, match="no committed version"):
        CheckpointDir().convert("latest:lrm_pretrained", None, None)


def test_generate_with_a_missing_latest_is_a_usage_error(tmp_path, monkeypatch):
    monkeypatch.setenv("VFUSION3D_ARTIFACT_ROOT", str(tmp_path))
    result = CliRunner().invoke(main, ["generate", "x.png", "--checkpoint", "latest:lrm_finetuned",
                                       "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "lrm_finetuned has no committed version" in result.output


def test_audit_latest(tmp_path):
    store, ckpt, _, _ = lineage(tmp_path)
    result = CliRunner().invoke(main, ["audit", "latest:lrm", "--artifact-root", str(store.root)])
    assert result.exit_code == 0, result.output
    assert ckpt.digest[:12] in result.output and "audit ok" in result.output
    missing = CliRunner().invoke(main, ["audit", "latest:lrm_finetuned", "--artifact-root", str(store.root)])
    assert missing.exit_code == 1 and "no committed version" in missing.output
