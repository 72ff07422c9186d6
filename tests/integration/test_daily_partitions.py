"""The daily partitions on the real MovieLens-100K subset, with real Dagster, Spark and Feast:
a date-range backfill through the CLI (`ppm backfill`, one Dagster run), day files equal to the full
run's, row accounting against the canonical table, and the online store's user views brought forward by
the daily online path (each run's rows written, never backwards).

Runs on a copy of the session's artifacts (tests/integration/conftest.py) with a fresh Feast registry and
online store, so the other modules keep theirs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import date, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.integration

FIRST, LAST = date(1997, 9, 20), date(1997, 9, 24)  # the first 5 partitions (start_date of MovieLens)
DAYS = [FIRST + timedelta(days=i) for i in range((LAST - FIRST).days + 1)]


@pytest.fixture(scope="module")
def daily(pipeline_run, tmp_path_factory):
    """(settings of the copy, original settings, env for the CLI) after `ppm backfill --from FIRST --to LAST`."""
    from ppm_platform import pipeline

    settings, _ = pipeline_run
    art = tmp_path_factory.mktemp("daily") / "artifacts"
    shutil.copytree(settings.artifacts_dir, art, ignore=shutil.ignore_patterns("dagster_home", "reports"))
    s = settings.model_copy(update={"artifacts_dir": art})
    shutil.rmtree(s.feast_dir)  # fresh registry (it holds absolute source paths) and empty online store
    pipeline.feast_definitions(s)
    for table in ("behavior_sequences", "ppm_user_cache", "user_stats", "item_stats"):  # the backfill rebuilds these
        for d in DAYS:
            (s.features_dir / f"{table}.parquet" / f"{d}.parquet").unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PPM_")}
    env.update({"PPM_ARTIFACTS_DIR": str(art), "PPM_MAX_ITEMS": str(settings.max_items),
                "PPM_CONFIG": str(art / "config.json"), "PPM_DATA_DIR": str(settings.data_dir)})
    proc = subprocess.run([sys.executable, "-m", "ppm_platform.cli", "backfill", "--from", str(FIRST),
                           "--to", str(LAST)], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"backfill failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return s, settings, env


def test_backfill_writes_each_day_with_row_accounting(daily):
    s, orig, _ = daily
    inter = pd.read_parquet(orig.tables_dir / "interactions.parquet")
    day = inter["event_timestamp"].dt.date
    for d in DAYS:
        part = pd.read_parquet(s.tables_dir / "interactions_daily" / f"{d}.parquet")
        expected = inter[day == d].reset_index(drop=True)
        assert len(part) == len(expected), d  # every canonical row of the day, none of another day
        pd.testing.assert_frame_equal(part.sort_values(["event_timestamp", "user_id", "item_id"]).reset_index(drop=True),
                                      expected.sort_values(["event_timestamp", "user_id", "item_id"]).reset_index(drop=True),
                                      check_dtype=False)
        rec = pd.read_json(s.artifacts_dir / "runs" / "interactions_daily" / f"{d}.json", typ="series")
        assert rec["rows_in"] == rec["rows_out"] + rec["rows_quarantined"] and rec["rows_quarantined"] == 0
    assert sum(len(pd.read_parquet(s.tables_dir / "interactions_daily" / f"{d}.parquet")) for d in DAYS) > 100


def test_daily_feature_files_equal_the_full_runs(daily):
    """A day's file is the same whichever path wrote it: the sequences and the counters byte-for-byte, the PPM
    cache within float noise of other Spark batch boundaries."""
    s, orig, _ = daily
    n_rows = 0
    for d in DAYS:
        new, old = (p / "behavior_sequences.parquet" / f"{d}.parquet" for p in (s.features_dir, orig.features_dir))
        assert old.exists() == new.exists(), d
        if old.exists():
            assert new.read_bytes() == old.read_bytes(), d
            n_rows += pq.read_metadata(new).num_rows
        for table in ("user_stats", "item_stats"):  # counters: byte for byte too
            cnew, cold = (p / f"{table}.parquet" / f"{d}.parquet" for p in (s.features_dir, orig.features_dir))
            assert cold.exists() == cnew.exists() and (not cold.exists() or cnew.read_bytes() == cold.read_bytes()), \
                (table, d)
        cn, co = (pd.read_parquet(p / "ppm_user_cache.parquet" / f"{d}.parquet") for p in (s.features_dir, orig.features_dir))
        assert cn[["user_id", "event_timestamp", "ppm_seq_len"]].equals(co[["user_id", "event_timestamp", "ppm_seq_len"]])
        if len(cn):
            np.testing.assert_allclose(np.stack(cn["ppm_user_seq"]), np.stack(co["ppm_user_seq"]), atol=1e-5)
    assert n_rows > 20  # the days hold real sequence rows


def _online_recent(s, user_id):
    from ppm_platform.feature_store import get_store

    out = get_store(s).get_online_features(features=["user_recent_items:hist_item_ids"],
                                           entity_rows=[{"user_id": int(user_id)}]).to_dict()
    return out["hist_item_ids"][0]


def test_online_store_moves_forward_with_each_days_rows(daily):
    import dagster as dg

    from dagster_project.defs.daily.assets import build_assets
    from dagster_project.definitions import daily_partitions
    from dagster_project.resources import PPMSettingsResource, SparkResource
    from ppm_platform import pipeline
    from ppm_platform.feature_store import get_store

    s, _, env = daily
    # the daily assets over the partitions of this run's settings, as the code location builds them
    # (unbound: the location's own resources would clash with this test's)
    by_key = {a.key.path[-1]: a for a in build_assets(daily_partitions(s))}
    interactions_daily, user_features_daily, online_user_features = (
        by_key[k] for k in ("interactions_daily", "user_features_daily", "online_user_features"))
    end = datetime.combine(LAST + timedelta(days=1), datetime.min.time(), tzinfo=timezone.utc)
    store = get_store(s)
    for view in pipeline.DAILY_VIEWS:
        assert store.get_feature_view(view).most_recent_end_time.replace(tzinfo=timezone.utc) == end
    # the online row of the most active user of the range = the last offline row as of the range's end
    seq = pd.concat([pd.read_parquet(s.features_dir / "behavior_sequences.parquet" / f"{d}.parquet") for d in DAYS])
    user = int(seq["user_id"].value_counts().index[0])
    assert list(_online_recent(s, user)) == list(seq[seq["user_id"] == user].iloc[-1]["hist_item_ids"])
    never = int(pd.read_parquet(s.tables_dir / "users.parquet")["user_id"].max()) + 1
    assert _online_recent(s, never) is None

    # the next day, in process: that day's rows, from its start to its end (the previous end)
    settings_res = PPMSettingsResource(artifacts_dir=str(s.artifacts_dir), data_dir=str(s.data_dir))
    resources = {"ppm": settings_res, "spark": SparkResource()}
    nxt = LAST + timedelta(days=1)
    mp = pytest.MonkeyPatch()
    mp.setenv("PPM_MAX_ITEMS", env["PPM_MAX_ITEMS"])
    mp.setenv("PPM_CONFIG", env["PPM_CONFIG"])
    try:
        res = dg.materialize([interactions_daily, user_features_daily, online_user_features], resources=resources,
                             partition_key=str(nxt))
        assert res.success
        md = res.asset_materializations_for_node("online_user_features")[0].metadata
        views = md["views"].value
        assert {v["action"] for v in views.values()} == {"materialize"}
        assert {(v["from"], v["previous_end"]) for v in views.values()} == {(end.isoformat(), end.isoformat())}
        # an older day again: its rows are written as of the views' end, so nothing moves backwards
        res = dg.materialize([user_features_daily, online_user_features], resources=resources, partition_key=str(FIRST))
        views = res.asset_materializations_for_node("online_user_features")[0].metadata["views"].value
        first = datetime.combine(FIRST, datetime.min.time(), tzinfo=timezone.utc)
        assert {(v["from"], v["to"]) for v in views.values()} == {(first.isoformat(), (end + timedelta(days=1)).isoformat())}
    finally:
        mp.undo()
    new_end = end + timedelta(days=1)
    for view in pipeline.DAILY_VIEWS:
        assert get_store(s).get_feature_view(view).most_recent_end_time.replace(tzinfo=timezone.utc) == new_end
    # the user counters online are those of the offline table as of the new end (the daily path moved them)
    stats = pd.read_parquet(s.features_dir / "user_stats.parquet")
    row = stats[(stats["user_id"] == user) & (stats["event_timestamp"] <= new_end)].iloc[-1]
    online = get_store(s).get_online_features(features=["user_stats:user_impressions", "user_stats:user_clicks_7d"],
                                              entity_rows=[{"user_id": user}]).to_dict()
    assert (online["user_impressions"][0], online["user_clicks_7d"][0]) == (row["user_impressions"], row["user_clicks_7d"])


def test_daily_features_refuse_a_gap_in_the_interaction_partitions(daily):
    from ppm_platform import pipeline

    s, _, _ = daily
    gap = s.tables_dir / "interactions_daily" / f"{DAYS[1]}.parquet"
    held = gap.read_bytes()
    gap.unlink()
    try:
        with pytest.raises(ValueError, match=f"not materialized \\({DAYS[1]}\\).*backfill interactions_daily from {DAYS[1]}"):
            pipeline.user_features_daily(s, None, DAYS[2])
    finally:
        gap.write_bytes(held)
