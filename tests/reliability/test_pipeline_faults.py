"""SIGKILL `dagster asset materialize` at random points (a shard write, anywhere in the step), re-run it, and check
that nothing partial is ever visible, the re-run's digest equals an uninterrupted run's, no sample is lost or
duplicated, and the Dagster instance and MLflow store end consistent (no run STARTED, no MLflow run RUNNING).

The CI set kills `renders_3d` twice (each kill costs a CLI start-up of ~20 s on a busy 2-core machine);
``python -m tests.reliability --only pipeline`` kills every asset of the graph. Harness: pipeline_faults.py."""

from __future__ import annotations

import pytest
from figures import record_pipeline_faults
from pipeline_faults import run_pipeline_faults


@pytest.mark.slow
def test_killed_materialization_recovers(tmp_path) -> None:
    lines: list[str] = []
    reports = run_pipeline_faults(tmp_path, {"renders_3d": 2}, seed=0, verbose=True, log=lines.append)
    for name, report in reports.items():
        record_pipeline_faults(name, report)
    report = reports["renders_3d[objects-000000]"]
    assert report.failures == [], "\n".join(lines)
    assert report.injected == 2 and report.recovered == 2, "\n".join(lines)
    assert {k.kind for k in report.kills if k.killed} == {"events", "time"}, "\n".join(lines)
