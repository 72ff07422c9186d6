"""Daily group: the incremental path (issue #8). Interactions and the time-varying feature tables (user
sequences, PPM user cache, user and item counters) are partitioned by UTC day; each day brings the online
store's time-varying views forward: each run writes its days' rows to the online store (a Feast
``materialize`` of the run's window, whatever the views' last materialized end; never moving an entity back).

The full assets (``interactions``, ``behavior_sequences``, ``ppm_user_cache``, ``online_store``) rebuild
everything; these daily partitions refresh one day of the same day-partitioned feature folders, so a day's
file is the same whichever path wrote it. A backfill of a date range (UI: the asset's "Materialize" ->
partition range, or ``ppm backfill --from D1 --to D2``) runs as one run (``BackfillPolicy.single_run``):
one Spark session, the days in order, one ``materialize`` of the range.
"""

from datetime import date, timedelta

import dagster as dg

from dagster_project.assets._meta import metadata_from
from dagster_project.assets.ppm import cache_versions_check_result
from dagster_project.resources import PPMSettingsResource, SparkResource
from ppm_platform import pipeline
from ppm_platform.config import Settings

_settings = Settings.from_env()
daily_partitions = dg.DailyPartitionsDefinition(start_date=_settings.partitions.start_date,
                                                end_date=_settings.partitions.end_date, timezone="UTC")
_KW = dict(group_name="daily", partitions_def=daily_partitions, backfill_policy=dg.BackfillPolicy.single_run(),
           owners=["team:ppm-platform"])


def _days(context: dg.AssetExecutionContext) -> list[date]:
    """The run's days, oldest first (one day, or a backfill's range)."""
    window = context.partition_time_window
    return [window.start.date() + timedelta(days=i) for i in range((window.end - window.start).days)]


def _per_day(results: list[dict], keys: tuple[str, ...]) -> dict:
    """Totals of ``keys`` over the days, the day count and the per-day figures as a JSON table."""
    md = {k: sum(r[k] for r in results) for k in keys}
    return {**md, "days": len(results), "per_day": dg.MetadataValue.json(results)}


@dg.asset(deps=["users", "items"], kinds={"pandas", "parquet"}, **_KW)
def interactions_daily(context: dg.AssetExecutionContext, ppm: PPMSettingsResource) -> dg.MaterializeResult:
    """One UTC day of the interaction log, validated against the canonical users/items (same rules as the
    full ingest), rejected rows in ``quarantine/interactions_daily/<day>.parquet`` with a reason."""
    settings = ppm.get()
    res = [pipeline.interactions_daily(settings, d) for d in _days(context)]
    return dg.MaterializeResult(metadata=_per_day(
        [{k: r[k] for k in ("day", "rows_in", "rows_out", "rows_quarantined", "reasons")} for r in res],
        ("rows_in", "rows_out", "rows_quarantined")))


@dg.asset(deps=["interactions_daily", "ppm_model", "ppm_item_cache", "item_stats", "user_stats"],
          kinds={"spark", "pytorch", "parquet"}, **_KW)
def user_features_daily(context: dg.AssetExecutionContext, ppm: PPMSettingsResource,
                        spark: SparkResource) -> dg.MaterializeResult:
    """One UTC day of the time-varying feature tables: ``behavior_sequences`` rows whose as-of time is on the
    day (from every interaction partition up to its end; earlier days must be materialized), their
    frozen-PPM ``ppm_user_cache`` rows and the day's ``user_stats`` / ``item_stats`` counter rows (with the
    prior of the full counters asset)."""
    settings, session = ppm.get(), spark.session()
    res = [pipeline.user_features_daily(settings, session, d) for d in _days(context)]
    return dg.MaterializeResult(metadata=_per_day(res, ("behavior_sequences_rows", "ppm_user_cache_rows",
                                                                "user_stats_rows", "item_stats_rows")))


@dg.asset_check(asset=user_features_daily, description="after the day's rewrite, every day file of ppm_user_cache "
                "holds one ppm_user_version, the current PPM's (a PPM retrain leaves older days of the old one)")
def user_features_daily_one_cache_version(ppm: PPMSettingsResource) -> dg.AssetCheckResult:
    return cache_versions_check_result(ppm.get(), "ppm_user_cache")


@dg.asset(deps=["user_features_daily", "feast_definitions"], kinds={"feast", "sqlite"}, **_KW)
def online_user_features(context: dg.AssetExecutionContext, ppm: PPMSettingsResource) -> dg.MaterializeResult:
    """The online store's time-varying views (`user_recent_items`, `ppm_user_cache`, `user_stats`,
    `item_stats`): the rows of the day (or range) written online whatever the views' last materialized end
    (a full run at mid-day, a re-run for late events); never moved backwards (``pipeline.online_user_features``)."""
    window = context.partition_time_window
    res = pipeline.online_user_features(ppm.get(), window.end, start=window.start)
    return dg.MaterializeResult(metadata=metadata_from(res))


daily_job = dg.define_asset_job("ppm_daily", selection=dg.AssetSelection.groups("daily"),
                                partitions_def=daily_partitions,
                                description="The incremental path for one day: interactions -> user features -> "
                                            "online store (the days' rows)")
daily_schedule = dg.build_schedule_from_partitioned_job(daily_job, hour_of_day=1)
