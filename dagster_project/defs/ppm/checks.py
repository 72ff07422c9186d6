"""Checks on the ppm group: the caches' table quality (vectors finite, item vectors non-zero) and one PPM
version per cache table, the current PPM's (DESIGN.md §4 version rule); the semantic ids' table quality."""

import dagster as dg

from dagster_project.check_factories import cache_versions_check_result, table_quality_check
from dagster_project.resources import PPMSettingsResource
from ppm_platform.data import catalog, schemas

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


@dg.asset_check(asset="item_semantic_id", description="item_semantic_id: schema == data/schemas.py, every code in "
                "[0, K), every catalog item coded once, one sid_version (the saved codebook's)")
def item_semantic_id_table_quality(ppm: PPMSettingsResource) -> dg.AssetCheckResult:
    import pandas as pd
    import pyarrow.parquet as pq

    from ppm_platform.features.semantic_ids import Codebook, semantic_id_table_quality

    settings = ppm.get()
    sc, path = settings.semantic_ids, catalog.path(settings, "item_semantic_id")
    items = pd.read_parquet(catalog.path(settings, "items"), columns=["item_id"])["item_id"]
    q = semantic_id_table_quality(path, sc.levels, sc.codebook_size, items)
    problems = list(q["problems"])
    if not pq.read_schema(path).equals(catalog.schema(settings, "item_semantic_id"), check_metadata=False):
        problems.append("schema differs from data/schemas.semantic_id_schema")
    saved = Codebook.load(catalog.path(settings, "semantic_id_codebook")).sid_version
    if set(q["sid_versions"]) - {saved}:
        problems.append(f"rows of sid_version {sorted(q['sid_versions'])}, the saved codebook is {saved}")
    return dg.AssetCheckResult(passed=not problems, metadata={
        "rows": q["rows"], "uncoded_items": q["uncoded_items"], "sid_versions": dg.MetadataValue.json(q["sid_versions"]),
        "codebook_sid_version": saved, "problems": dg.MetadataValue.json(problems)})
