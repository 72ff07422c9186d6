"""Asset-check builders shared by several groups' ``defs/<group>/checks.py``: row accounting of an ingest
table, the quality of a written table (schema equal to ``data/schemas.py``, null rates, duplicate keys,
finite / non-zero vectors), validation AUC above chance, and one PPM version per cache table. Each builder
is a thin call of a library function (:mod:`ppm_platform.data.validation`,
:mod:`ppm_platform.features.ppm_caches`); the checks read the artifacts through the settings resource."""

from __future__ import annotations

import math

import dagster as dg

from dagster_project.metadata import num
from dagster_project.resources import PPMSettingsResource
from ppm_platform.data import catalog
from ppm_platform.data.validation import table_quality
from ppm_platform.pipeline import stage_result


def row_accounting_check(table: str) -> dg.AssetChecksDefinition:
    """``<table>_row_accounting``: the ingest stage's ``rows_in == rows_out + rows_quarantined`` for ``table``
    (``queries`` may be absent: a catalog without a query log)."""
    @dg.asset_check(asset=table, name=f"{table}_row_accounting",
                    description=f"{table}: rows_in == rows_out + rows_quarantined (nothing silently dropped)")
    def _check(ppm: PPMSettingsResource) -> dg.AssetCheckResult:
        ingest = stage_result(ppm.get(), "ingest") or {}
        if table not in ingest:
            return dg.AssetCheckResult(passed=table == "queries", metadata={"note": f"{table} not ingested"})
        r = ingest[table]
        return dg.AssetCheckResult(
            passed=r["rows_in"] == r["rows_out"] + r["rows_quarantined"],
            metadata={"rows_in": r["rows_in"], "rows_out": r["rows_out"], "rows_quarantined": r["rows_quarantined"],
                      "reasons": dg.MetadataValue.json(r["reasons"]),
                      "columns_dropped": dg.MetadataValue.json(r.get("columns_dropped", []))})
    return _check


def table_quality_check(asset: str, name: str, table: str, schema, keys: list[str], non_null: list[str],
                        vectors: dict[str, bool]) -> dg.AssetChecksDefinition:
    """Check ``name`` on ``asset``: the catalog table ``table`` (:mod:`ppm_platform.data.catalog`) has
    ``schema`` (a ``pyarrow.Schema``, or a callable of the settings for schemas that follow the config), unique
    ``keys``, no nulls in ``non_null``, finite vectors (``vectors``: column -> must also be non-zero) and at least one row."""
    @dg.asset_check(asset=asset, name=name,
                    description=f"{table}: schema == data/schemas.py, unique {keys}, no nulls in {non_null}"
                                + (f", finite (non-zero: {[c for c, nz in vectors.items() if nz]}) {list(vectors)}"
                                   if vectors else ""))
    def _check(ppm: PPMSettingsResource) -> dg.AssetCheckResult:
        settings = ppm.get()
        q = table_quality(catalog.path(settings, table), schema(settings) if callable(schema) else schema, keys,
                          non_null, vectors)
        md = {"rows": q["rows"], "schema_ok": q["schema_ok"], "duplicate_keys": q["duplicate_keys"],
              "null_counts": dg.MetadataValue.json(q["null_counts"]),
              "problems": dg.MetadataValue.json(q["problems"])}
        if q["vectors"]:
            md["vector_norms"] = dg.MetadataValue.json(q["vectors"])
        if q["schema_diff"]:
            md["schema_diff"] = dg.MetadataValue.text(q["schema_diff"])
        return dg.AssetCheckResult(passed=q["ok"] and q["rows"] > 0, metadata=md)
    return _check


def valid_auc_above_chance_check(asset: str, name: str, label: str) -> dg.AssetChecksDefinition:
    """Check ``name`` on a CTR model ``asset``: the best validation click AUC over its epochs (the stage
    result of the same name) is finite and > 0.5."""
    @dg.asset_check(asset=asset, name=name, description=f"validation click AUC of the {label} is finite and > 0.5")
    def _check(ppm: PPMSettingsResource) -> dg.AssetCheckResult:
        epochs = stage_result(ppm.get(), asset)["epochs"]
        best = max(e["valid_click_auc"] for e in epochs)
        return dg.AssetCheckResult(passed=math.isfinite(best) and best > 0.5,
                                   metadata={"best_valid_click_auc": num(best)})
    return _check


def cache_versions_check_result(settings, table: str) -> dg.AssetCheckResult:
    """One version per cache table, that of the current PPM (DESIGN.md §4 version rule): the result of
    :func:`ppm_platform.features.ppm_caches.cache_table_versions` on the catalog table ``table``."""
    from ppm_platform.features.ppm_caches import CACHE_VERSION_COLUMNS, cache_table_versions, ppm_version_of
    from ppm_platform.model_store import CONFIG_FILE

    ppm_dir = catalog.path(settings, "ppm")
    expected = ppm_version_of(ppm_dir) if (ppm_dir / CONFIG_FILE).exists() else None
    r = cache_table_versions(catalog.path(settings, table), CACHE_VERSION_COLUMNS[table], expected)
    return dg.AssetCheckResult(passed=r["passed"], metadata={
        "rows": r["rows"], "null_rows": r["null_rows"], "versions": dg.MetadataValue.json(r["versions"]),
        "files_by_version": dg.MetadataValue.json(r["files_by_version"]),
        "ppm_version": dg.MetadataValue.text(str(expected)), "problems": dg.MetadataValue.json(r["problems"])})
