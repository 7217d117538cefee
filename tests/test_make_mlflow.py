"""`make mlflow` serves the real MLflow UI over the pipeline's tracking store (sqlite under the artifact root):
a run the pipeline's own `mlflow_run` logged there is listed by the server `make mlflow` started, and the UI's
experiment page renders it in headless Chromium without a page error."""

from __future__ import annotations

import json
import os
import shutil
import sys
import urllib.request
from pathlib import Path

import pytest
from pipeline_utils import free_port, serving

from vfusion3d_core.data.artifacts import default_tracking_uri
from vfusion3d_pipeline.tracking import mlflow_run
from vfusion3d_pipeline.ui_browser import Shot, take


def post_json(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_mlflow_serves_the_pipelines_runs(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    root.mkdir()
    location = "file://" + str(root / "mlflow-artifacts")
    with mlflow_run(default_tracking_uri(root), "vfusion3d", "probe", {"dagster.run_id": "r1"}, location) as run:
        run.log_metrics({"loss": 0.5}, step=1)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["VFUSION3D_ARTIFACT_ROOT"] = str(root)
    log_path = tmp_path / "mlflow.log"
    # -o setup: the recipe of `make mlflow` itself, without re-running scripts/setup.sh
    cmd = ["make", "-o", "setup", "mlflow", f"MLFLOW_PORT={port}", f"PY={sys.executable}"]
    base = f"http://127.0.0.1:{port}"
    with serving(cmd, env, log_path, f"{base}/health"):
        with urllib.request.urlopen(base + "/", timeout=10) as page:
            assert page.status == 200 and b"<html" in page.read().lower()
        experiments = post_json(f"{base}/api/2.0/mlflow/experiments/search", {"max_results": 100})
        (exp,) = [e for e in experiments["experiments"] if e["name"] == "vfusion3d"]
        assert exp["artifact_location"] == location
        runs = post_json(f"{base}/api/2.0/mlflow/runs/search", {"experiment_ids": [exp["experiment_id"]]})
        (found,) = runs["runs"]
        assert found["info"]["run_id"] == run.run_id
        assert {"key": "loss", "value": 0.5} in [{k: m[k] for k in ("key", "value")}
                                                  for m in found["data"]["metrics"]]
        page = f"/#/experiments/{exp['experiment_id']}/runs"
        take((Shot("mlflow", page, "probe"),), {"mlflow": base}, out=None)  # the run's name in the runs table
