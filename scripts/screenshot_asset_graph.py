#!/usr/bin/env python
"""Screenshot of the Dagster asset graph (global asset lineage) for docs/img/asset_graph.png.

Starts ``dagster-webserver -m dagster_project.definitions`` on 127.0.0.1 (a free port) with a copy of the instance
of a finished run (default ``DAGSTER_HOME=<repo>/artifacts/dagster_home``, artifacts from ``PPM_ARTIFACTS_DIR``
or ``<repo>/artifacts``) and the ``dagster.yaml`` that ``make ui`` writes (``dagster_project/instance.py``),
points headless Chromium at the lineage page with every group open, writes the PNG and stops the server
(SIGINT, then SIGKILL of any leftover in its session: ../shared/notes/stack.md §6).

Installs nothing. Prerequisites: a finished run (``ppm demo``) and Chromium
(Debian: ``apt-get install -y chromium``; or pass ``--chromium /path/to/chrome``).

Usage:
    .venv/bin/python scripts/screenshot_asset_graph.py [--out docs/img/asset_graph.png] [--path /asset-groups]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a file: the repo's packages without an installed copy
from dagster_project.instance import lineage_url  # noqa: E402
from ppm_platform.cli.orchestration import write_dagster_yaml  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, proc: subprocess.Popen, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"dagster-webserver exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise SystemExit(f"{url} did not answer within {timeout_s:.0f} s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "img" / "asset_graph.png")
    ap.add_argument("--path", default="/asset-groups", help="UI page to capture (default: global asset lineage)")
    ap.add_argument("--dagster-home", type=Path, default=Path(os.environ.get("DAGSTER_HOME", REPO / "artifacts" / "dagster_home")))
    ap.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser")
                    or shutil.which("google-chrome"))
    ap.add_argument("--window", default="1600,1250", help="window size W,H in pixels")
    ap.add_argument("--budget-ms", type=int, default=15000, help="Chromium --virtual-time-budget (page render time)")
    a = ap.parse_args()
    if not a.chromium:
        raise SystemExit("no chromium found: apt-get install -y chromium (Debian), or pass --chromium PATH")
    if not a.dagster_home.is_dir():
        raise SystemExit(f"DAGSTER_HOME {a.dagster_home} does not exist: run `ppm demo` first")
    port = _free_port()
    # a throw-away copy of the instance (runs, event logs: ~1 MB), so the run's DAGSTER_HOME is only read, with
    # the first-visit "join the community" dialog (nux) and telemetry off for a clean, offline screenshot
    home = Path(tempfile.mkdtemp(prefix="ppm-dagster-home-"))
    shutil.copytree(a.dagster_home, home, dirs_exist_ok=True)
    write_dagster_yaml(home)  # the same dagster.yaml as `make ui`
    env = dict(os.environ, DAGSTER_HOME=str(home))
    server = subprocess.Popen([sys.executable, "-m", "dagster_webserver", "-m", "dagster_project.definitions",
                               "-h", "127.0.0.1", "-p", str(port)], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait(f"http://127.0.0.1:{port}/server_info", server)
        if a.path == "/asset-groups":
            url = lineage_url("127.0.0.1", port)  # every group open, as `make ui` prints it
        else:
            url = f"http://127.0.0.1:{port}{a.path}"
        a.out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="ppm-chromium-") as profile:
            cmd = [a.chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                   "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                   f"--user-data-dir={profile}", f"--window-size={a.window}",
                   f"--virtual-time-budget={a.budget_ms}", f"--screenshot={a.out.resolve()}",
                   url]
            subprocess.run(cmd, check=True, timeout=300, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(server.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        server.wait(timeout=10)
        shutil.rmtree(home, ignore_errors=True)
    print(f"wrote {a.out} ({a.out.stat().st_size / 1e3:.0f} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
