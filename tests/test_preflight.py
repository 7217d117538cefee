"""Preflight: every pretrained folder the preset needs, checked before the whole graph starts (nothing runs)."""

import subprocess
import sys
from pathlib import Path

from pipeline_utils import REPO, pipeline_env

from vfusion3d_core.lrm.train.losses import BACKBONE_FILES
from vfusion3d_pipeline.preflight import missing_pretrained


def test_paper_without_weights_fails_before_any_work_naming_every_path(tmp_path) -> None:
    """The README's main command at `paper` with no model folders: a clear refusal in seconds, nothing run."""
    env = pipeline_env(tmp_path)
    env["VFUSION3D_PRESET"] = "paper"
    proc = subprocess.run([sys.executable, "-m", "vfusion3d_pipeline.whole_graph"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    message = proc.stderr
    assert "cannot start at preset 'paper'" in message, message[-2000:]
    for field in ("svd_path", "image_model_path", "dino_path", "dino_pretrained_path", "clip_path"):
        assert f"{field} is not set" in message, field
    for asset in ("video_model", "quality_models", "lrm_3d_only", "lrm_pretrained", "eval_metrics"):
        assert asset in message, asset
    assert "dagster dev" not in proc.stdout and not Path(env["VFUSION3D_ARTIFACT_ROOT"], "renders_3d").exists()


def test_preflight_passes_with_every_folder_or_an_explicit_from_scratch(tmp_path, monkeypatch) -> None:
    folders = {name: tmp_path / name for name in ("svd", "sd", "dino", "clip")}
    for folder in folders.values():
        folder.mkdir()
    hub = tmp_path / "torch_home" / "hub" / "checkpoints"  # presence of the LPIPS backbones is what is checked
    hub.mkdir(parents=True)
    for name in BACKBONE_FILES.values():
        (hub / name).write_bytes(b"weights")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    lrm = {"config": {"dino_pretrained_path": str(folders["dino"])}}
    config = {"ops": {"video_model": {"config": {"svd_path": str(folders["svd"]),
                                                 "image_model_path": str(folders["sd"])}},
                      "quality_models": {"config": {"dino_path": str(folders["dino"])}},
                      "lrm_3d_only": lrm, "lrm_pretrained": lrm,
                      "eval_metrics": {"config": {"clip_path": str(folders["clip"])}}}}
    assert missing_pretrained("paper", config) == []
    missing = missing_pretrained("small", {"ops": {"video_model": {"config": {"from_scratch": True}}}})
    assert [p.split(" ")[0].rstrip(":") for p in missing] == ["quality_models", "lrm_3d_only", "lrm_pretrained",
                                                               "eval_metrics"]  # lrm_finetuned starts from a model
    config["ops"]["quality_models"]["config"]["dino_path"] = str(tmp_path / "nowhere")
    assert missing_pretrained("tiny", config) == [
        f"quality_models at preset 'tiny' needs pretrained weights: dino_path={str(tmp_path / 'nowhere')!r} is not a "
        "directory (a local Dinov2Model folder with its image processor (preprocessor_config.json) saved alongside)"]
