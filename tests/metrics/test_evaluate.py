"""The eval_metrics step as a typed request (core) and through Dagster: a tiny CLIP folder, compute settings
recorded, and the small / paper gate naming the missing CLIP folder and LPIPS weights."""

import csv
import json

import dagster as dg
import pytest
import torch
from clip_folders import write_processor_folder
from pipeline_utils import materialize_renders

from vfusion3d_core.compute import ComputeSettings
from vfusion3d_core.data import ArtifactStore, Manifest, file_entries
from vfusion3d_core.data.audit_cli import default_tracking_uri
from vfusion3d_core.lrm import LRM
from vfusion3d_core.lrm.presets import get_preset
from vfusion3d_core.lrm.train.losses import build_lpips, lpips_backbone_path
from vfusion3d_core.metrics import ClipScorer, load_heldout_objects, score_checkpoint
from vfusion3d_core.metrics.evaluate import EvaluateRequest, run_evaluation
from vfusion3d_core.metrics.novel_views import METRICS
from vfusion3d_core.render.dataset import RenderDatasetConfig, render_dataset
from vfusion3d_pipeline.assets.evaluation import eval_metrics
from vfusion3d_pipeline.assets.lrm import FINETUNED, MODEL_DIR, PRETRAINED, THREE_D_ONLY
from vfusion3d_pipeline.resources import ArtifactStoreResource, ComputeResource, MLflowResource, PresetResource


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    d = tmp_path_factory.mktemp("renders")
    render_dataset(RenderDatasetConfig.preset("tiny", num_objects=2, num_heldout=2, num_views=4, resolution=32,
                                              seed=3), d)
    return sorted(str(p) for p in d.glob("heldout/*.tar"))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpts")
    out = {}
    for i, name in enumerate(["a", "b"]):
        torch.manual_seed(10 + i)
        LRM(get_preset("tiny")).save_pretrained(d / name)
        out[name] = str(d / name)
    return out


def test_evaluate_request_round_trips_and_checks_its_fields(tmp_path, checkpoints) -> None:
    req = EvaluateRequest({"untrained": None, **checkpoints}, ["h.tar"], str(tmp_path), untrained_config_from="a",
                          clip_path="/clip", compute=ComputeSettings("cpu", "bf16"))
    wire = json.loads(json.dumps(req.to_dict()))
    again = EvaluateRequest.from_dict(wire)
    assert again == req and list(again.checkpoints) == ["untrained", "a", "b"]
    assert isinstance(again.compute, ComputeSettings) and again.compute.precision == "bf16"
    with pytest.raises(ValueError, match="untrained_config_from"):
        EvaluateRequest({"untrained": None}, ["h.tar"], str(tmp_path))
    with pytest.raises(ValueError, match="held-out shards"):
        EvaluateRequest(checkpoints, [], str(tmp_path))


def test_scores_on_the_compute_device_match_a_direct_computation(heldout, checkpoints) -> None:
    """score_checkpoint with compute settings: predictions, then PSNR / LPIPS / CLIP-text on that device."""
    from vfusion3d_core.metrics import predict_novel_views, psnr
    from vfusion3d_core.metrics.image import lpips_distance

    compute = ComputeSettings("cpu", "fp32")
    model = LRM.from_pretrained(checkpoints["a"])
    objects = load_heldout_objects(heldout, 2, 2)
    torch.manual_seed(0)
    lpips_net = build_lpips("alex", random_backbone=True).eval()
    clip = ClipScorer.random(1, compute=compute)
    scores = score_checkpoint(model, objects, 32, lpips_net, clip, compute)
    assert [r["uid"] for r in scores.rows] == [o.uid for o in objects]
    for obj, row in zip(objects, scores.rows, strict=True):
        pred, target = predict_novel_views(model, obj, 32, compute), obj.targets(32)
        assert row["psnr"] == pytest.approx(psnr(pred, target).mean().item(), rel=1e-5)
        assert row["lpips"] == pytest.approx(lpips_distance(lpips_net, pred, target).mean().item(), rel=1e-4)
        text = clip.text_similarity(pred, [obj.caption] * len(pred)).mean().item()
        assert row["clip_text"] == pytest.approx(text, rel=1e-4, abs=1e-5)
        assert set(METRICS) <= set(row)


def test_run_evaluation_with_a_clip_folder(tmp_path, heldout, checkpoints) -> None:
    clip_dir = tmp_path / "clip"
    write_processor_folder(clip_dir, shortest_edge=32, crop=32)
    req = EvaluateRequest({"untrained": None, **checkpoints}, heldout, str(tmp_path / "out"), untrained_config_from="a",
                          max_objects=2, novel_views=2, render_size=32, turntable_frames=2, clip_path=str(clip_dir),
                          compute=ComputeSettings("cpu", "fp32"))
    logs: list[str] = []
    result = run_evaluation(EvaluateRequest.from_dict(req.to_dict()), log=logs.append)
    assert result.labels["clip"] == "clip" and "RANDOM" in result.labels["lpips"]
    assert list(result.means) == ["untrained", "a", "b"] and result.objects == 2
    assert all(-1 <= result.means[c]["clip_text"] <= 1 and result.means[c]["psnr"] > 0 for c in result.means)
    assert result.means["a"] != result.means["b"]  # different weights, different scores
    rows = list(csv.DictReader((tmp_path / "out/metrics.csv").open()))
    assert [r["checkpoint"] for r in rows] == ["untrained", "a", "b"]
    assert float(rows[1]["lpips"]) == pytest.approx(result.means["a"]["lpips"])
    assert all((tmp_path / "out" / f).is_file() for f in result.files)
    assert "on cpu" in logs[0]
    again = run_evaluation(req)  # seeded: the untrained architecture and metric models are the same
    assert again.means == result.means


# ---- through Dagster ----

def _resources(root, preset: str) -> dict:
    return {"artifacts": ArtifactStoreResource(root=str(root)), "preset": PresetResource(name=preset),
            "mlflow": MLflowResource(artifact_root=str(root)),
            "compute": ComputeResource(device="cpu", precision="fp32")}


def _commit_checkpoint(store: ArtifactStore, name: str, seed: int) -> None:
    """A committed LRM version without training (eval_metrics reads only its model folder and inputs)."""
    with store.staging(name) as d:
        torch.manual_seed(seed)
        LRM(get_preset("tiny")).save_pretrained(d / MODEL_DIR)
        files = sorted(p.relative_to(d).as_posix() for p in (d / MODEL_DIR).rglob("*") if p.is_file())
        store.commit(d, Manifest(name, file_entries(d, files), {}, {}), name)


def test_eval_metrics_asset_with_a_clip_folder_and_the_paper_gate(tmp_path) -> None:
    import mlflow

    root = tmp_path / "artifacts"
    instance = dg.DagsterInstance.ephemeral()
    # paper without CLIP folder / LPIPS weights: refused before anything is read, naming both
    if not lpips_backbone_path("alex").is_file():
        with pytest.raises(dg.Failure, match=r"clip_path is not set.*from_scratch.*LPIPS backbone .*alexnet"):
            dg.materialize([eval_metrics], instance=instance, resources=_resources(root, "paper"))
    else:
        with pytest.raises(dg.Failure, match=r"clip_path is not set"):
            dg.materialize([eval_metrics], instance=instance, resources=_resources(root, "paper"))
    with pytest.raises(dg.Failure, match=r"lpips_random_backbone=True at preset 'small' needs from_scratch"):
        dg.materialize([eval_metrics], instance=instance, resources=_resources(root, "small"),
                       run_config={"ops": {"eval_metrics": {"config": {"clip_path": str(tmp_path),
                                                                       "lpips_random_backbone": True}}}})

    materialize_renders(_resources(root, "tiny"), instance)
    store = ArtifactStore(root)
    for i, name in enumerate([PRETRAINED, FINETUNED, THREE_D_ONLY]):
        _commit_checkpoint(store, name, i)
    clip_dir = tmp_path / "clip_folder"
    write_processor_folder(clip_dir, shortest_edge=32, crop=32)
    config = {"max_objects": 2, "novel_views": 2, "render_size": 32, "turntable_frames": 2, "clip_path": str(clip_dir)}
    result = dg.materialize([eval_metrics], instance=instance, resources=_resources(root, "tiny"),
                            run_config={"ops": {"eval_metrics": {"config": config}}})
    assert result.success
    meta = result.asset_materializations_for_node("eval_metrics")[0].metadata
    assert meta["clip_model"].value == "clip_folder" and "RANDOM backbone" in meta["lpips_backbone"].value
    assert meta["compute"].value["resolved_device"] == "cpu"
    version = store.latest("eval_metrics")
    assert version.manifest.config["compute"]["resolved_precision"] == "fp32"
    assert version.manifest.config["clip"] == "clip_folder"
    assert "Computed on cpu (fp32)" in (version.path / "ablation.md").read_text()
    run = mlflow.MlflowClient(default_tracking_uri(root)).get_run(meta["mlflow_run_id"].value)
    assert run.data.params["compute.resolved_device"] == "cpu" and run.data.params["clip"] == "clip_folder"
    assert set(run.data.metrics) >= {f"{c}.{m}" for c in ("untrained", PRETRAINED) for m in METRICS}

    # paper with the CLIP folder and from_scratch (no LPIPS weights here): runs, LPIPS labelled RANDOM
    scratch = dg.materialize([eval_metrics], instance=instance, resources=_resources(root, "paper"),
                             run_config={"ops": {"eval_metrics": {"config": {**config, "from_scratch": True}}}})
    assert scratch.success
    smeta = scratch.asset_materializations_for_node("eval_metrics")[0].metadata
    assert smeta["clip_model"].value == "clip_folder"
    if not lpips_backbone_path("alex").is_file():
        assert "RANDOM" in smeta["lpips_backbone"].value
