"""Checks on the daily group: per-day (partitioned) row accounting of the interaction partitions, and one
PPM version across every day file of the user cache after a day's rewrite."""

import dagster as dg

from dagster_project.check_factories import cache_versions_check_result
from dagster_project.resources import PPMSettingsResource
from ppm_platform.pipeline import stage_result


def user_features_daily_one_cache_version(ppm: PPMSettingsResource) -> dg.AssetCheckResult:
    """Every day file of ``ppm_user_cache`` holds one ``ppm_user_version``, the current PPM's (the whole
    table, not the run's days: a PPM retrain leaves older days of the old one)."""
    return cache_versions_check_result(ppm.get(), "ppm_user_cache")


def _run_days(context: dg.AssetCheckExecutionContext) -> list[str]:
    """The partition keys (days) of the run: one, or a backfill range run as one run."""
    op = context.op_execution_context
    return [op.partition_key] if op.has_partition_key else list(op.partition_keys)


def interactions_daily_row_accounting(context: dg.AssetCheckExecutionContext,
                                      ppm: PPMSettingsResource) -> dg.AssetCheckResult:
    """For each day of the run: ``rows_in == rows_out + rows_quarantined`` of that day's interaction partition
    (the stage result ``pipeline.interactions_daily`` recorded), nothing silently dropped."""
    settings = ppm.get()
    rows = []
    for day in _run_days(context):
        r = stage_result(settings, f"interactions_daily/{day}")
        rows.append({"day": day, "recorded": r is not None, **{k: (r or {}).get(k, 0)
                                                               for k in ("rows_in", "rows_out", "rows_quarantined")}})
    bad = [r["day"] for r in rows if not r["recorded"] or r["rows_in"] != r["rows_out"] + r["rows_quarantined"]]
    return dg.AssetCheckResult(passed=bool(rows) and not bad, metadata={
        "days": dg.MetadataValue.text(f"{rows[0]['day']} .. {rows[-1]['day']}" if rows else "none"),
        "per_day": dg.MetadataValue.table(
            [dg.TableRecord({k: r[k] for k in ("day", "rows_in", "rows_out", "rows_quarantined")}) for r in rows],
            schema=dg.TableSchema([dg.TableColumn("day", "string"), dg.TableColumn("rows_in", "int"),
                                   dg.TableColumn("rows_out", "int"), dg.TableColumn("rows_quarantined", "int")])),
        "failed_days": dg.MetadataValue.text(", ".join(bad) or "none")})


def build_checks(partitions_def: dg.TimeWindowPartitionsDefinition,
                 assets: list[dg.AssetsDefinition]) -> list[dg.AssetChecksDefinition]:
    """The daily group's checks: ``interactions_daily_row_accounting`` partitioned like its asset (one result
    per day in the UI's partition view), ``user_features_daily_one_cache_version`` unpartitioned (it checks the
    whole cache table), and a time-partition freshness check per daily asset (the latest day materialized by
    03:00 UTC, two hours after the daily schedule's tick)."""
    import warnings

    with warnings.catch_warnings():
        # partitions_def on an asset check is a preview API; it is what gives each day its own check result
        warnings.filterwarnings("ignore", message=r"Specifying a partitions_def on an AssetCheckSpec",
                                category=dg.PreviewWarning)
        row_accounting = dg.asset_check(
            asset="interactions_daily", partitions_def=partitions_def,
            description="per day: rows_in == rows_out + rows_quarantined (nothing silently dropped)",
        )(interactions_daily_row_accounting)
    one_version = dg.asset_check(
        asset="user_features_daily", description="after the day's rewrite, every day file of ppm_user_cache holds "
        "one ppm_user_version, the current PPM's (a PPM retrain leaves older days of the old one)",
    )(user_features_daily_one_cache_version)
    with warnings.catch_warnings():
        # superseded by FreshnessPolicy, which in Dagster 1.13 is evaluated per asset, not per partition: a
        # backfill of an old day would count as fresh; this check asks for the latest day itself
        warnings.filterwarnings("ignore", message=r"Function `build_time_partition_freshness_checks` is superseded",
                                category=dg.SupersessionWarning)
        freshness = dg.build_time_partition_freshness_checks(assets=assets, deadline_cron="0 3 * * *",
                                                             timezone="UTC")
    return [row_accounting, one_version, *freshness]


def build_freshness_sensor(checks: list[dg.AssetChecksDefinition]) -> dg.SensorDefinition:
    """The sensor that evaluates the freshness checks (off until turned on in the UI, as the schedule)."""
    import warnings

    freshness = [c for c in checks if any(k.name == "freshness_check" for k in c.check_keys)]
    with warnings.catch_warnings():
        # the sensor that runs the time-partition freshness checks above (same supersession, same reason)
        warnings.filterwarnings("ignore", message=r"Function `build_sensor_for_freshness_checks` is superseded",
                                category=dg.SupersessionWarning)
        return dg.build_sensor_for_freshness_checks(freshness_checks=freshness, name="ppm_daily_freshness_sensor")
