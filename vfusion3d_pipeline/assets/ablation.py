"""`ablation_report`: the paper's data-source ablation in miniature, as one experiment asset (docs/ablation.md).

Unlike the data-engine graph, the experiment builds its own disjoint object populations (held-out, validation,
3D set, clip population, prompt objects), pretrains a video prior on unposed clips, fine-tunes it on the 3D set,
synthesizes and filters videos, and trains every LRM arm at every seed (vfusion3d_core/ablation/). Its stages
resume from ``<artifact root>/.work/ablation_report/<preset>`` after a kill. The version holds the report
(table, findings), ``ablation.json`` and the dose-response plot; MLflow gets one child run per arm and seed under
the asset's run and the dose-response as metrics stepped by the number of synthetic videos.

It is in the ``experiments`` group: the whole graph (``make tiny``, whole_graph.py) leaves it out (about 45 minutes on
2 CPU cores at ``mini``); the ``ablation`` job or ``make ablation`` runs it.

(No `from __future__ import annotations` in Dagster modules: Dagster resolves config and resource
annotations at decoration time.)
"""

import os
from typing import Literal

import dagster as dg
from pydantic import Field

from vfusion3d_pipeline.asset_keys import ABLATION_REPORT
from vfusion3d_pipeline.metadata import image_markdown, materialize_result
from vfusion3d_pipeline.publish import publishing
from vfusion3d_pipeline.resources import ArtifactStoreResource, ComputeResource, MLflowResource, StepComputeConfig

ASSET = ABLATION_REPORT
CODE_VERSION = "ablation_report-v1"
GROUP = "experiments"
COMMAND = "make ablation"


class AblationReportConfig(StepComputeConfig):
    """Which scale of the ablation to run; unset fields take the preset's value."""

    preset: Literal["mini", "smoke"] = Field(
        "mini", description="mini: the committed report (64 held-out objects x 8 views, 3 seeds, doses 0/250/1000; "
                            "about 45 min on 2 CPU cores). smoke: every stage in a couple of minutes.")
    seeds: list[int] | None = Field(None, description="LRM seeds per arm (unset: the preset's, mini 0, 1, 2).")
    doses: list[int] | None = Field(None, description="Synthetic-video doses of the synthetic -> 3D arm; the "
                                                      "largest is the number of prompts (unset: the preset's).")
    torch_threads: int | None = Field(None, description="CPU threads for torch (unset: torch's default).")
    restart: bool = Field(False, description="Discard the finished stages of earlier runs of this preset and "
                                             "recompute everything (default: resume / reuse them).")

    def ablation_config(self):
        from vfusion3d_core.ablation import AblationConfig

        overrides = {k: v for k, v in {"seeds": self.seeds, "doses": self.doses,
                                       "torch_threads": self.torch_threads}.items() if v is not None}
        return AblationConfig.preset(self.preset, **overrides)


@dg.asset(
    name=ASSET,
    group_name=GROUP,
    kinds={"pytorch", "mlflow"},
    code_version=CODE_VERSION,
    description="The data-source ablation in miniature: 3D-only, synthetic-only, synthetic -> 3D at several doses "
                "and an oracle arm, compute-matched, over seeds, on disjoint populations; the report, the "
                "dose-response plot and where the chain breaks.",
)
def ablation_report(context: dg.AssetExecutionContext, config: AblationReportConfig,
                    artifacts: ArtifactStoreResource, compute: ComputeResource,
                    mlflow: MLflowResource) -> dg.MaterializeResult:
    import shutil

    from vfusion3d_core.ablation.report import FILES, write_report
    from vfusion3d_core.ablation.run import run_ablation

    cfg = config.ablation_config()
    settings = compute.settings(config)
    store = artifacts.store()
    work = os.path.join(str(store.root), ".work", ASSET, config.preset)
    if config.restart:
        shutil.rmtree(work, ignore_errors=True)
    with publishing(context, store, mlflow, ASSET, CODE_VERSION) as pub:
        run = run_ablation(cfg, work, settings, log=context.log.info)
        summary = write_report(run, pub.staging, COMMAND)
        counts = {"arms": len(run.arms), "seeds": len(cfg.seeds), "heldout_objects": cfg.heldout_objects,
                  "checkpoints": len(run.trained)}
        run_config = {**cfg.to_dict(), "compute": settings.describe(), "lr_chosen": run.lr}
        version = pub.commit(list(FILES), counts, run_config, inputs={})
        _log_to_mlflow(pub.run, run, summary, run_config)
        pub.run.log_artifact(version.path / "report.md")
        pub.run.log_artifact(version.path / "dose_response.png")
    return materialize_result(version, {
        "report": dg.MetadataValue.md((version.path / "report.md").read_text(encoding="utf-8")),
        "dose_response": image_markdown(version.path / "dose_response.png", "held-out quality vs synthetic videos"),
        **{f"{arm}/{m}": summary["arms"][arm][m]["mean"] for arm in summary["arms"] for m in ("psnr", "lpips")},
        "minutes": round(summary["total_seconds"] / 60, 1),
        "mlflow_run_id": pub.run.run_id,
    })


def _log_to_mlflow(parent, run, summary: dict, run_config: dict) -> None:
    """The asset's run: config, per-arm means, the dose-response stepped by dose; one child run per checkpoint."""
    parent.log_params(run_config)
    for arm, stats in summary["arms"].items():
        parent.log_metrics({f"{arm}.{m}": stats[m]["mean"] for m in ("psnr", "ssim", "lpips")})
        parent.log_metrics({f"{arm}.{m}_std": stats[m]["std"] for m in ("psnr", "ssim", "lpips")})
    for row in summary["doses"]:  # MLflow plots a metric against its step: here the number of synthetic videos
        parent.log_metrics({f"dose_response.{m}": row[m]["mean"] for m in ("psnr", "ssim", "lpips")}, step=row["dose"])
    for name, trained in run.trained.items():
        parent.log_child(name, {"arm": trained["arm"], "seed": trained["seed"], "lr": trained["lr"],
                                "phases": [p["data"] for p in trained["phases"]],
                                "optimizer_steps": trained["optimizer_steps"]}, run.heldout[name])
