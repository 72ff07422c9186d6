"""Checks on the daily group: one PPM version across every day file of the user cache after a day's
rewrite."""

import dagster as dg

from dagster_project.check_factories import cache_versions_check_result
from dagster_project.resources import PPMSettingsResource


def user_features_daily_one_cache_version(ppm: PPMSettingsResource) -> dg.AssetCheckResult:
    """Every day file of ``ppm_user_cache`` holds one ``ppm_user_version``, the current PPM's (the whole
    table, not the run's days: a PPM retrain leaves older days of the old one)."""
    return cache_versions_check_result(ppm.get(), "ppm_user_cache")


def build_checks(partitions_def: dg.TimeWindowPartitionsDefinition,
                 assets: list[dg.AssetsDefinition]) -> list[dg.AssetChecksDefinition]:
    """The daily group's checks: ``user_features_daily_one_cache_version`` (the whole cache table)."""
    one_version = dg.asset_check(
        asset="user_features_daily", description="after the day's rewrite, every day file of ppm_user_cache holds "
        "one ppm_user_version, the current PPM's (a PPM retrain leaves older days of the old one)",
    )(user_features_daily_one_cache_version)
    return [one_version]
