"""The Dagster and MLflow UIs in a real headless browser (Chromium through Selenium): page loads that fail on a page
error, and the README's screenshots.

    python -m vfusion3d_pipeline.ui_browser --dagster http://127.0.0.1:3000 --mlflow http://127.0.0.1:5000 \\
        --out docs/images

takes the screenshots in ``SHOTS`` of a tiny run (`make tiny`, `make ablation`) served by `make ui` and
`make mlflow`. Needs the Debian packages ``chromium`` and ``chromium-driver`` and the ``selenium`` package
(`scripts/setup.sh --for-tests` installs them); nothing is downloaded.
"""

import argparse
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
DRIVER = "chromedriver"
WINDOW = (1600, 1200)
SETTLE_S = 3.0


class PageError(AssertionError):
    """A page logged an error (an uncaught exception, a failed request) or never showed what it should."""


@dataclass(frozen=True)
class Shot:
    """A page to load: ``path`` under the UI's base URL, ``expect`` a text the rendered page must contain."""

    ui: str  # "dagster" | "mlflow"
    path: str
    expect: str
    file: str | None = None  # the screenshot's file name (None: load and check only)
    expand_groups_until: str | None = None  # asset graph: Alt+E (expand all groups), then wait for this text


# The README's screenshots of a tiny run (graph + ablation materialized, lrm_finetuned registered with aliases).
SHOTS = (
    Shot("dagster", "/asset-groups", "Global asset lineage", "ui_asset_graph.png", expand_groups_until="renders_3d"),
    Shot("dagster", "/assets/synthetic_videos", "synthetic_videos", "ui_asset_metadata.png"),
    Shot("dagster", "/assets/ablation_report", "ablation_report", "ui_ablation_table.png"),
    Shot("mlflow", "/#/models/lrm_finetuned", "lrm_finetuned", "ui_registered_model.png"),
)


def find_browser() -> tuple[str, str]:
    """Paths of Chromium and its WebDriver; a clear error naming the Debian packages when missing."""
    browser = next((p for p in map(shutil.which, CHROMIUM) if p), None)
    driver = shutil.which(DRIVER)
    if browser is None or driver is None:
        raise FileNotFoundError("headless Chromium needs the Debian packages chromium and chromium-driver "
                                "(scripts/setup.sh --for-tests installs them)")
    return browser, driver


@contextmanager
def headless_chromium() -> Iterator[Any]:
    """A headless Chromium WebDriver recording the browser console (errors included)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver_path = find_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={WINDOW[0]},{WINDOW[1]}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


# Expected failures, not page errors: MLflow's UI asks for the signed-in user to find out whether its auth plugin
# runs; a server without it answers 404 on every first load.
EXPECTED = ("/ajax-api/2.0/mlflow/users/current - Failed to load resource",)


def page_errors(driver: Any) -> list[str]:
    """The console's SEVERE entries since the last call (uncaught exceptions, failed requests), ``EXPECTED`` aside."""
    return [e["message"] for e in driver.get_log("browser")
            if e.get("level") == "SEVERE" and not any(x in e["message"] for x in EXPECTED)]


def load(driver: Any, url: str, expect: str, timeout_s: float = 60) -> None:
    """Open ``url`` and wait until the rendered page contains ``expect``; raise PageError naming the URL on a page
    error or when the text never shows."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    page_errors(driver)  # drop what earlier pages logged
    driver.get(url)
    try:
        WebDriverWait(driver, timeout_s).until(lambda d: expect in d.find_element("tag name", "body").text)
    except TimeoutException as exc:
        raise PageError(f"{url}: '{expect}' never showed in {timeout_s:.0f} s; errors: {page_errors(driver)}"
                        ) from exc
    check_errors(driver, url)


def expand_groups(driver: Any, url: str, expect: str, timeout_s: float = 30) -> None:
    """On the asset graph: expand every group (the graph's Alt+E shortcut) and wait until ``expect`` shows."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    ActionChains(driver).key_down(Keys.ALT).send_keys("e").key_up(Keys.ALT).perform()
    try:
        WebDriverWait(driver, timeout_s).until(lambda d: expect in d.find_element("tag name", "body").text)
    except TimeoutException as exc:
        raise PageError(f"{url}: '{expect}' never showed after expanding the groups") from exc
    check_errors(driver, url)


def dismiss_welcome(driver: Any, base: str, timeout_s: float = 20) -> None:
    """Open the Dagster UI at ``base`` and close its first-visit "Join the Dagster community" dialog (Skip); the
    browser then remembers it for the session."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(base)
    skip = "//button[normalize-space()='Skip']"
    try:
        WebDriverWait(driver, timeout_s).until(lambda d: d.find_elements("xpath", skip))
    except TimeoutException:
        return  # not shown (an older or newer UI)
    driver.find_element("xpath", skip).click()
    WebDriverWait(driver, timeout_s).until(lambda d: not d.find_elements("css selector", ".bp5-overlay-backdrop"))


def check_errors(driver: Any, url: str) -> None:
    errors = page_errors(driver)
    if errors:
        raise PageError(f"{url}: page errors: {errors}")


def take(shots: tuple[Shot, ...], bases: dict[str, str], out: Path | None) -> list[Path]:
    """Load every shot (PageError on the first failing page); save those with a file name under ``out``."""
    written = []
    with headless_chromium() as driver:
        if "dagster" in bases:
            dismiss_welcome(driver, bases["dagster"])
        for shot in shots:
            url = bases[shot.ui].rstrip("/") + shot.path
            load(driver, url, shot.expect)
            if shot.expand_groups_until:
                expand_groups(driver, url, shot.expand_groups_until)
            if out is not None and shot.file:
                time.sleep(SETTLE_S)  # a picture, not a check: let the graph layout and images finish drawing
                check_errors(driver, url)
                out.mkdir(parents=True, exist_ok=True)
                path = out / shot.file
                driver.save_screenshot(str(path))
                written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dagster", default="http://127.0.0.1:3000", help="the Dagster webserver (make ui)")
    parser.add_argument("--mlflow", default="http://127.0.0.1:5000", help="the MLflow UI (make mlflow)")
    parser.add_argument("--out", default="docs/images", help="where the PNGs go")
    args = parser.parse_args(argv)
    for path in take(SHOTS, {"dagster": args.dagster, "mlflow": args.mlflow}, Path(args.out)):
        print(f"[ui_browser] wrote {path}")


if __name__ == "__main__":
    main()
