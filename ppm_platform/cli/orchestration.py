"""The Dagster child process of the CLI: ``dagster job execute`` / ``dagster asset materialize`` on
``dagster_project.definitions`` with the environment built from :class:`~ppm_platform.config.Settings`.

Dagster runs in a child process so that the library never imports Dagster and a CLI run is the same run the
Dagster UI shows (same ``DAGSTER_HOME``).
"""

from __future__ import annotations

import os
import subprocess
import sys

from ppm_platform.config import REPO_ROOT, Settings


def child_env(settings: Settings) -> dict[str, str]:
    """The environment of the Dagster child: this process's, plus ``DAGSTER_HOME`` (default
    ``<artifacts>/dagster_home``, created), offline Hugging Face, the Spark driver on loopback with this
    interpreter, and the ``PPM_*`` settings the child rebuilds :class:`Settings` from."""
    env = dict(os.environ)
    home = settings.artifacts_dir / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    env.setdefault("DAGSTER_HOME", str(home))
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("PYSPARK_PYTHON", sys.executable)
    env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    env["PPM_ARTIFACTS_DIR"] = str(settings.artifacts_dir)
    env["PPM_DATA_DIR"] = str(settings.data_dir)
    env["PPM_PROFILE"] = settings.profile
    return env


#: the assets of the daily partitions (dagster_project/assets/daily.py), in dependency order
DAILY_ASSETS = "interactions_daily,user_features_daily,online_user_features"


def materialize(settings: Settings, select: str = "*", partition_range: str | None = None) -> int:
    """Run ``dagster asset materialize`` for ``select`` in a child process; returns its exit code.

    ``select="*"`` runs the ``ppm_main`` job (every unpartitioned asset: one run cannot mix the daily
    partitions with unpartitioned assets). ``partition_range`` (``"<first day>...<last day>"``) backfills
    those days of a partitioned selection in one run.
    """
    base = [sys.executable, "-m", "dagster"]
    if select == "*":
        cmd = [*base, "job", "execute", "-m", "dagster_project.definitions", "-j", "ppm_main"]
    else:
        cmd = [*base, "asset", "materialize", "-m", "dagster_project.definitions", "--select", select]
        if partition_range:
            cmd += ["--partition-range", partition_range]
    return subprocess.call(cmd, env=child_env(settings), cwd=REPO_ROOT)

