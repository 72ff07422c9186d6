"""Counter tables ``item_stats`` / ``user_stats``: Spark equals the pandas definition, values
checked by hand (windows, same-second and sub-second events, decay without a later event), the train-window
prior, and the daily partition equals the full run's day."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from ppm_platform.config import Settings
from ppm_platform.data.schemas import INTERACTIONS, counter_schema
from ppm_platform.features.counters import (
    CounterPriors,
    compute_counters,
    counters_reference,
    load_priors,
    train_window_priors,
)
from ppm_platform.io import write_parquet_atomic

US = pd.Timedelta(microseconds=1)
T = pd.Timestamp("2024-01-10 12:00:00", tz="UTC")
PRIORS = CounterPriors(0.5, 0.2, 10.0)


def _interactions() -> pd.DataFrame:
    rows = [  # user, item, time, click, order
        (1, 10, T - pd.Timedelta(days=40), 1, 1),
        (1, 11, T - pd.Timedelta(days=5), 0, 0),
        (1, 12, T, 1, 0),                                   # same second as the next one
        (1, 13, T, 0, 0),
        (2, 10, T + pd.Timedelta(milliseconds=250), 1, 0),  # sub-second apart
        (2, 11, T + pd.Timedelta(milliseconds=250) + 500 * US, 1, 1),
        (3, 10, T + pd.Timedelta(days=3), 0, 0),
    ]
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "event_timestamp", "click", "order"])
    return df.astype({"click": "int8", "order": "int8", "event_timestamp": "datetime64[us, UTC]"})


def _at(table: pd.DataFrame, key: str, k: int, ts: pd.Timestamp) -> pd.Series | None:
    """The row a point-in-time join (feature_ts <= ts) picks for entity ``k``."""
    rows = table[(table[key] == k) & (table["event_timestamp"] <= ts)]
    return None if rows.empty else rows.iloc[-1]


def test_reference_values_by_hand():
    inter = _interactions()
    items = counters_reference(inter, "item", (7, 30), PRIORS)
    users = counters_reference(inter, "user", (7, 30), PRIORS)
    assert list(items.columns) == counter_schema("item", (7, 30)).names
    # user 1 at T: sees the two earlier events (40 d and 5 d ago), never the two events at T itself
    u = _at(users, "user_id", 1, T)
    assert (u.user_impressions, u.user_clicks, u.user_orders) == (2, 1, 1)
    assert (u.user_impressions_7d, u.user_impressions_30d) == (1, 1)   # the 40-day-old event is out of both
    assert u.user_click_rate == pytest.approx((1 + 10 * 0.5) / (2 + 10))
    assert u.user_click_rate_7d == pytest.approx((0 + 5) / (1 + 10))
    # 1 µs later both events of T are in
    u = _at(users, "user_id", 1, T + US)
    assert (u.user_impressions, u.user_clicks, u.user_impressions_7d) == (4, 2, 3)
    # a windowed count decays with no later event: 7 days + 1 µs after T the 7-day window is empty
    assert _at(users, "user_id", 1, T + pd.Timedelta(days=7)).user_impressions_7d == 2
    u = _at(users, "user_id", 1, T + pd.Timedelta(days=7) + US)
    assert (u.user_impressions_7d, u.user_impressions_30d, u.user_impressions) == (0, 3, 4)
    assert u.user_click_rate_7d == pytest.approx(0.5)   # no impression in the window: the prior
    # sub-second: user 2's second click (500 µs later) does not see itself, sees the first
    s1 = T + pd.Timedelta(milliseconds=250) + 500 * US
    assert _at(users, "user_id", 2, s1).user_impressions == 1
    assert _at(users, "user_id", 2, T + pd.Timedelta(milliseconds=250)) is None
    # item 10: clicked at T-40d, T+250ms, not at T+3d
    i = _at(items, "item_id", 10, T + pd.Timedelta(days=3))
    assert (i.item_impressions, i.item_clicks, i.item_orders, i.item_impressions_30d) == (2, 2, 1, 1)


@pytest.mark.parametrize("windows", [(7, 30), ()])
def test_spark_equals_reference_and_daily_equals_full(spark, tmp_path, windows):
    rng = np.random.default_rng(0)
    n = 400
    ts = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(np.sort(rng.integers(0, 60 * 86400, n)), unit="s")
    ts = ts + pd.to_timedelta(rng.integers(0, 3, n) * 250, unit="ms")  # some same-second / sub-second ties
    click = rng.integers(0, 2, n)
    inter = pd.DataFrame({"user_id": rng.integers(1, 12, n), "item_id": rng.integers(1, 20, n),
                          "event_timestamp": ts, "click": click, "order": click * rng.integers(0, 2, n)})
    settings = Settings.from_env(env={}, artifacts_dir=tmp_path / "a",
                                 counters={"windows_days": windows, "prior_click_rate": 0.5,
                                           "prior_order_rate": 0.2}).ensure_dirs()
    src = tmp_path / "interactions.parquet"
    write_parquet_atomic(inter, src, INTERACTIONS)
    res = compute_counters(spark, settings, src)
    assert load_priors(settings).click_rate == 0.5
    for entity, key in (("item", "item_id"), ("user", "user_id")):
        got = pd.read_parquet(settings.features_dir / f"{entity}_stats.parquet").sort_values(
            [key, "event_timestamp"], kind="stable").reset_index(drop=True)
        exp = counters_reference(inter, entity, windows, PRIORS)
        pd.testing.assert_frame_equal(got, exp, check_dtype=True)
        assert res[f"{entity}_stats"]["rows"] == len(exp)
    # one daily partition recomputed from the interactions up to its end equals the full run's day file
    day = date(2024, 1, 20)
    full = pq.read_table(settings.features_dir / "user_stats.parquet" / f"{day}.parquet")
    compute_counters(spark, settings, src, day=day)
    assert pq.read_table(settings.features_dir / "user_stats.parquet" / f"{day}.parquet").equals(full)


def test_train_window_prior(tmp_path):
    inter = _interactions()
    src = tmp_path / "i.parquet"
    write_parquet_atomic(inter, src, INTERACTIONS)
    # 7 events: the first 80 % by time (cut at the 6th timestamp) are train
    settings = Settings.from_env(env={}, artifacts_dir=tmp_path / "a")
    p = train_window_priors(settings, src)
    train = inter.sort_values("event_timestamp").iloc[:5]
    assert p.click_rate == pytest.approx(train["click"].mean()) and p.order_rate == pytest.approx(train["order"].mean())
    assert p.strength == 10.0 and p.source.startswith("train window: 5 impressions")
    with pytest.raises(FileNotFoundError, match="full item_stats / user_stats"):
        load_priors(settings)
