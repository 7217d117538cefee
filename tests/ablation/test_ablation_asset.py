"""The `ablation` job end to end at the `smoke` preset: every stage, every arm and seed, the report with its
verdict and plot, MLflow child runs and the dose-response metric stepped by dose; a second run reuses every
finished stage."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import mlflow
import pytest

from vfusion3d_core.ablation import AblationConfig
from vfusion3d_core.ablation.arms import ablation_arms, checkpoint_name
from vfusion3d_core.data import ArtifactStore
from vfusion3d_pipeline.definitions import build_definitions
from vfusion3d_pipeline.resources import ArtifactStoreResource, ComputeResource, MLflowResource, PresetResource


def resources(root: Path) -> dict:
    return {"artifacts": ArtifactStoreResource(root=str(root)), "preset": PresetResource(name="tiny"),
            "mlflow": MLflowResource(artifact_root=str(root)),
            "compute": ComputeResource(device="cpu", precision="fp32")}


@pytest.mark.slow
def test_ablation_job_at_smoke_reports_every_arm_and_resumes(tmp_path) -> None:
    defs = build_definitions(resources(tmp_path))
    job = defs.resolve_job_def("ablation")
    config = {"ops": {"ablation_report": {"config": {"preset": "smoke"}}}}
    instance = dg.DagsterInstance.ephemeral()
    first = job.execute_in_process(run_config=config, instance=instance)
    assert first.success
    [event] = first.get_asset_materialization_events()
    meta = event.materialization.metadata
    assert "Findings" in meta["report"].value and "data:image/png;base64," in meta["dose_response"].value

    cfg = AblationConfig.preset("smoke")
    version = ArtifactStore(tmp_path).latest("ablation_report")
    summary = json.loads((version.path / "ablation.json").read_text())
    arms = [a.name for a in ablation_arms(cfg)]
    assert set(summary["arms"]) == set(arms)
    steps = {summary["arms"][a]["optimizer_steps"] for a in arms}
    assert steps == {2 * cfg.lrm_steps}  # compute-matched
    assert [d["dose"] for d in summary["doses"]] == list(cfg.doses)
    assert summary["lr"] in cfg.lr_candidates and set(summary["lr_search"]) == {f"{x:g}" for x in cfg.lr_candidates}
    for arm in arms:
        assert summary["arms"][arm]["psnr"]["n"] == len(cfg.seeds)
    assert (version.path / "dose_response.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (version.path / "report.md").read_text()
    assert "make ablation" in report and "oracle_to_3d-8" in report and "## Leakage (blocking)" in report

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent = client.get_run(meta["mlflow_run_id"].value)
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(r.info.run_name for r in children) == sorted(checkpoint_name(a, s) for a in ablation_arms(cfg)
                                                               for s in cfg.seeds)
    assert all("psnr" in r.data.metrics for r in children)
    history = client.get_metric_history(parent.info.run_id, "dose_response.psnr")
    assert sorted(m.step for m in history) == list(cfg.doses)

    second = job.execute_in_process(run_config=config, instance=instance)
    assert second.success
    again = json.loads((ArtifactStore(tmp_path).latest("ablation_report").path / "ablation.json").read_text())
    assert set(again["reused_stages"]) == set(summary["timings"])  # nothing recomputed
    assert again["arms"] == summary["arms"]
