"""The README's "From the Dagster UI" steps are what `make tiny` (whole_graph.py) launches: step 1 names the job
whose assets are the roots that register the partitions, step 2 is *Materialize all* over all partitions and names
every other asset of the graph; the experiment is named as left out."""

import re
from pathlib import Path

from vfusion3d_pipeline.definitions import defs
from vfusion3d_pipeline.whole_graph import EXPERIMENTS, ROOTS

README = Path(__file__).resolve().parents[1] / "README.md"


def ui_steps() -> tuple[list[str], str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("### From the Dagster UI", 1)[1].split("\n#", 1)[0].split("From the command line:")[0]
    steps = re.split(r"^\d+\. ", section, flags=re.M)
    return [" ".join(s.split()) for s in steps[1:]], " ".join(section.split())


def test_ui_steps_are_the_two_backfills_of_make_tiny() -> None:
    steps, section = ui_steps()
    assert len(steps) == 2
    graph = defs.resolve_asset_graph()
    jobs = {j.name for j in defs.resolve_all_job_defs()}
    first_jobs = set(re.findall(r"`([a-z0-9_]+)`", steps[0])) & jobs
    assert first_jobs == {"register_shards"}
    selected = {k.to_user_string() for k in defs.resolve_job_def("register_shards").asset_layer.selected_asset_keys}
    assert selected == set(ROOTS)
    for pdef in ("object_shards", "prompt_shards"):
        assert f"`{pdef}`" in steps[0]
    assert "Materialize all" in steps[1] and "All partitions" in steps[1]
    experiments = {k.to_user_string() for k in graph.get_all_asset_keys() if graph.get(k).group_name == EXPERIMENTS}
    rest = {k.to_user_string() for k in graph.get_all_asset_keys()} - set(ROOTS) - experiments
    named = set(re.findall(r"`([a-z0-9_]+)`", steps[1]))
    assert rest <= named, rest - named
    for name in experiments:  # named as left out of the selection, with its own job
        assert f"`{name}`" in section and f"`{EXPERIMENTS}`" in section


def test_readme_images_exist() -> None:
    """Every image the README shows is committed (the screenshots under docs/images)."""
    text = README.read_text(encoding="utf-8")
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert any("ui_asset_graph" in i for i in images)
    for image in images:
        assert (README.parent / image).is_file(), image
