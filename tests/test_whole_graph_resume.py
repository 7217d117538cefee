"""`make tiny`'s command SIGKILLed while the whole-graph backfill runs: its dagster dev stops with it, and the
next launch waits for that backfill (the daemon resumes it; runs killed with the first dagster dev are failed by
recovery and retried by the instance's run retries) instead of launching a second one; every asset and partition
ends materialized by the two original backfills."""

import json
import os
import signal
import subprocess
import sys
import time

import dagster as dg
import pytest
from pipeline_utils import REPO, pipeline_env, run_whole_graph
from test_whole_graph import PROMPTS, assert_whole_graph_by_backfill, micro_run_config

from vfusion3d_pipeline.definitions import build_definitions
from vfusion3d_pipeline.resources import ArtifactStoreResource, ComputeResource, MLflowResource, PresetResource

pytestmark = pytest.mark.slow  # the micro graph through dagster dev, killed once (minutes)


def wait_for_started_run(home: str, timeout_s: float = 600) -> None:
    """Until a run of the whole-graph backfill has started (the event the kill waits for)."""
    deadline = time.monotonic() + timeout_s
    with dg.DagsterInstance.from_config(home) as instance:
        while time.monotonic() < deadline:
            backfills = [b for b in instance.get_backfills() if b.title == "whole graph"]
            if backfills and instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": backfills[0].backfill_id},
                                                             statuses=[dg.DagsterRunStatus.STARTED])):
                return
            time.sleep(0.5)
    raise AssertionError("no run of the whole-graph backfill started")


def test_killed_whole_graph_resumes_its_backfill(tmp_path, monkeypatch) -> None:
    env = pipeline_env(tmp_path)
    env.update(VFUSION3D_DEVICE="cpu", VFUSION3D_PRECISION="fp32")
    monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    config = micro_run_config(prompts)
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config))
    first = subprocess.Popen([sys.executable, "-m", "vfusion3d_pipeline.whole_graph", "--config", str(config_file),
                              "--port", "0"], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_started_run(env["DAGSTER_HOME"])
    finally:
        os.kill(first.pid, signal.SIGKILL)  # the command only: its dagster dev gets SIGTERM from the kernel
        first.wait()

    rerun = run_whole_graph(env, config, tmp_path)
    assert "whole graph: backfill" in rerun.stdout and "still in progress; waiting" in rerun.stdout, rerun.stdout
    root = env["VFUSION3D_ARTIFACT_ROOT"]
    defs = build_definitions({"artifacts": ArtifactStoreResource(root=root), "preset": PresetResource(name="tiny"),
                              "mlflow": MLflowResource(artifact_root=root),
                              "compute": ComputeResource(device="cpu", precision="fp32")})
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        assert_whole_graph_by_backfill(instance, defs)  # the same two backfills, no third
