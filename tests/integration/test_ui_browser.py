"""The Dagster UI in a real browser, as a user sees it after ``ppm demo``: ``dagster-webserver`` on loopback over the
session's finished run (tests/integration/conftest.py), driven by selenium on the OS's Chromium + chromedriver.

It checks what a new user looks for first: the lineage page lists every asset of the code location, and the
``urm_model`` asset page shows its training-curve plot inline (not a link to a local file). The lineage screenshot
is saved next to the test's artifacts (``ui_lineage.png``), the same capture ``scripts/screenshot_asset_graph.py``
makes for docs/img/asset_graph.png.
"""

import os

import pytest

from dagster_project.instance import lineage_url
from ppm_platform.testing.dagster_ui import capture_lineage, chrome, chromium_paths, graphql, wait_for, webserver

pytestmark = pytest.mark.integration

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
    """The lineage page `make ui` prints (every group open) shows every asset of the code location, captured
    the way scripts/screenshot_asset_graph.py captures docs/img/asset_graph.png."""
    port, driver, art = ui
    nodes = graphql(port, "{ assetNodes { assetKey { path } groupName } }")["assetNodes"]
    keys = {n["assetKey"]["path"][-1] for n in nodes}
    assert {"items", "ppm_model", "urm_model", "ranking_demo", "user_features_daily"} <= keys
    out = art / "ui_lineage.png"
    shown = capture_lineage(driver, lineage_url("127.0.0.1", port, sorted({n["groupName"] for n in nodes})), out)
    assert keys - shown == set(), f"assets missing from the lineage page: {sorted(keys - shown)}"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000


def test_urm_model_page_shows_its_training_curve(ui):
    """The asset page's metadata: the per-epoch table inline, the kept epoch, and the training-curve PNG (the UI
    folds markdown of 1,000+ characters behind "[Show Markdown]": one click opens the embedded image)."""
    port, driver, art = ui
    driver.get(f"http://127.0.0.1:{port}/assets/urm_model")
    show = "//tr[.//span[text()='plot_training_curves']]//a[contains(text(),'Show Markdown')]"
    wait_for(lambda: driver.find_elements("xpath", show), what="urm_model's metadata")
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

    img = wait_for(loaded_png, timeout_s=30, what="the training-curve image")
    width, height = driver.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", img)
    assert width >= 400 and height >= 200
    driver.save_screenshot(str(art / "ui_urm_model_plot.png"))
