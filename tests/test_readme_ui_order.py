"""The README's "From the Dagster UI" steps name real jobs and assets, in the order `run_all` (`make tiny`)
materializes them: step i holds stage i's assets, and each job a step names runs only assets of that stage or
earlier ones (partitioned by the partitions the step backfills over)."""

import re
from pathlib import Path

from vfusion3d_pipeline.definitions import defs
from vfusion3d_pipeline.run_all import stages

README = Path(__file__).resolve().parents[1] / "README.md"


def ui_steps() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("### From the Dagster UI", 1)[1].split("\n#", 1)[0]
    steps = re.split(r"^\d+\. ", section.split("\n\n`make tiny`", 1)[0], flags=re.M)[1:]
    return [" ".join(s.split()) for s in steps]


def test_ui_steps_follow_the_run_all_stages() -> None:
    plan = stages(defs)
    steps = ui_steps()
    assert len(steps) == len(plan)
    assets = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    jobs = {j.name for j in defs.resolve_all_job_defs()}
    earlier: set[str] = set()
    for step, stage in zip(steps, plan, strict=True):
        names = set(re.findall(r"`([a-z0-9_]+)`", step))
        assert set(stage.assets) <= names, (step, stage.assets)
        assert names & assets <= earlier | set(stage.assets), step
        for job in names & jobs:
            selected = {k.to_user_string() for k in defs.resolve_job_def(job).asset_layer.selected_asset_keys}
            assert selected <= earlier | set(stage.assets), (job, selected)
        if stage.partitions:
            assert f"`{stage.partitions}`" in step and "backfill the job" in step, step
            job = re.search(r"backfill the job `([a-z_]+)`", step).group(1)  # type: ignore[union-attr]
            assert defs.resolve_job_def(job).partitions_def.name == stage.partitions  # type: ignore[union-attr]
        earlier |= set(stage.assets)
    assert earlier == assets - {"ablation_report"}  # the experiment is outside the whole graph
