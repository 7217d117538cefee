"""The Dagster UI's pages in a real headless browser (Chromium through Selenium, vfusion3d_pipeline/ui_browser.py)
against a real `dagster dev` serving a micro run: each page renders what it should (asset names, metadata labels,
the automation sensor) and logs no page error (an uncaught exception or a failed request fails the test)."""

import pytest
from pipeline_utils import dagster_dev, materialize_renders_for, pipeline_env

from vfusion3d_pipeline.ui_browser import Shot, find_browser, take

pytestmark = pytest.mark.slow  # dagster dev + Chromium (a minute)

PAGES = (
    Shot("dagster", "/asset-groups", "Global asset lineage", expand_groups_until="renders_3d"),  # the asset graph
    Shot("dagster", "/assets/source_objects", "digest"),  # an asset's page with its materialization metadata
    Shot("dagster", "/assets/renders_3d?view=partitions", "objects-000000"),  # a partitioned asset: its partitions
    Shot("dagster", "/automation", "incremental_synthesis"),  # the automation sensor the docs tell to switch on
    Shot("dagster", "/jobs", "register_shards"),  # step 1 of the whole graph from the UI
)


def test_dagster_ui_pages_render_without_page_errors(tmp_path, monkeypatch) -> None:
    try:
        find_browser()
    except FileNotFoundError as exc:  # make test installs them (scripts/setup.sh --for-tests)
        pytest.fail(str(exc))
    env = pipeline_env(tmp_path, "ui")
    monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])  # dagster.yaml reads it
    materialize_renders_for(env)  # source_objects + both renders_3d partitions, in this process
    with dagster_dev(env, tmp_path / "dagster_dev.log") as port:
        take(PAGES, {"dagster": f"http://127.0.0.1:{port}"}, out=None)


def test_a_page_error_fails_the_load() -> None:
    """The check can fail: an uncaught exception in the page is a PageError naming it."""
    from vfusion3d_pipeline.ui_browser import PageError, headless_chromium, load

    page = "data:text/html,<body>hello<script>throw new Error('boom from the page')</script></body>"
    with headless_chromium() as driver, pytest.raises(PageError, match="boom from the page"):
        load(driver, page, "hello")
