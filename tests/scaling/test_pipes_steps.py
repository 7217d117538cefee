"""GPU steps through Dagster Pipes: the core entries need dagster-pipes only; cluster launch parameters.
A Pipes-launched training step reporting its metrics onto the asset: tests/scaling/test_scaled_graph.py."""

import subprocess
import sys

from pipeline_utils import REPO

from vfusion3d_pipeline.gpu_steps import ecs_run_task_params, step_command


def test_pipes_entries_import_dagster_pipes_but_not_dagster() -> None:
    code = ("import sys, vfusion3d_core.lrm.train.pipes_entry, vfusion3d_core.video.pipes_entry, vfusion3d_core.pipes;"
            "import vfusion3d_core.lrm.train.trainer, vfusion3d_core.video.synthesis;"
            "print(sorted(m for m in sys.modules if m == 'dagster' or m.startswith('dagster.')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cluster_launch_parameters() -> None:
    assert step_command("m.entry", 1, "py") == ["py", "-m", "m.entry"]
    assert step_command("m.entry", 4)[:5] == ["python", "-m", "torch.distributed.run", "--standalone",
                                              "--nproc_per_node=4"]
    base = {"cluster": "gpu", "taskDefinition": "vfusion3d:3", "launchType": "EC2",
            "overrides": {"containerOverrides": [{"name": "vfusion3d", "environment": [{"name": "A", "value": "1"},
                                                                                         {"name": "B", "value": "x"}]},
                                                 {"name": "sidecar"}]}}
    params = ecs_run_task_params(base, "vfusion3d", ["python", "-m", "m.entry"], {"B": "2", "C": "3"})
    mine = params["overrides"]["containerOverrides"][0]
    assert mine["command"] == ["python", "-m", "m.entry"]
    assert mine["environment"] == [{"name": n, "value": v} for n, v in (("A", "1"), ("B", "2"), ("C", "3"))]
    assert params["overrides"]["containerOverrides"][1] == {"name": "sidecar"} and base["cluster"] == "gpu"
    assert "command" not in base["overrides"]["containerOverrides"][0]  # the base is not modified
