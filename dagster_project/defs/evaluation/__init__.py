"""The `evaluation` asset group's definitions: its assets (``assets.py``) and the checks on them (``checks.py``)."""

import dagster as dg

from dagster_project.defs.evaluation import assets, checks

defs = dg.Definitions(assets=dg.load_assets_from_modules([assets]),
                      asset_checks=dg.load_asset_checks_from_modules([checks]))
