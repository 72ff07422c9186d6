"""The Dagster code location (as project_fully_featured smoke-loads its own): it loads without warnings, and
its asset keys, groups, asset checks, jobs and schedules are pinned: a refactor of ``dagster_project/``
that drops or renames one fails here. Settings are built once per run; the daily partitions follow the
settings given to ``build_defs``."""

import subprocess
import sys

import dagster as dg

from dagster_project.resources import PPMSettingsResource, SparkResource

#: asset key -> group (DESIGN.md §3)
ASSET_GROUPS = {
    "items": "ingest", "users": "ingest", "interactions": "ingest", "queries": "ingest",
    "text_encoder": "encoders", "image_encoder": "encoders",
    "item_multimodal": "features", "behavior_sequences": "features", "item_stats": "features", "user_stats": "features",
    "ppm_model": "ppm", "ppm_item_cache": "ppm", "ppm_user_cache": "ppm", "item_semantic_id": "ppm",
    "feast_definitions": "feast", "training_set": "feast", "online_store": "feast",
    "base_model": "training", "urm_model": "training",
    "urm_onnx": "serving", "base_onnx": "serving", "ranking_demo": "serving",
    "evaluation_report": "evaluation", "item_cold_report": "evaluation",
    "interactions_daily": "daily", "user_features_daily": "daily", "online_user_features": "daily",
}

#: every asset check as "asset:check"
CHECKS = {
    "base_model:base_valid_auc_above_chance", "behavior_sequences:behavior_sequences_table_quality",
    "evaluation_report:evaluation_report_complete", "interactions:interactions_row_accounting",
    "interactions:interactions_table_quality", "item_multimodal:item_multimodal_table_quality",
    "item_semantic_id:item_semantic_id_table_quality",
    "item_stats:item_stats_consistent", "item_stats:item_stats_table_quality", "items:item_profile_table_quality",
    "items:items_row_accounting", "items:items_table_quality", "ppm_item_cache:ppm_item_cache_one_version",
    "ppm_item_cache:ppm_item_cache_table_quality", "ppm_user_cache:ppm_user_cache_one_version",
    "ppm_user_cache:ppm_user_cache_table_quality", "queries:queries_row_accounting",
    "ranking_demo:ranking_scores_every_candidate", "ranking_demo:serving_parity",
    "training_set:training_set_label_rate", "urm_model:urm_valid_auc_above_chance", "urm_onnx:urm_onnx_parity",
    "user_features_daily:user_features_daily_one_cache_version", "user_stats:user_stats_consistent",
    "user_stats:user_stats_table_quality", "users:user_profile_table_quality", "users:users_row_accounting",
    "users:users_table_quality",
}
#: checks added on the daily group: per-day row accounting (a partitioned check) and a time-partition freshness
#: check per daily asset (the latest day materialized by 03:00 UTC)
DAILY_CHECKS = {"interactions_daily:interactions_daily_row_accounting", "interactions_daily:freshness_check",
                "user_features_daily:freshness_check", "online_user_features:freshness_check"}
#: asset -> concurrency pool (the heavy steps); every other asset has none
POOLS = {**dict.fromkeys(["text_encoder", "image_encoder", "ppm_model", "base_model", "urm_model",
                          "evaluation_report"], "torch_training"),
         **dict.fromkeys(["item_multimodal", "behavior_sequences", "item_stats", "user_stats", "ppm_item_cache",
                          "ppm_user_cache", "user_features_daily", "item_cold_report", "item_semantic_id"], "spark")}
#: the feature and cache assets a full run rebuilds carry a freshness policy
FRESHNESS = {"item_multimodal", "behavior_sequences", "item_stats", "user_stats", "ppm_item_cache", "ppm_user_cache",
             "item_semantic_id"}


def _graph():
    from dagster_project.definitions import defs

    return defs, defs.resolve_asset_graph()


def test_asset_keys_groups_and_checks_are_pinned():
    defs, graph = _graph()
    assert {k.to_user_string(): graph.get(k).group_name for k in graph.get_all_asset_keys()} == ASSET_GROUPS
    assert {f"{k.asset_key.to_user_string()}:{k.name}" for k in graph.asset_check_keys} == CHECKS | DAILY_CHECKS
    assert sorted(j.name for j in defs.resolve_all_job_defs()) == ["__ASSET_JOB", "ppm_daily", "ppm_main"]
    assert [s.name for s in defs.schedules] == ["ppm_daily_schedule"]
    assert [s.name for s in defs.sensors] == ["ppm_daily_freshness_sensor"]
    # the caches sit between the frozen PPM and the feature store
    assert {k.to_user_string() for k in graph.get(dg.AssetKey("ppm_user_cache")).parent_keys} == {
        "ppm_model", "behavior_sequences", "ppm_item_cache"}


def test_pools_freshness_and_partitioned_checks():
    defs, graph = _graph()
    keys = graph.get_all_asset_keys()
    assert {k.to_user_string(): defs.resolve_assets_def(k).op.pool for k in keys
            if defs.resolve_assets_def(k).op.pool} == POOLS
    policies = {k.to_user_string(): graph.get(k).freshness_policy for k in keys if graph.get(k).freshness_policy}
    assert set(policies) == FRESHNESS
    assert {type(p).__name__ for p in policies.values()} == {"TimeWindowFreshnessPolicy"}
    daily = graph.get(dg.AssetKey("interactions_daily")).partitions_def
    row_accounting = graph.get(dg.AssetCheckKey(dg.AssetKey("interactions_daily"), "interactions_daily_row_accounting"))
    assert row_accounting.partitions_def == daily


def test_partitioned_row_accounting_reads_each_days_result(tmp_path):
    """The per-day check of interactions_daily, for one day and for a range run (a backfill as one run)."""
    from dagster_project.definitions import build_defs
    from ppm_platform.config import Settings
    from ppm_platform.io import write_json_atomic

    s = Settings.from_env(env={}, artifacts_dir=tmp_path)
    s = s.model_copy(update={"partitions": s.partitions.model_copy(update={"start_date": "2024-03-01",
                                                                           "end_date": "2024-03-08"})})
    for day, out in (("2024-03-01", 9), ("2024-03-02", 10), ("2024-03-03", 10)):
        write_json_atomic({"day": day, "rows_in": 10, "rows_out": out, "rows_quarantined": 1 if out == 9 else 0},
                          tmp_path / "runs" / "interactions_daily" / f"{day}.json")

    @dg.asset(key="interactions_daily", partitions_def=dg.DailyPartitionsDefinition("2024-03-01", end_date="2024-03-08"))
    def stub() -> None:
        """Stands in for the real asset (its stage results are written above)."""

    check = build_defs(s).get_asset_checks_def(dg.AssetCheckKey(dg.AssetKey("interactions_daily"),
                                                                "interactions_daily_row_accounting"))
    ppm = PPMSettingsResource(artifacts_dir=str(tmp_path))
    res = dg.materialize([stub, check], resources={"ppm": ppm}, partition_key="2024-03-02")
    (ev,) = res.get_asset_check_evaluations()
    assert ev.passed and ev.partition == "2024-03-02"
    res = dg.materialize([stub, check], resources={"ppm": ppm}, tags={
        "dagster/asset_partition_range_start": "2024-03-01", "dagster/asset_partition_range_end": "2024-03-04"})
    (ev,) = res.get_asset_check_evaluations()
    assert not ev.passed and ev.metadata["failed_days"].value == "2024-03-04"  # never materialized
    assert [r.data["day"] for r in ev.metadata["per_day"].value.records] == [f"2024-03-0{i}" for i in range(1, 5)]


def test_definitions_load_without_warnings():
    """No warning (BetaWarning, SupersessionWarning, DeprecationWarning, ...) printed when the UI or a run loads
    the definitions, with every warning shown once (``-W always``)."""
    proc = subprocess.run([sys.executable, "-W", "always", "-c", "import dagster_project.definitions"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "Warning" not in proc.stderr, proc.stderr[-3000:]


def test_daily_partitions_come_from_the_settings(tmp_path):
    from dagster_project.definitions import build_defs
    from ppm_platform.config import Settings

    s = Settings.from_env(env={}, artifacts_dir=tmp_path)
    s = s.model_copy(update={"partitions": s.partitions.model_copy(update={"start_date": "2024-03-01",
                                                                           "end_date": "2024-03-08"})})
    graph = build_defs(s).resolve_asset_graph()
    for key in ("interactions_daily", "user_features_daily", "online_user_features"):
        keys = graph.get(dg.AssetKey(key)).partitions_def.get_partition_keys()
        assert keys[0] == "2024-03-01" and keys[-1] == "2024-03-07" and len(keys) == 7, key
    assert graph.get(dg.AssetKey("urm_model")).partitions_def is None


def test_settings_are_built_once_per_run(tmp_path, monkeypatch):
    """Every step of a run sees the same Settings object (the steps hand it to the Spark resource)."""
    monkeypatch.setenv("PPM_ARTIFACTS_DIR", str(tmp_path))
    seen = []

    @dg.asset
    def a(ppm: PPMSettingsResource, spark: SparkResource):
        seen.append((ppm.get(), ppm.get()))

    @dg.asset(deps=[a])
    def b(ppm: PPMSettingsResource):
        seen.append((ppm.get(), ppm.get()))

    assert dg.materialize([a, b], resources={"ppm": PPMSettingsResource(), "spark": SparkResource()}).success
    objs = {id(x) for pair in seen for x in pair}
    assert len(seen) == 2 and len(objs) == 1 and seen[0][0].artifacts_dir == tmp_path


def test_dagster_yaml_writer_keeps_user_keys_and_loads(tmp_path):
    """The dagster.yaml of `make ui` (and the screenshot script): nux and telemetry off, one slot per pool at run
    granularity, a user's own keys kept; Dagster loads it as an instance config."""
    import yaml

    from dagster_project.instance import expanded_query
    from ppm_platform.cli.orchestration import write_dagster_yaml

    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: true\nconcurrency:\n  runs:\n    max_concurrent_runs: 2\n")
    cfg = yaml.safe_load(write_dagster_yaml(tmp_path).read_text())
    assert cfg["nux"] == {"enabled": False} and cfg["telemetry"] == {"enabled": True}  # the user's choice wins
    assert cfg["concurrency"] == {"runs": {"max_concurrent_runs": 2},
                                  "pools": {"default_limit": 1, "granularity": "run"}}
    assert write_dagster_yaml(tmp_path).read_text() == write_dagster_yaml(tmp_path).read_text()  # idempotent
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:  # reads tmp_path/dagster.yaml
        pools = instance.get_concurrency_config().pool_config
        assert pools.default_pool_limit == 1 and pools.pool_granularity.value == "run"
    q = expanded_query(["ingest", "daily"])
    assert q.startswith("expanded=") and "global%40global%3Aingest" in q and "__repository__%40dagster_project.definitions%3Adaily" in q


def test_model_metadata_epochs_table_kept_epoch_and_plots(tmp_path):
    """A trained model's metadata: floats to 4 significant digits, per-epoch history as a table, the kept
    epoch (best validation click AUC, the earlier of equal ones) as a field and marked on the curve."""
    import base64

    from dagster_project.metadata import kept_epoch, model_metadata, round_sig

    assert (round_sig(0.712345678), round_sig(734.5678), round_sig(1.23456e-6)) == (0.7123, 734.6, 1.235e-06)
    epochs = [{"epoch": 1, "train_loss": 0.6912345, "valid_click_auc": 0.701234, "valid_order_auc": 0.65},
              {"epoch": 2, "train_loss": 0.61, "valid_click_auc": 0.723456789, "valid_order_auc": 0.66},
              {"epoch": 3, "train_loss": 0.55, "valid_click_auc": 0.711, "valid_order_auc": 0.67},
              {"epoch": 4, "train_loss": 0.5, "valid_click_auc": 0.723456789, "valid_order_auc": 0.6}]
    assert kept_epoch(epochs) == 2 and kept_epoch([{"epoch": 1, "valid_click_auc": float("nan")}]) is None
    from ppm_platform.config import Settings

    settings = Settings(artifacts_dir=tmp_path)
    md = model_metadata({"epochs": epochs, "test_click_auc": 0.7345678912, "rows": 10, "config": {"d": 1}},
                        settings, "urm_model", "URM", skip=("config",))
    assert "config" not in md and md["rows"].value == 10 and md["test_click_auc"].value == 0.7346
    assert md["kept_epoch"].value == 2 and md["kept_valid_click_auc"].value == 0.7235
    tbl = md["epochs"]
    assert [c.name for c in tbl.schema.columns] == ["epoch", "train_loss", "valid_click_auc", "valid_order_auc"]
    assert tbl.records[0].data == {"epoch": 1, "train_loss": 0.6912, "valid_click_auc": 0.7012, "valid_order_auc": 0.65}
    png = base64.b64decode(md["plot_training_curves"].value.split("base64,", 1)[1].split(")", 1)[0])
    assert md["plot_training_curves_file"].value == "reports/plots/urm_model_training_curves.png"
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / md["plot_training_curves_file"].value).read_bytes() == png
