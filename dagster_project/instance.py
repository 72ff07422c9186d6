"""The Dagster instance of ppm-platform (``$DAGSTER_HOME/dagster.yaml``) and the UI's first URL.

One writer, used by ``make ui`` and ``scripts/screenshot_asset_graph.py``: the first-visit "join the
community" dialog (nux) and telemetry off, one slot per concurrency pool (``policies.POOLS``: a run queued
from the UI, e.g. a backfill, waits while another run in progress uses one of its pools, so a UI backfill
beside a full run does not oversubscribe the machine; runs started by ``ppm`` are not queued), run storage
left as Dagster's default (SQLite under ``$DAGSTER_HOME``). Keys a user already set in the file are kept.

Dagster OSS 1.13 sets per-pool limits with ``dagster instance concurrency set <pool> <n>`` (stored in the
instance database), not in ``dagster.yaml``; the file sets ``concurrency.pools.default_limit``, the limit of
every pool without its own, which is each of ours.

Usage (what ``make ui`` runs before ``dagster dev``)::

    python -m dagster_project.instance --home "$DAGSTER_HOME" --host 127.0.0.1 --port 3000
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from urllib.parse import quote

import yaml

#: the code location as ``dagster dev -m dagster_project.definitions`` names it, and its repository
LOCATION = "dagster_project.definitions"
REPOSITORY = "__repository__"

#: the settings this project needs in ``dagster.yaml`` (merged under what the file already holds)
INSTANCE_SETTINGS = {
    "nux": {"enabled": False},
    "telemetry": {"enabled": False},
    # run granularity: the run queue (the daemon of `dagster dev`) starts a run only when each pool its steps
    # use has a free slot among the runs in progress; steps themselves never wait. With op granularity a
    # run killed mid-step (SIGKILL, out of memory) keeps its slot and the next run's step in that pool
    # waits for it forever, `ppm demo` included
    "concurrency": {"pools": {"default_limit": 1, "granularity": "run"}},
}


def _merge_missing(into: dict, defaults: dict) -> dict:
    """``into`` with every key of ``defaults`` it lacks (recursively into nested dicts); its own values win."""
    for k, v in defaults.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge_missing(into[k], v)
        elif k not in into:
            into[k] = v
    return into


def write_dagster_yaml(home: Path, extra: dict | None = None) -> Path:
    """Create ``home`` if needed and write ``home/dagster.yaml`` with :data:`INSTANCE_SETTINGS` (and
    ``extra``, e.g. a run coordinator for a webserver without daemon) under the keys the file already has.

    Returns:
        the path of ``dagster.yaml``.

    Raises:
        yaml.YAMLError: an existing ``dagster.yaml`` is not valid YAML.
        ValueError: an existing ``dagster.yaml`` is not a mapping.
    """
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    path = home / "dagster.yaml"
    current = yaml.safe_load(path.read_text()) if path.exists() else None
    current = {} if current is None else current
    if not isinstance(current, dict):
        raise ValueError(f"{path}: expected a YAML mapping, got {type(current).__name__}")
    merged = _merge_missing(current, {**INSTANCE_SETTINGS, **(extra or {})})
    path.write_text(yaml.safe_dump(merged, sort_keys=False))
    return path


def expanded_query(groups: list[str], repository: str = REPOSITORY, location: str = LOCATION) -> str:
    """``expanded=...`` for the lineage page (``/asset-groups``): every group open. The UI collapses the groups
    of a large graph; it reads the open ones from this query parameter (the webapp's
    ``asset-graph-open-graph-nodes`` state, encoded as ``expanded=<id>,<id>``). Group ids as the webapp builds
    them: ``global@global:<group>``, or ``<repository>@<location>:<group>`` with groups-per-code-location on;
    both forms are passed."""
    ids = sorted({f"global@global:{g}" for g in groups} | {f"{repository}@{location}:{g}" for g in groups})
    return "expanded=" + quote(",".join(ids), safe="")


def lineage_url(host: str, port: int, groups: list[str] | None = None) -> str:
    """The URL of the global asset lineage with every group of the code location expanded (``groups``:
    default the groups of ``dagster_project.definitions``)."""
    if groups is None:
        from dagster_project.definitions import defs

        graph = defs.resolve_asset_graph()
        groups = sorted({graph.get(k).group_name or "default" for k in graph.get_all_asset_keys()})
    return f"http://{host}:{port}/asset-groups?{expanded_query(groups)}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dagster_project.instance",
                                 description="Write $DAGSTER_HOME/dagster.yaml and print the UI's lineage URL.")
    ap.add_argument("--home", type=Path, required=True, help="DAGSTER_HOME")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=3000)
    a = ap.parse_args(argv)
    path = write_dagster_yaml(a.home)
    print(f"Dagster instance: {path} (nux and telemetry off, one slot per concurrency pool)")
    print(f"Dagster UI, asset graph with every group open: {lineage_url(a.host, a.port)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
