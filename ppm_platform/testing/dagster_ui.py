"""Test support for the Dagster UI: run ``dagster-webserver`` on loopback and drive the OS's Chromium with selenium.

Used by the UI tests (``tests/integration/test_dagster_webserver.py``, ``tests/integration/test_ui_browser.py``)
and by ``scripts/screenshot_asset_graph.py``: the docs' screenshot is taken by :func:`capture_lineage`, the code
the browser test runs.

The server runs in its own session and stops with SIGINT, then SIGKILL of whatever is left in that session
(code server, run workers): ../shared/notes/stack.md §6. The browser is Debian's ``chromium`` with its
``chromedriver`` (packages ``chromium`` + ``chromium-driver``, installed by ``make browser``); selenium's own
driver download is never used (no network here).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LOCATION = "dagster_project.definitions"


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (bound and released; a race with another process is possible but rare)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_session(proc: subprocess.Popen, grace_s: float = 20) -> None:
    """SIGINT ``proc``, wait up to ``grace_s`` seconds, then SIGKILL every process left in its session."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


@contextlib.contextmanager
def webserver(env: Mapping[str, str], log_path: Path, port: int | None = None,
              timeout_s: float = 180) -> Iterator[int]:
    """Run ``dagster-webserver -m dagster_project.definitions`` on 127.0.0.1 until the block exits.

    Args:
        env: the server's whole environment (``DAGSTER_HOME``, ``PPM_*``).
        log_path: file that receives the server's stdout and stderr.
        port: port to listen on (default: a free one).
        timeout_s: how long to wait for ``/server_info`` to answer 200.

    Yields:
        The port it listens on.

    Raises:
        RuntimeError: the server exited or did not answer within ``timeout_s`` (with the log's tail).
    """
    port = port or free_port()
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "dagster_webserver", "-m", LOCATION, "-h", "127.0.0.1",
                                 "-p", str(port)], cwd=REPO, env=dict(env), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"dagster-webserver exited with {proc.returncode}: "
                                       f"{Path(log_path).read_text()[-3000:]}")
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5) as r:
                        if r.status == 200:
                            break
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"dagster-webserver did not answer /server_info within {timeout_s:.0f} s: "
                                       f"{Path(log_path).read_text()[-3000:]}")
                time.sleep(1)
            yield port
        finally:
            stop_session(proc)


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    """POST ``query`` to the webserver's GraphQL endpoint; returns ``data``.

    Raises:
        AssertionError: the answer carries GraphQL ``errors``.
    """
    req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql",
                                 data=json.dumps({"query": query, "variables": variables or {}}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        body = json.loads(r.read())
    assert "errors" not in body, body["errors"]
    return body["data"]


def chromium_paths() -> tuple[str, str]:
    """(chromium binary, chromedriver) from the OS packages.

    Raises:
        FileNotFoundError: either is missing, naming the Debian packages that provide them.
    """
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        raise FileNotFoundError("the UI browser test needs the OS packages chromium and chromium-driver "
                                "(`make browser`, or apt-get install -y chromium chromium-driver)")
    return browser, driver


def chrome(window: str = "1600,1250"):
    """A headless selenium Chrome driver on the OS's Chromium (the caller quits it)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = chromium_paths()
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--no-first-run",
                "--hide-scrollbars", f"--window-size={window}"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=opts)


#: an asset-group row of the lineage sidebar that is still collapsed (its arrow points right)
COLLAPSED_GROUP = "//button[.//div[@aria-label='arrow_drop_down' and contains(@style,'rotate(-90deg)')]]"


def wait_for(predicate, timeout_s: float = 90, what: str = "page"):
    """Poll ``predicate`` every 0.5 s until it returns something truthy; returns that.

    Raises:
        TimeoutError: nothing truthy within ``timeout_s`` seconds (names ``what``).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not render within {timeout_s:.0f} s")
        time.sleep(0.5)


def capture_lineage(driver, url: str, out: Path, settle_s: float = 3.0) -> set[str]:
    """Open the lineage page ``url`` (every graph group open: ``dagster_project.instance.lineage_url``), open
    every group of its sidebar, save the screenshot to ``out`` and return the asset names the page shows.

    Names are read from the UI's ``MiddleTruncate`` labels, whose ``title`` holds the full name even where the
    label is cut at the graph's fit zoom.

    Raises:
        TimeoutError: the page did not render its sidebar within 90 s.
    """
    driver.get(url)
    wait_for(lambda: driver.find_elements("xpath", COLLAPSED_GROUP), what="lineage sidebar")
    for _ in range(200):  # one group at a time: each click re-renders the sidebar
        rows = driver.find_elements("xpath", COLLAPSED_GROUP)
        if not rows:
            break
        rows[0].click()
        time.sleep(0.2)
    time.sleep(settle_s)  # the graph's layout animation
    shown = {e.get_attribute("title") for e in driver.find_elements("css selector", "[class*='MiddleTruncate_container']")}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(out))
    return {n for n in shown if n}
