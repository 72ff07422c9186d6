"""Dagster code location of ppm-platform: the asset graph of DESIGN.md §3.

Run the UI with ``dagster dev -m dagster_project.definitions`` and materialize all assets. The in-process
executor runs steps in one process so the SparkSession and the loaded libraries (torch, feast) are shared
between steps (a subprocess per step would re-import torch and restart Spark every time on 2 cores).
"""

import dagster as dg

from dagster_project.assets import features, feast, ingest, ppm, serving, training
from dagster_project.checks import ALL_CHECKS
from dagster_project.resources import resources_for

all_assets = dg.load_assets_from_modules([ingest, features, ppm, feast, training, serving])

main_job = dg.define_asset_job("ppm_main", selection=dg.AssetSelection.all(),
                               description="Everything: MovieLens -> Spark -> PPM -> Feast -> URM -> ONNX -> online ranking")

defs = dg.Definitions(
    assets=all_assets,
    asset_checks=ALL_CHECKS,
    jobs=[main_job],
    resources=resources_for(),
    executor=dg.in_process_executor,
)
