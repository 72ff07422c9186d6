"""Dagster code location of ppm-platform: the asset graph of DESIGN.md §3.

Run the UI with ``make ui`` (or ``dagster dev -m dagster_project.definitions``) and materialize all assets.
Each asset group is a package under ``defs/`` (``assets.py`` and the checks on those assets in
``checks.py``); this module merges the groups' definitions with the jobs, the resources of the profile and
the executor, as Dagster's ``hooli`` project merges its parts. The settings are read here, at load, only for
what the definitions themselves need (the daily partitions); every run builds its own through the settings
resource.

The in-process executor runs steps in one process so the SparkSession and the loaded libraries (torch,
feast) are shared between steps (a subprocess per step would re-import torch and restart Spark every time
on 2 cores). Across runs (a UI backfill beside a full run) the heavy steps share concurrency pools
(``torch_training``, ``spark``) whose limits the instance's ``dagster.yaml`` sets (``dagster_project.instance``).
"""

from __future__ import annotations

import dagster as dg

from dagster_project.defs import daily, encoders, evaluation, feast, features, ingest, ppm, serving, training
from dagster_project.resources import resources_for
from ppm_platform.config import Settings

#: the groups whose definitions need no settings, in pipeline order
STATIC_GROUPS = (ingest, encoders, features, ppm, feast, training, serving, evaluation)

#: everything but the daily partitions (a job holds one partitioning; the full assets are unpartitioned)
FULL_SELECTION = dg.AssetSelection.all() - dg.AssetSelection.groups("daily")


def daily_partitions(settings: Settings) -> dg.DailyPartitionsDefinition:
    """UTC days from ``settings.partitions.start_date`` to ``end_date`` (the daily group's partitions)."""
    return dg.DailyPartitionsDefinition(start_date=settings.partitions.start_date,
                                        end_date=settings.partitions.end_date, timezone="UTC")


def build_defs(settings: Settings | None = None) -> dg.Definitions:
    """The code location for ``settings`` (default: from the ``PPM_*`` environment).

    Raises:
        FileNotFoundError: ``PPM_CONFIG`` names a missing file.
        pydantic.ValidationError: a setting has the wrong type.
    """
    settings = settings or Settings.from_env()
    main_job = dg.define_asset_job(
        "ppm_main", selection=FULL_SELECTION,
        description="Everything: MovieLens -> Spark -> PPM -> Feast -> URM -> ONNX -> online ranking")
    return dg.Definitions.merge(
        *(g.defs for g in STATIC_GROUPS),
        daily.build_defs(daily_partitions(settings)),
        dg.Definitions(jobs=[main_job], resources=resources_for(), executor=dg.in_process_executor),
    )


defs = build_defs()

#: every asset and asset check definition of the location (for ``dg.materialize`` in tests and benchmarks)
all_assets = list(defs.assets or [])
all_checks = list(defs.asset_checks or [])
