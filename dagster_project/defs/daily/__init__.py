"""The `daily` asset group's definitions, built over the daily partitions the settings define: its assets
(``assets.py``), the checks on them (``checks.py``), the ``ppm_daily`` job, its schedule and the sensor
that evaluates the freshness checks."""

import dagster as dg

from dagster_project.defs.daily import assets, checks


def build_defs(partitions_def: dg.TimeWindowPartitionsDefinition) -> dg.Definitions:
    """The daily group over ``partitions_def`` (UTC days from ``settings.partitions``)."""
    daily_assets = assets.build_assets(partitions_def)
    daily_checks = checks.build_checks(partitions_def, daily_assets)
    job, schedule = assets.build_job_and_schedule()
    return dg.Definitions(assets=daily_assets, asset_checks=daily_checks, jobs=[job], schedules=[schedule],
                          sensors=[checks.build_freshness_sensor(daily_checks)])
