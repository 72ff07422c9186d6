"""Daily group: the incremental path. Interactions and the time-varying feature tables (user
sequences, PPM user cache, user and item counters) are partitioned by UTC day; each day brings the online
store's time-varying views forward: each run writes its days' rows to the online store (a Feast
``materialize`` of the run's window, whatever the views' last materialized end; never moving an entity back).

The full assets (``interactions``, ``behavior_sequences``, ``ppm_user_cache``, ``online_store``) rebuild
everything; these daily partitions refresh one day of the same day-partitioned feature folders, so a day's
file is the same whichever path wrote it. A backfill of a date range (UI: the asset's "Materialize" ->
partition range, or ``ppm backfill --from D1 --to D2``) runs as one run (``BackfillPolicy.single_run``):
one Spark session, the days in order, one ``materialize`` of the range.
"""

import json
import warnings
from datetime import date, timedelta

import dagster as dg

from dagster_project.metadata import metadata_from, num, table
from dagster_project.policies import SPARK_POOL
from dagster_project.resources import PPMSettingsResource, SparkResource
from ppm_platform import pipeline

DAILY_ASSETS = ("interactions_daily", "user_features_daily", "online_user_features")


def _days(context: dg.AssetExecutionContext) -> list[date]:
    """The run's days, oldest first (one day, or a backfill's range)."""
    window = context.partition_time_window
    return [window.start.date() + timedelta(days=i) for i in range((window.end - window.start).days)]


def _per_day(results: list[dict], keys: tuple[str, ...]) -> dict:
    """Totals of ``keys`` over the days, the day count and the per-day figures as a table (nested values,
    e.g. quarantine reasons, as JSON text in their cell)."""
    md = {k: num(sum(r[k] for r in results)) for k in keys}
    rows = [{k: v if isinstance(v, (str, int, float, bool, type(None))) else json.dumps(v) for k, v in r.items()}
            for r in results]
    return {**md, "days": num(len(results)), "per_day": table(rows)}


def build_assets(partitions_def: dg.TimeWindowPartitionsDefinition) -> list[dg.AssetsDefinition]:
    """The daily assets over ``partitions_def`` (built from the settings in ``definitions.py``), each
    backfilled in one run per range (``BackfillPolicy.single_run``); the Spark step in the ``spark`` pool."""
    kw = dict(group_name="daily", partitions_def=partitions_def, backfill_policy=dg.BackfillPolicy.single_run(),
              owners=["team:ppm-platform"])
    with warnings.catch_warnings():
        # `backfill_policy` is a beta parameter of @asset; a range backfill must be one run (one Spark
        # session, one Feast materialize of the range), so we use it and keep its warning out of every load
        warnings.filterwarnings("ignore", message=r"Parameter `backfill_policy` of function `asset`",
                                category=dg.BetaWarning)

        @dg.asset(deps=["users", "items"], kinds={"pandas", "parquet"}, **kw)
        def interactions_daily(context: dg.AssetExecutionContext, ppm: PPMSettingsResource) -> dg.MaterializeResult:
            """One UTC day of the interaction log, validated against the canonical users/items (same rules as
            the full ingest), rejected rows in ``quarantine/interactions_daily/<day>.parquet`` with a reason."""
            settings = ppm.get()
            res = [pipeline.interactions_daily(settings, d) for d in _days(context)]
            return dg.MaterializeResult(metadata=_per_day(
                [{k: r[k] for k in ("day", "rows_in", "rows_out", "rows_quarantined", "reasons")} for r in res],
                ("rows_in", "rows_out", "rows_quarantined")))

        @dg.asset(deps=["interactions_daily", "ppm_model", "ppm_item_cache", "item_stats", "user_stats"],
                  kinds={"spark", "pytorch", "parquet"}, pool=SPARK_POOL, **kw)
        def user_features_daily(context: dg.AssetExecutionContext, ppm: PPMSettingsResource,
                                spark: SparkResource) -> dg.MaterializeResult:
            """One UTC day of the time-varying feature tables: ``behavior_sequences`` rows whose as-of time is
            on the day (from every interaction partition up to its end; earlier days must be materialized), their
            frozen-PPM ``ppm_user_cache`` rows and the day's ``user_stats`` / ``item_stats`` counter rows (with
            the prior of the full counters asset)."""
            settings = ppm.get()
            session = spark.session(settings)
            res = [pipeline.user_features_daily(settings, session, d) for d in _days(context)]
            return dg.MaterializeResult(metadata=_per_day(res, ("behavior_sequences_rows", "ppm_user_cache_rows",
                                                                "user_stats_rows", "item_stats_rows")))

        @dg.asset(deps=["user_features_daily", "feast_definitions"], kinds={"feast", "sqlite"}, **kw)
        def online_user_features(context: dg.AssetExecutionContext,
                                 ppm: PPMSettingsResource) -> dg.MaterializeResult:
            """The online store's time-varying views (`user_recent_items`, `ppm_user_cache`, `user_stats`,
            `item_stats`): the rows of the day (or range) written online whatever the views' last materialized
            end (a full run at mid-day, a re-run for late events); never moved backwards
            (``pipeline.online_user_features``)."""
            window = context.partition_time_window
            res = pipeline.online_user_features(ppm.get(), window.end, start=window.start)
            return dg.MaterializeResult(metadata=metadata_from(res))

    return [interactions_daily, user_features_daily, online_user_features]


def build_job_and_schedule() -> tuple:
    """``ppm_daily`` (the daily group for one day; its partitioning is that of its assets) and its schedule
    (each day at 01:00 UTC, the previous day's partition)."""
    job = dg.define_asset_job("ppm_daily", selection=dg.AssetSelection.groups("daily"),
                              description="The incremental path for one day: interactions -> user features -> "
                                          "online store (the days' rows)")
    return job, dg.build_schedule_from_partitioned_job(job, hour_of_day=1)
