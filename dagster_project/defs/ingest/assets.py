"""Ingest group: canonical tables with validation, quarantine and row accounting."""

import dagster as dg

from dagster_project.resources import PPMSettingsResource
from dagster_project.metadata import metadata_from
from ppm_platform import pipeline
from ppm_platform.data.ingest import quarantine_db_path

TABLES = ("items", "users", "interactions", "queries")


@dg.multi_asset(
    outs={t: dg.AssetOut(group_name="ingest", description=f"Canonical `{t}` table (DESIGN.md §2), validated; "
                         "rejected rows in the quarantine table with a reason.", owners=["team:ppm-platform"])
          for t in TABLES},
    can_subset=False,
)
def canonical_tables(context: dg.AssetExecutionContext, ppm: PPMSettingsResource):
    """Read MovieLens-100K, validate, quarantine, write the canonical tables and profile feature tables."""
    settings = ppm.get()
    res = pipeline.ingest(settings)
    for t in TABLES:
        r = res[t]
        yield dg.MaterializeResult(asset_key=t, metadata={
            "rows_in": r["rows_in"], "rows_out": r["rows_out"], "rows_quarantined": r["rows_quarantined"],
            "quarantine_reasons": dg.MetadataValue.json(r["reasons"]),
            "fields_repaired": dg.MetadataValue.json(r["fields_repaired"]),
            "columns_dropped": dg.MetadataValue.json(r.get("columns_dropped", [])),
            "columns_dropped_count": len(r.get("columns_dropped", [])),
            # the rejected rows: a query to run (it names the quarantine database, under the artifacts folder)
            "quarantine_query": dg.MetadataValue.text(
                f'duckdb {quarantine_db_path(settings)} "SELECT quarantine_reason, action, count(*) FROM {t} GROUP BY ALL"'),
        })
