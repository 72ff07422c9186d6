"""Spark job: per-user behaviour sequences ``behavior_sequences`` (DESIGN.md §3-4).

One row per (user, distinct timestamp ``t`` at which the user clicked at least one item):

* ``hist_item_ids``: the last ``L = settings.sequence.max_len`` clicked item ids with click time ``<= t``, most
  recent first; clicks at the same timestamp are ordered by item_id descending (deterministic);
* ``hist_age_s``: ``(as-of time - click time)`` in seconds (float32), one per item;
* ``hist_len``: the list length (``<= L``);
* ``event_timestamp`` = ``t + AS_OF_DELAY`` (1 µs): the row's as-of time. A point-in-time join for an impression
  at ``t`` (``feature_ts <= entity_ts``) gets the previous row, so it never sees the clicks made at ``t``; every
  later impression does (the leakage rule of DESIGN.md §4).

Implementation: clicks are grouped per (user, timestamp) into an item_id-descending array; a window over each
user's timestamps (``rowsBetween(-(L-1), 0)``) collects the last ``L`` groups, which hold at least the last ``L``
clicks; they are flattened most-recent-first and sliced to ``L``. Everything stays in Spark (no collect).
:func:`behavior_sequences_reference` is the plain pandas definition the tests compare against.
"""

from __future__ import annotations

import logging
import time
from datetime import date, datetime, timedelta, timezone
from datetime import time as dt_time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ppm_platform.config import Settings
from ppm_platform.data.schemas import AS_OF_DELAY, BEHAVIOR_SEQUENCES

log = logging.getLogger("ppm_platform.features")

_DELAY_US = int(AS_OF_DELAY / pd.Timedelta(microseconds=1))
_EPOCH = pd.Timestamp("1970-01-01", tz="UTC")


def _to_micros(ts: pd.Series) -> np.ndarray:
    ts = pd.to_datetime(ts, utc=True)
    return ((ts - _EPOCH) // pd.Timedelta(microseconds=1)).to_numpy(dtype=np.int64)


def behavior_sequences_reference(interactions: pd.DataFrame, max_len: int) -> pd.DataFrame:
    """Plain pandas definition of the ``behavior_sequences`` table (for tests and small data).

    Args:
        interactions: canonical interactions (user_id, item_id, event_timestamp, click, ...).
        max_len: L, the longest history kept.

    Returns:
        BEHAVIOR_SEQUENCES rows sorted by (user_id, event_timestamp); ``event_timestamp`` is
        ``datetime64[us, UTC]``, list columns hold numpy arrays (int64 / float32).
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    clicks = interactions.loc[interactions["click"] == 1, ["user_id", "item_id"]].copy()
    clicks["ts"] = _to_micros(interactions.loc[interactions["click"] == 1, "event_timestamp"])
    clicks = clicks.astype({"user_id": np.int64, "item_id": np.int64})
    rows: dict[str, list] = {"user_id": [], "ts": [], "hist_item_ids": [], "hist_age_s": [], "hist_len": []}
    for user, g in clicks.sort_values(["user_id", "ts", "item_id"], kind="stable").groupby("user_id", sort=True):
        ts, items = g["ts"].to_numpy(), g["item_id"].to_numpy()
        for t in np.unique(ts):
            k = int(np.searchsorted(ts, t, side="right"))  # clicks with time <= t
            lo = max(k - max_len, 0)
            h_items, h_ts = items[lo:k][::-1], ts[lo:k][::-1]  # most recent first, ties item_id descending
            as_of = t + _DELAY_US
            rows["user_id"].append(user)
            rows["ts"].append(as_of)
            rows["hist_item_ids"].append(h_items.astype(np.int64))
            rows["hist_age_s"].append(((as_of - h_ts).astype(np.float64) / 1e6).astype(np.float32))
            rows["hist_len"].append(len(h_items))
    out = pd.DataFrame({
        "user_id": np.asarray(rows["user_id"], dtype=np.int64),
        "event_timestamp": pd.to_datetime(np.asarray(rows["ts"], dtype=np.int64), unit="us", utc=True)
        .astype("datetime64[us, UTC]"),
        "hist_item_ids": rows["hist_item_ids"],
        "hist_age_s": rows["hist_age_s"],
        "hist_len": np.asarray(rows["hist_len"], dtype=np.int64),
    })
    return out.sort_values(["user_id", "event_timestamp"], kind="stable").reset_index(drop=True)


def behavior_sequences_frame(spark, interactions_df, max_len: int):
    """The Spark DataFrame of BEHAVIOR_SEQUENCES rows for a Spark DataFrame of canonical interactions."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    L = int(max_len)
    clicks = (interactions_df.where(F.col("click") == 1)
              .select(F.col("user_id").cast("bigint").alias("user_id"),
                      F.col("item_id").cast("bigint").alias("item_id"),
                      F.unix_micros(F.col("event_timestamp")).alias("ts")))
    groups = clicks.groupBy("user_id", "ts").agg(F.sort_array(F.collect_list("item_id"), asc=False).alias("items"))
    w = Window.partitionBy("user_id").orderBy("ts").rowsBetween(-(L - 1), Window.currentRow)
    win = groups.select("user_id", "ts", F.collect_list(F.struct("ts", "items")).over(w).alias("win"))
    hist = win.select(
        "user_id", "ts",
        F.expr(f"slice(flatten(transform(reverse(win), g -> transform(g.items, "
               f"i -> named_struct('ts', g.ts, 'item_id', i)))), 1, {L})").alias("h"))
    return hist.select(
        "user_id",
        F.expr(f"timestamp_micros(ts + {_DELAY_US})").alias("event_timestamp"),
        F.expr("transform(h, x -> x.item_id)").alias("hist_item_ids"),
        F.expr(f"transform(h, x -> cast(double(ts + {_DELAY_US} - x.ts) / 1000000D as float))").alias("hist_age_s"),
        F.size("h").cast("bigint").alias("hist_len"),
    )


def day_window(day: date) -> tuple[datetime, datetime]:
    """``[start, end)`` of UTC calendar ``day`` as tz-aware datetimes (the bounds of one daily partition)."""
    start = datetime.combine(day, dt_time.min, tzinfo=timezone.utc)
    return start, start + timedelta(days=1)


def compute_behavior_sequences(spark, settings: Settings, interactions_path: Path, out_path: Path,
                               day: date | None = None) -> dict:
    """Build ``behavior_sequences`` from canonical interactions parquet (a file or a folder of day files) into
    the day-partitioned dataset folder ``out_path`` (``<YYYY-MM-DD>.parquet`` per UTC day of the row's as-of
    ``event_timestamp``; schema BEHAVIOR_SEQUENCES, sorted by user_id, event_timestamp within a day).

    Args:
        day: compute only the rows whose as-of time falls on this UTC day (the daily partition) from the
            interactions before its end, and replace just that day's file; None = every day (full rebuild,
            the whole folder is replaced). A day's file is the same either way.

    Returns:
        ``{"rows", "users", "max_len", "seconds", "mean_hist_len"}`` (+ ``"day"``).
    """
    from pyspark.sql import functions as F

    from ppm_platform.features.spark import write_day_folders

    t0 = time.perf_counter()
    L = settings.sequence.max_len
    interactions = spark.read.parquet(str(interactions_path))
    if day is not None:
        start, end = day_window(day)
        interactions = interactions.where(F.col("event_timestamp") < F.lit(end))
    frame = behavior_sequences_frame(spark, interactions, L)
    if day is not None:
        frame = frame.where((F.col("event_timestamp") >= F.lit(start)) & (F.col("event_timestamp") < F.lit(end)))
    n = write_day_folders(frame, out_path, BEHAVIOR_SEQUENCES, ["user_id", "event_timestamp"], day=day)
    # figures from two small columns of what was written (the day's file, or the whole folder)
    table = pq.read_table(Path(out_path) / f"{day.isoformat()}.parquet" if day else out_path,
                          columns=["user_id", "hist_len"])
    stats = {
        "rows": n,
        "users": len(pc.unique(table.column("user_id"))),
        "max_len": L,
        "seconds": round(time.perf_counter() - t0, 3),
        "mean_hist_len": round(float(pc.mean(table.column("hist_len")).as_py() or 0.0), 4),
    }
    if day is not None:
        stats["day"] = day.isoformat()
    log.info("behavior_sequences: %s", stats)
    return stats
