"""Checks on the ppm group: the caches' table quality (vectors finite, item vectors non-zero) and one PPM
version per cache table, the current PPM's (DESIGN.md §4 version rule)."""

import dagster as dg

from dagster_project.check_factories import cache_versions_check_result, table_quality_check
from dagster_project.resources import PPMSettingsResource
from ppm_platform.data import schemas

TABLE_QUALITY = [
    table_quality_check("ppm_item_cache", "ppm_item_cache_table_quality", "ppm_item_cache",
                        schemas.PPM_ITEM_CACHE, ["item_id"],
                        ["item_id", "event_timestamp", "ppm_item_vec", "ppm_item_version"], {"ppm_item_vec": True}),
    table_quality_check("ppm_user_cache", "ppm_user_cache_table_quality", "ppm_user_cache",
                        schemas.PPM_USER_CACHE, ["user_id", "event_timestamp"],
                        ["user_id", "event_timestamp", "ppm_user_seq", "ppm_seq_len", "ppm_user_version"],
                        {"ppm_user_seq": False}),
]


@dg.asset_check(asset="ppm_item_cache", description="every row holds one ppm_item_version, the current PPM's")
def ppm_item_cache_one_version(ppm: PPMSettingsResource) -> dg.AssetCheckResult:
    return cache_versions_check_result(ppm.get(), "ppm_item_cache")


@dg.asset_check(asset="ppm_user_cache", description="every row (every day file) holds one ppm_user_version, the "
                "current PPM's")
def ppm_user_cache_one_version(ppm: PPMSettingsResource) -> dg.AssetCheckResult:
    return cache_versions_check_result(ppm.get(), "ppm_user_cache")
