"""behavior_sequences: exact rows on a hand-made case, the leakage rule (as-of join at t never sees the clicks
at t), truncation to L, and the Spark job equal to the pandas reference on random data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from ppm_platform.config import Settings
from ppm_platform.data.schemas import AS_OF_DELAY, BEHAVIOR_SEQUENCES, INTERACTIONS
from ppm_platform.features.behavior_sequences import (
    behavior_sequences_reference,
    compute_behavior_sequences,
)
from ppm_platform.io import write_parquet_atomic

T0 = pd.Timestamp("2024-01-01 00:00:00", tz="UTC")
A, B, C, D, E = 10, 20, 30, 40, 50
US = pd.Timedelta(microseconds=1)


def _interactions(rows: list[tuple[int, int, pd.Timestamp, int]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "event_timestamp", "click"])
    df["order"] = 0
    df["click"] = df["click"].astype(np.int8)
    df["order"] = df["order"].astype(np.int8)
    df["event_timestamp"] = pd.to_datetime(df["event_timestamp"], utc=True).astype("datetime64[us, UTC]")
    return df


def _hand_made() -> tuple[pd.DataFrame, list[pd.Timestamp]]:
    t1, t2, t3, t4 = (T0 + pd.Timedelta(seconds=s) for s in (0, 100, 250, 1000))
    rows = [
        (1, A, t1, 1),
        (1, C, t2, 1),  # B and C clicked in the same second, written in "wrong" order on purpose
        (1, B, t2, 1),
        (1, D, t3, 0),  # an impression without a click: no row, not in any history
        (1, E, t4, 1),
        (2, A, t3, 1),  # another user: own sequence only
    ]
    return _interactions(rows), [t1, t2, t3, t4]


def _settings(tmp_path, max_len: int) -> Settings:
    return Settings.from_env(env={}, artifacts_dir=tmp_path / "artifacts", sequence={"max_len": max_len})


def _run_spark(spark, tmp_path, interactions: pd.DataFrame, max_len: int) -> tuple[pd.DataFrame, dict]:
    src = tmp_path / f"interactions_{max_len}.parquet"
    write_parquet_atomic(interactions, src, schema=INTERACTIONS)
    out = tmp_path / f"behavior_sequences_{max_len}.parquet"
    stats = compute_behavior_sequences(spark, _settings(tmp_path, max_len), src, out)
    table = pq.read_table(out)
    assert table.schema.equals(BEHAVIOR_SEQUENCES), table.schema
    return table.to_pandas(), stats


def _as_lists(df: pd.DataFrame) -> list[tuple]:
    return [(int(r.user_id), r.event_timestamp, list(map(int, r.hist_item_ids)),
             [float(x) for x in r.hist_age_s], int(r.hist_len)) for r in df.itertuples()]


def test_hand_made_case_exact_rows(spark, tmp_path):
    interactions, (t1, t2, t3, t4) = _hand_made()
    got, stats = _run_spark(spark, tmp_path, interactions, max_len=20)
    f32 = lambda s: float(np.float32(s))  # noqa: E731
    d = AS_OF_DELAY / pd.Timedelta(seconds=1)  # 1e-6 s
    expected = [
        (1, t1 + US, [A], [f32(d)], 1),
        (1, t2 + US, [C, B, A], [f32(d), f32(d), f32(100 + d)], 3),
        (1, t4 + US, [E, C, B, A], [f32(d), f32(900 + d), f32(900 + d), f32(1000 + d)], 4),
        (2, t3 + US, [A], [f32(d)], 1),
    ]
    assert _as_lists(got) == expected
    assert stats["rows"] == 4 and stats["users"] == 2 and stats["max_len"] == 20
    assert stats["mean_hist_len"] == pytest.approx((1 + 3 + 4 + 1) / 4)
    # the pandas reference gives exactly the same rows
    assert _as_lists(behavior_sequences_reference(interactions, 20)) == expected


def test_as_of_join_never_sees_the_clicks_of_the_same_timestamp(spark, tmp_path):
    interactions, (t1, t2, t3, t4) = _hand_made()
    seqs, _ = _run_spark(spark, tmp_path, interactions, max_len=20)
    # impressions of user 1 at t2 (the B/C clicks themselves), just after t2, at t3 and at t4
    entity = pd.DataFrame({"user_id": [1, 1, 1, 1, 1],
                           "ts": [t1, t2, t2 + US, t3, t4]}).astype({"ts": "datetime64[us, UTC]"})
    feats = seqs[["user_id", "event_timestamp", "hist_item_ids"]].astype({"event_timestamp": "datetime64[us, UTC]"})
    joined = pd.merge_asof(entity.sort_values("ts"), feats.sort_values("event_timestamp"), left_on="ts",
                           right_on="event_timestamp", by="user_id", allow_exact_matches=True, direction="backward")
    seen = [None if not isinstance(h, np.ndarray) else list(h) for h in joined["hist_item_ids"]]
    assert seen == [
        None,           # impression at t1: the click on A at t1 is not visible yet
        [A],            # impression at t2: only A, not B and C clicked at t2
        [C, B, A],      # 1 µs later the t2 clicks are visible
        [C, B, A],      # at t3 (D was not clicked)
        [C, B, A],      # at t4: E clicked at t4 is not visible
    ]
    # every row's as-of time is strictly after every click it contains
    for r in seqs.itertuples():
        assert all(age > 0 for age in r.hist_age_s)


def test_truncation_to_max_len(spark, tmp_path):
    rows = [(7, 100 + k, T0 + pd.Timedelta(seconds=10 * k), 1) for k in range(6)]
    rows += [(7, 300, T0 + pd.Timedelta(seconds=50), 1)]  # two clicks at the last timestamp (items 105, 300)
    got, stats = _run_spark(spark, tmp_path, _interactions(rows), max_len=3)
    assert stats["max_len"] == 3
    ids = [list(map(int, h)) for h in got["hist_item_ids"]]
    assert ids == [[100], [101, 100], [102, 101, 100], [103, 102, 101], [104, 103, 102], [300, 105, 104]]
    assert got["hist_len"].tolist() == [1, 2, 3, 3, 3, 3]
    last_ages = [float(a) for a in got["hist_age_s"].iloc[-1]]
    assert last_ages == [float(np.float32(1e-6)), float(np.float32(1e-6)), float(np.float32(10 + 1e-6))]


def test_spark_equals_reference_on_random_events(spark, tmp_path):
    rng = np.random.default_rng(0)
    n = 220
    secs = rng.integers(0, 60, size=n) * 30 + rng.choice([0, 0, 0, 1], size=n) * rng.integers(0, 10**6, size=n) * 1e-6
    df = _interactions([
        (int(u), int(i), T0 + pd.Timedelta(seconds=float(s)), int(c))
        for u, i, s, c in zip(rng.integers(1, 9, size=n), rng.integers(1, 25, size=n), secs,
                              rng.random(n) < 0.6)
    ])
    got, stats = _run_spark(spark, tmp_path, df, max_len=5)
    ref = behavior_sequences_reference(df, 5)
    assert len(got) == len(ref) == stats["rows"] > 30
    assert (got["user_id"].to_numpy() == ref["user_id"].to_numpy()).all()
    assert (got["event_timestamp"].astype("datetime64[us, UTC]") == ref["event_timestamp"]).all()
    assert (got["hist_len"].to_numpy() == ref["hist_len"].to_numpy()).all()
    for g, r in zip(got.itertuples(), ref.itertuples()):
        np.testing.assert_array_equal(np.asarray(g.hist_item_ids, dtype=np.int64), r.hist_item_ids)
        np.testing.assert_array_equal(np.asarray(g.hist_age_s, dtype=np.float32), r.hist_age_s)
    assert ref["hist_len"].max() == 5  # truncation is exercised
    assert stats["users"] == ref["user_id"].nunique()
