"""The Dagster UI in a real browser, as a user sees it after ``ppm demo``: ``dagster-webserver`` on loopback over the
session's finished run (tests/integration/conftest.py), driven by selenium on the OS's Chromium + chromedriver.

It checks what a new user looks for first: the lineage page lists every asset of the code location, and the
``urm_model`` asset page shows its training-curve plot inline (not a link to a local file). The lineage screenshot
is saved next to the test's artifacts (``ui_lineage.png``), the same capture ``scripts/screenshot_asset_graph.py``
makes for docs/img/asset_graph.png.
"""

import os
import time

import pytest

from dagster_project.instance import expanded_query
from ppm_platform.testing.dagster_ui import chrome, chromium_paths, graphql, webserver

pytestmark = pytest.mark.integration

#: an asset-group row of the lineage sidebar that is still collapsed (its arrow points right)
COLLAPSED_GROUP = "//button[.//div[@aria-label='arrow_drop_down' and contains(@style,'rotate(-90deg)')]]"


def _wait_for(driver, predicate, timeout_s: float = 90, what: str = "page"):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} did not render within {timeout_s:.0f} s"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def ui(pipeline_run):
    settings, result = pipeline_run
    assert result.success
    try:
        chromium_paths()
    except FileNotFoundError as e:
        pytest.fail(str(e))
    art = settings.artifacts_dir
    env = dict(os.environ, DAGSTER_HOME=str(art / "dagster_home"), PPM_ARTIFACTS_DIR=str(art),
               PPM_MAX_ITEMS=str(settings.max_items), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    with webserver(env, art / "ui_webserver.log") as port:
        driver = chrome(window="1600,2400")
        try:
            yield port, driver, art
        finally:
            driver.quit()


def test_lineage_page_lists_every_asset(ui):
    port, driver, art = ui
    nodes = graphql(port, "{ assetNodes { assetKey { path } groupName } }")["assetNodes"]
    keys = {n["assetKey"]["path"][-1] for n in nodes}
    assert {"items", "ppm_model", "urm_model", "ranking_demo", "user_features_daily"} <= keys
    driver.get(f"http://127.0.0.1:{port}/asset-groups?{expanded_query(sorted({n['groupName'] for n in nodes}))}")
    _wait_for(driver, lambda: driver.find_elements("xpath", COLLAPSED_GROUP), what="lineage sidebar")
    for _ in range(4 * len(keys)):  # open every group of the sidebar, one at a time (each click re-renders it)
        rows = driver.find_elements("xpath", COLLAPSED_GROUP)
        if not rows:
            break
        rows[0].click()
        time.sleep(0.2)
    # names are shown through MiddleTruncate, whose title holds the full name even where the label is cut
    shown = {e.get_attribute("title") for e in driver.find_elements("css selector", "[class*='MiddleTruncate_container']")}
    assert keys - shown == set(), f"assets missing from the lineage page: {sorted(keys - shown)}"
    out = art / "ui_lineage.png"
    driver.save_screenshot(str(out))
    assert out.stat().st_size > 20_000


def test_urm_model_page_shows_its_training_curve(ui):
    """The asset page's metadata: the per-epoch table inline, the kept epoch, and the training-curve PNG (the UI
    folds markdown of 1,000+ characters behind "[Show Markdown]": one click opens the embedded image)."""
    port, driver, art = ui
    driver.get(f"http://127.0.0.1:{port}/assets/urm_model")
    show = "//tr[.//span[text()='plot_training_curves']]//a[contains(text(),'Show Markdown')]"
    _wait_for(driver, lambda: driver.find_elements("xpath", show), what="urm_model's metadata")
    page = driver.page_source
    assert "kept_epoch" in page and "valid_click_auc" in page  # the kept epoch and the per-epoch table
    file_row = driver.find_element("xpath", "//tr[.//span[text()='plot_training_curves_file']]").text
    assert "reports/plots/urm_model_training_curves.png" in file_row and str(art) not in file_row
    driver.find_elements("xpath", show)[0].click()

    def loaded_png():
        for img in driver.find_elements("css selector", "img"):
            if (img.get_attribute("src") or "").startswith("data:image/png;base64,") and \
                    driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img):
                return img
        return None

    img = _wait_for(driver, loaded_png, timeout_s=30, what="the training-curve image")
    width, height = driver.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", img)
    assert width >= 400 and height >= 200
    driver.save_screenshot(str(art / "ui_urm_model_plot.png"))
