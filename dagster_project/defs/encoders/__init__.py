"""The `encoders` asset group's definitions: its assets (``assets.py``; no checks of their own)."""

import dagster as dg

from dagster_project.defs.encoders import assets

defs = dg.Definitions(assets=dg.load_assets_from_modules([assets]))
