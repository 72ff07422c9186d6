"""The Dagster instance of ppm-platform (``$DAGSTER_HOME/dagster.yaml``) and the UI's first URL.

``make ui`` runs this module; the config itself comes from the one writer every ``ppm`` run also uses
(:func:`ppm_platform.cli.orchestration.write_dagster_yaml`): the first-visit "join the community" dialog (nux)
and telemetry off, the ``ppm`` run-event handler (idle outside ``ppm`` runs), one slot per concurrency pool (``policies.POOLS``: a run queued
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

from ppm_platform.cli.orchestration import write_dagster_yaml

#: the code location as ``dagster dev -m dagster_project.definitions`` names it, and its repository
LOCATION = "dagster_project.definitions"
REPOSITORY = "__repository__"


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
