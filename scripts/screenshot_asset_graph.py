#!/usr/bin/env python
"""Screenshot of the Dagster asset graph (global asset lineage) for docs/img/asset_graph.png.

Starts ``dagster-webserver -m dagster_project.definitions`` on 127.0.0.1 (a free port) over a copy of the
instance of a finished run (default ``DAGSTER_HOME=<repo>/artifacts/dagster_home``; artifacts from
``PPM_ARTIFACTS_DIR`` or ``<repo>/artifacts``) with the ``dagster.yaml`` every ``ppm`` run and ``make ui`` write,
opens the lineage page ``make ui`` prints (every group open) in headless Chromium through selenium, opens every
group of the sidebar, writes the PNG and stops the server. The capture is
:func:`ppm_platform.testing.dagster_ui.capture_lineage`, which ``tests/integration/test_ui_browser.py`` runs on
the test session's run, so the test covers this script's path.

Installs nothing. Prerequisites: a finished run (``ppm demo``) and the OS packages chromium + chromium-driver
(``make browser``).

Usage:
    .venv/bin/python scripts/screenshot_asset_graph.py [--out docs/img/asset_graph.png] [--window 1600,1250]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a file: the repo's packages without an installed copy
from dagster_project.instance import lineage_url  # noqa: E402
from ppm_platform.cli.orchestration import write_dagster_yaml  # noqa: E402
from ppm_platform.testing.dagster_ui import capture_lineage, chrome, webserver  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "img" / "asset_graph.png")
    ap.add_argument("--dagster-home", type=Path,
                    default=Path(os.environ.get("DAGSTER_HOME", REPO / "artifacts" / "dagster_home")))
    ap.add_argument("--window", default="1600,1250", help="window size W,H in pixels")
    a = ap.parse_args()
    if not a.dagster_home.is_dir():
        raise SystemExit(f"DAGSTER_HOME {a.dagster_home} does not exist: run `ppm demo` first")
    # a throw-away copy of the instance (runs, event logs: ~1 MB), so the run's DAGSTER_HOME is only read
    home = Path(tempfile.mkdtemp(prefix="ppm-dagster-home-"))
    try:
        shutil.copytree(a.dagster_home, home, dirs_exist_ok=True)
        write_dagster_yaml(home)
        env = dict(os.environ, DAGSTER_HOME=str(home))
        with webserver(env, home / "webserver.log") as port:
            driver = chrome(window=a.window)
            try:
                shown = capture_lineage(driver, lineage_url("127.0.0.1", port), a.out)
            finally:
                driver.quit()
    finally:
        shutil.rmtree(home, ignore_errors=True)
    print(f"wrote {a.out} ({a.out.stat().st_size / 1e3:.0f} kB, {len(shown)} assets shown)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
