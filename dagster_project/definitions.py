"""Dagster code location of ppm-platform: the asset graph of DESIGN.md §3.

Run the UI with ``dagster dev -m dagster_project.definitions`` (or ``make ui``) and materialize all assets.
Every module in ``dagster_project/assets/`` is one pipeline stage; its assets and asset checks are picked
up here. The in-process executor runs steps in one process so the SparkSession and the loaded libraries
(torch, feast) are shared between steps (a subprocess per step would re-import torch and restart Spark every
time on 2 cores).
"""

import importlib
import pkgutil

import dagster as dg

import dagster_project.assets as assets_pkg
from dagster_project import checks
from dagster_project.resources import resources_for

stage_modules = [importlib.import_module(f"{assets_pkg.__name__}.{m.name}")
                 for m in sorted(pkgutil.iter_modules(assets_pkg.__path__), key=lambda m: m.name)
                 if not m.name.startswith("_")]

all_assets = dg.load_assets_from_modules(stage_modules)
all_checks = [*dg.load_asset_checks_from_modules(stage_modules), *checks.ALL_CHECKS]

from dagster_project.assets.daily import daily_job, daily_schedule  # noqa: E402  (after the stage modules load)

#: everything but the daily partitions (a job holds one partitioning; the full assets are unpartitioned)
FULL_SELECTION = dg.AssetSelection.all() - dg.AssetSelection.groups("daily")

main_job = dg.define_asset_job("ppm_main", selection=FULL_SELECTION,
                               description="Everything: MovieLens -> Spark -> PPM -> Feast -> URM -> ONNX -> online ranking")

defs = dg.Definitions(
    assets=all_assets,
    asset_checks=all_checks,
    jobs=[main_job, daily_job],
    schedules=[daily_schedule],
    resources=resources_for(),
    executor=dg.in_process_executor,
)
