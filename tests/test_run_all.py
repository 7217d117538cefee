import subprocess
import sys
from pathlib import Path

import dagster as dg
from pipeline_utils import REPO, pipeline_env

from vfusion3d_core.lrm.train.losses import BACKBONE_FILES
from vfusion3d_pipeline.definitions import defs
from vfusion3d_pipeline.preflight import missing_pretrained
from vfusion3d_pipeline.run_all import stages


def test_stages_cover_every_asset_once_in_dependency_order() -> None:
    plan = stages()
    graph = defs.resolve_asset_graph()
    materializable = {k.to_user_string() for k in graph.get_all_asset_keys() if graph.get(k).is_materializable}
    experiments = {k.to_user_string() for k in graph.get_all_asset_keys() if graph.get(k).group_name == "experiments"}
    assert experiments == {"ablation_report"}  # its own job: ~45 min at mini, never part of make tiny
    listed = [name for stage in plan for name in stage.assets]
    assert sorted(listed) == sorted(materializable - experiments)
    by_asset = {name: stage for stage in plan for name in stage.assets}
    assert by_asset["renders_3d"].partitions == "object_shards"
    assert by_asset["synthetic_videos"].partitions == "prompt_shards"
    assert by_asset["source_objects"].partitions is None and by_asset["video_model"].partitions is None
    for stage in plan:  # a stage's assets share its partitioning
        for name in stage.assets:
            pdef = graph.get(dg.AssetKey(name)).partitions_def
            assert (pdef.name if pdef else None) == stage.partitions, name
    position = {name: i for i, stage in enumerate(plan) for name in stage.assets}
    for key in graph.get_all_asset_keys():
        for parent in graph.get(key).parent_keys:
            p, k = parent.to_user_string(), key.to_user_string()
            if p in position and k in position:  # same stage only when both share one partitioning
                assert position[p] < position[k] or (position[p] == position[k]), (parent, key)
    # the 3D-only baseline needs no synthetic data: it runs before synthesis
    assert position["lrm_3d_only"] < position["synthetic_videos"] < position["lrm_pretrained"]


def test_paper_without_weights_fails_before_any_work_naming_every_path(tmp_path) -> None:
    """The README's main command at `paper` with no model folders: a clear refusal in seconds, nothing run."""
    env = pipeline_env(tmp_path)
    env["VFUSION3D_PRESET"] = "paper"
    proc = subprocess.run([sys.executable, "-m", "vfusion3d_pipeline.run_all"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    message = proc.stderr
    assert "cannot start at preset 'paper'" in message, message[-2000:]
    for field in ("svd_path", "image_model_path", "dino_path", "dino_pretrained_path", "clip_path"):
        assert f"{field} is not set" in message, field
    for asset in ("video_model", "quality_models", "lrm_3d_only", "lrm_pretrained", "eval_metrics"):
        assert asset in message, asset
    assert "materializing" not in proc.stdout and not Path(env["VFUSION3D_ARTIFACT_ROOT"], "renders_3d").exists()


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
