"""Asset checks on the key assets (issue #5): schema of every feature / canonical table equals
``data/schemas.py``, null rates, embedding norms finite and non-zero, no duplicate keys, row accounting of
every ingest table, training-set label rate within bounds, validation AUC above chance (Base and URM),
ONNX parity, scores for every candidate. Checks read the artifacts through the settings resource; the
figures come from :func:`ppm_platform.data.validation.table_quality` (library code, no Dagster)."""

import math

import dagster as dg
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dagster_project.resources import PPMSettingsResource
from ppm_platform.data import schemas
from ppm_platform.data.validation import table_quality
from ppm_platform.pipeline import stage_result

#: click rate of the training set must lie in this closed interval (a CTR data set, not all 0 or all 1)
CLICK_RATE_BOUNDS = (0.05, 0.95)


def _row_accounting_check(table: str):
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


#: (asset, check name, file under artifacts, schema, unique keys, non-null columns, vector -> must be non-zero)
_TABLE_SPECS = [
    ("items", "items_table_quality", "tables/items.parquet", schemas.ITEMS, ["item_id"], ["item_id", "title", "created_at"], {}),
    ("users", "users_table_quality", "tables/users.parquet", schemas.USERS, ["user_id"], ["user_id"], {}),
    ("interactions", "interactions_table_quality", "tables/interactions.parquet", schemas.INTERACTIONS,
     ["user_id", "item_id", "event_timestamp"], ["user_id", "item_id", "event_timestamp", "click", "order"], {}),
    ("items", "item_profile_table_quality", "features/item_profile.parquet", schemas.ITEM_PROFILE, ["item_id"],
     ["item_id", "event_timestamp"], {}),
    ("users", "user_profile_table_quality", "features/user_profile.parquet", schemas.USER_PROFILE, ["user_id"],
     ["user_id", "event_timestamp"], {}),
    ("item_multimodal", "item_multimodal_table_quality", "features/item_multimodal.parquet", schemas.ITEM_MULTIMODAL,
     ["item_id"], ["item_id", "event_timestamp", "text_emb", "image_emb", "has_image", "encoder_version"],
     {"text_emb": True, "image_emb": False}),
    ("behavior_sequences", "behavior_sequences_table_quality", "features/behavior_sequences.parquet",
     schemas.BEHAVIOR_SEQUENCES, ["user_id", "event_timestamp"],
     ["user_id", "event_timestamp", "hist_item_ids", "hist_age_s", "hist_len"], {"hist_age_s": False}),
    ("ppm_item_cache", "ppm_item_cache_table_quality", "features/ppm_item_cache.parquet", schemas.PPM_ITEM_CACHE,
     ["item_id"], ["item_id", "event_timestamp", "ppm_item_vec", "ppm_item_version"], {"ppm_item_vec": True}),
    ("ppm_user_cache", "ppm_user_cache_table_quality", "features/ppm_user_cache.parquet", schemas.PPM_USER_CACHE,
     ["user_id", "event_timestamp"], ["user_id", "event_timestamp", "ppm_user_seq", "ppm_seq_len", "ppm_user_version"],
     {"ppm_user_seq": False}),
    # the counter tables' schema follows settings.counters.windows_days: a callable of the settings
    ("item_stats", "item_stats_table_quality", "features/item_stats.parquet",
     lambda s: schemas.counter_schema("item", tuple(s.counters.windows_days)), ["item_id", "event_timestamp"],
     ["item_id", "event_timestamp", "item_impressions", "item_click_rate"], {}),
    ("user_stats", "user_stats_table_quality", "features/user_stats.parquet",
     lambda s: schemas.counter_schema("user", tuple(s.counters.windows_days)), ["user_id", "event_timestamp"],
     ["user_id", "event_timestamp", "user_impressions", "user_click_rate"], {}),
]


def _table_quality_check(asset, name, rel, schema, keys, non_null, vectors):
    @dg.asset_check(asset=asset, name=name,
                    description=f"{rel}: schema == data/schemas.py, unique {keys}, no nulls in {non_null}"
                                + (f", finite (non-zero: {[c for c, nz in vectors.items() if nz]}) {list(vectors)}"
                                   if vectors else ""))
    def _check(ppm: PPMSettingsResource) -> dg.AssetCheckResult:
        settings = ppm.get()
        q = table_quality(settings.artifacts_dir / rel, schema(settings) if callable(schema) else schema, keys,
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


@dg.asset_check(asset="training_set", description=f"click rate within {list(CLICK_RATE_BOUNDS)}, order rate <= "
                "click rate, one row per interaction")
def training_set_label_rate(ppm: PPMSettingsResource) -> dg.AssetCheckResult:
    settings = ppm.get()
    t = pq.read_table(settings.artifacts_dir / "training_set.parquet", columns=["click", "order"])
    n_inter = pq.read_metadata(settings.tables_dir / "interactions.parquet").num_rows
    click = float(pc.mean(t.column("click")).as_py() or 0.0)
    order = float(pc.mean(t.column("order")).as_py() or 0.0)
    lo, hi = CLICK_RATE_BOUNDS
    return dg.AssetCheckResult(passed=lo <= click <= hi and order <= click and t.num_rows == n_inter,
                               metadata={"rows": t.num_rows, "interactions": n_inter, "click_rate": click,
                                         "order_rate": order})


@dg.asset_check(asset="base_model", description="validation click AUC of the Base (IDRec) is finite and > 0.5")
def base_valid_auc_above_chance(ppm: PPMSettingsResource) -> dg.AssetCheckResult:
    epochs = stage_result(ppm.get(), "base_model")["epochs"]
    best = max(e["valid_click_auc"] for e in epochs)
    return dg.AssetCheckResult(passed=math.isfinite(best) and best > 0.5, metadata={"best_valid_click_auc": best})


ROW_ACCOUNTING_CHECKS = [_row_accounting_check(t) for t in ("items", "users", "interactions", "queries")]
interactions_row_accounting = ROW_ACCOUNTING_CHECKS[2]
TABLE_QUALITY_CHECKS = [_table_quality_check(*spec) for spec in _TABLE_SPECS]


@dg.asset_check(asset="urm_model", description="validation click AUC of the URM is finite and > 0.5")
def urm_valid_auc_above_chance(ppm: PPMSettingsResource) -> dg.AssetCheckResult:
    epochs = stage_result(ppm.get(), "urm_model")["epochs"]
    best = max(e["valid_click_auc"] for e in epochs)
    return dg.AssetCheckResult(passed=math.isfinite(best) and best > 0.5, metadata={"best_valid_click_auc": best})


@dg.asset_check(asset="urm_onnx", description="max |torch - onnxruntime| <= 1e-5")
def urm_onnx_parity(ppm: PPMSettingsResource) -> dg.AssetCheckResult:
    r = stage_result(ppm.get(), "urm_onnx")
    return dg.AssetCheckResult(passed=r["max_abs_diff"] <= 1e-5, metadata={"max_abs_diff": r["max_abs_diff"]})


@dg.asset_check(asset="ranking_demo", description="every candidate gets finite click and order scores")
def ranking_scores_every_candidate(ppm: PPMSettingsResource) -> dg.AssetCheckResult:
    r = stage_result(ppm.get(), "rank_demo")
    return dg.AssetCheckResult(passed=r["scored"] == r["candidates"] and r["all_finite"],
                               metadata={"scored": r["scored"], "candidates": r["candidates"]})


def _counters_consistent_check(entity: str):
    table = f"{entity}_stats"

    @dg.asset_check(asset=table, name=f"{table}_consistent",
                    description=f"{table}: per window impressions >= clicks >= orders >= 0, a window's count <= the "
                                "all-time count, smoothed rates in [0, 1]")
    def _check(ppm: PPMSettingsResource) -> dg.AssetCheckResult:
        from ppm_platform.data.validation import counter_consistency

        r = counter_consistency(ppm.get().features_dir / f"{table}.parquet", entity,
                                tuple(ppm.get().counters.windows_days))
        return dg.AssetCheckResult(passed=r["violations"] == 0 and r["rows"] > 0,
                                   metadata={"rows": r["rows"], "violations": r["violations"],
                                             "by_rule": dg.MetadataValue.json(r["by_rule"])})
    return _check


COUNTER_CHECKS = [_counters_consistent_check(e) for e in ("item", "user")]


ALL_CHECKS = [*ROW_ACCOUNTING_CHECKS, *COUNTER_CHECKS, *TABLE_QUALITY_CHECKS, training_set_label_rate, base_valid_auc_above_chance,
              urm_valid_auc_above_chance, urm_onnx_parity, ranking_scores_every_candidate]
