"""Checks on the features group: table quality of the Spark outputs (vectors finite, text embeddings
non-zero) and the consistency of the point-in-time counters."""

import dagster as dg

from dagster_project.check_factories import table_quality_check
from dagster_project.resources import PPMSettingsResource
from ppm_platform.data import catalog, schemas

TABLE_QUALITY = [
    table_quality_check("item_multimodal", "item_multimodal_table_quality", "item_multimodal",
                        schemas.ITEM_MULTIMODAL, ["item_id"],
                        ["item_id", "event_timestamp", "text_emb", "image_emb", "has_image", "encoder_version"],
                        {"text_emb": True, "image_emb": False}),
    table_quality_check("behavior_sequences", "behavior_sequences_table_quality", "behavior_sequences",
                        schemas.BEHAVIOR_SEQUENCES, ["user_id", "event_timestamp"],
                        ["user_id", "event_timestamp", "hist_item_ids", "hist_age_s", "hist_len"], {"hist_age_s": False}),
    # the counter tables' schema follows settings.counters.windows_days: a callable of the settings
    table_quality_check("item_stats", "item_stats_table_quality", "item_stats",
                        lambda s: schemas.counter_schema("item", tuple(s.counters.windows_days)),
                        ["item_id", "event_timestamp"], ["item_id", "event_timestamp", "item_impressions", "item_click_rate"], {}),
    table_quality_check("user_stats", "user_stats_table_quality", "user_stats",
                        lambda s: schemas.counter_schema("user", tuple(s.counters.windows_days)),
                        ["user_id", "event_timestamp"], ["user_id", "event_timestamp", "user_impressions", "user_click_rate"], {}),
]


def _counters_consistent_check(entity: str) -> dg.AssetChecksDefinition:
    table = f"{entity}_stats"

    @dg.asset_check(asset=table, name=f"{table}_consistent",
                    description=f"{table}: per window impressions >= clicks >= orders >= 0, a window's count <= the "
                                "all-time count, smoothed rates in [0, 1]")
    def _check(ppm: PPMSettingsResource) -> dg.AssetCheckResult:
        from ppm_platform.data.validation import counter_consistency

        settings = ppm.get()
        r = counter_consistency(catalog.path(settings, table), entity, tuple(settings.counters.windows_days))
        return dg.AssetCheckResult(passed=r["violations"] == 0 and r["rows"] > 0,
                                   metadata={"rows": r["rows"], "violations": r["violations"],
                                             "by_rule": dg.MetadataValue.json(r["by_rule"])})
    return _check


COUNTERS_CONSISTENT = [_counters_consistent_check(e) for e in ("item", "user")]
