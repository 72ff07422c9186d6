"""Spark job: point-in-time counter tables ``item_stats`` and ``user_stats`` (DESIGN.md §3-4).

For an entity (item or user) and a time ``τ`` the counters are the entity's impressions, clicks and orders
strictly before ``τ``, all-time and within each recent event-time window ``W`` (``0 < τ - t <= W`` for an event
at ``t``), plus smoothed click / order rates (``(clicks + m p) / (impressions + m)``, the prior of
:class:`CounterPriors`). They are the features every production ranker has (the paper's Base is JD's).

Rows are the change points of those values, so a point-in-time join (``feature_ts <= entity_ts``) reads the
exact value at any time:

* an event at ``t`` enters every counter at ``t + AS_OF_DELAY`` (1 µs): the impression at ``t`` itself, and
  every other impression of the same second / microsecond, never sees it (the leakage rule of DESIGN.md §4);
* it leaves window ``W`` at ``t + W + AS_OF_DELAY``, so a windowed count decays even when the entity has no
  later event (rows may lie after the last event: a live system's online store takes them when Feast
  materializes past their time).

Implementation (everything in Spark, no collect): per (entity, event time) the impression / click / order
sums, turned into signed deltas at the enter and leave times, summed per (entity, change time), then a
running sum per entity ordered by change time. :func:`counters_reference` is the plain pandas definition the
tests compare against. Both tables are day-partitioned folders like the other time-varying feature tables
(``<table>.parquet/<YYYY-MM-DD>.parquet`` by UTC day of the change time), so the daily partitions replace one day.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from ppm_platform.data import catalog
from ppm_platform.config import Settings
from ppm_platform.data.schemas import (
    AS_OF_DELAY,
    COUNT_FIELDS,
    COUNTER_ENTITIES,
    RATE_FIELDS,
    counter_schema,
    counter_suffixes,
)
from ppm_platform.data.split import settings_cutoffs

log = logging.getLogger("ppm_platform.features")

_DELAY_US = int(AS_OF_DELAY / pd.Timedelta(microseconds=1))
_DAY_US = 86_400 * 1_000_000


@dataclass(frozen=True)
class CounterPriors:
    """Beta prior of the smoothed rates: ``rate = (count + strength * mean) / (impressions + strength)``.

    Attributes:
        click_rate, order_rate: prior means (probabilities).
        strength: prior weight ``m`` in impressions (> 0).
        source: where the means came from (settings, or the train window's rates and its end).
    """

    click_rate: float
    order_rate: float
    strength: float
    source: str = "settings"

    def __post_init__(self) -> None:
        if not (0 <= self.click_rate <= 1 and 0 <= self.order_rate <= 1) or not self.strength > 0:
            raise ValueError(f"counter priors need rates in [0, 1] and strength > 0, got {self}")

    def rate(self, counts: np.ndarray, impressions: np.ndarray, task: str) -> np.ndarray:
        """Smoothed rate (float32, same shape) of ``counts`` clicks / orders over ``impressions`` for ``task``
        (``"click"`` or ``"order"``); 0 impressions give the prior mean."""
        p = self.click_rate if task == "click" else self.order_rate
        return ((np.asarray(counts, np.float64) + self.strength * p)
                / (np.asarray(impressions, np.float64) + self.strength)).astype(np.float32)


def priors_path(settings: Settings) -> Path:
    """Where the full counters stage keeps the priors it used (read by the daily partitions)."""
    return catalog.path(settings, "counter_priors")


def train_window_priors(settings: Settings, interactions_path: Path) -> CounterPriors:
    """:class:`CounterPriors` of ``settings.counters``; a mean left None there is the click / order rate of
    the train window (``split_labels == "train"``) of the interactions at ``interactions_path``.

    Raises:
        ValueError: the train window is empty (the split fails first on fewer than 3 events).
    """
    c = settings.counters
    if c.prior_click_rate is not None and c.prior_order_rate is not None:
        return CounterPriors(c.prior_click_rate, c.prior_order_rate, c.prior_strength, "settings")
    t = pq.read_table(interactions_path, columns=["event_timestamp", "click", "order"]).to_pandas()
    valid_start, _ = settings_cutoffs(t["event_timestamp"], settings)
    train = t[t["event_timestamp"] < valid_start]
    if train.empty:
        raise ValueError(f"{interactions_path}: no event before the validation cut {valid_start}: no train-window prior")
    click = c.prior_click_rate if c.prior_click_rate is not None else float(train["click"].mean())
    order = c.prior_order_rate if c.prior_order_rate is not None else float(train["order"].mean())
    return CounterPriors(click, order, c.prior_strength,
                         f"train window: {len(train)} impressions before {valid_start.isoformat()}")


def save_priors(settings: Settings, priors: CounterPriors) -> Path:
    from ppm_platform.io import write_json_atomic

    path = priors_path(settings)
    write_json_atomic(asdict(priors), path)
    return path


def load_priors(settings: Settings) -> CounterPriors:
    """The priors the full counters stage wrote (:func:`priors_path`).

    Raises:
        FileNotFoundError: the full ``item_stats`` / ``user_stats`` assets never ran (the daily partitions
            need their prior).
    """
    from ppm_platform.io import read_json

    path = priors_path(settings)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: materialize the full item_stats / user_stats assets once "
                                "before their daily partitions (the prior of the smoothed rates comes from there)")
    return CounterPriors(**read_json(path))


# ---- the definition in pandas (tests, small data) ----------------------------------------------------------
def _micros(ts) -> np.ndarray:
    ts = pd.to_datetime(ts, utc=True)
    return ((ts - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(microseconds=1)).to_numpy(dtype=np.int64)


def counters_reference(interactions: pd.DataFrame, entity: str, windows_days: tuple[int, ...],
                       priors: CounterPriors) -> pd.DataFrame:
    """Plain pandas definition of the ``<entity>_stats`` table (tests and small data): one row per change
    time of each entity (see the module docstring), sorted by (key, event_timestamp), schema
    :func:`~ppm_platform.data.schemas.counter_schema`.

    Raises:
        KeyError: ``entity`` is not ``"item"`` or ``"user"``.
    """
    key, prefix = COUNTER_ENTITIES[entity]
    schema = counter_schema(entity, windows_days)
    rows: list[list] = []
    t_all = _micros(interactions["event_timestamp"])
    for k, idx in interactions.groupby(key, sort=True).indices.items():
        t = t_all[idx]
        c = interactions["click"].to_numpy()[idx].astype(np.int64)
        o = interactions["order"].to_numpy()[idx].astype(np.int64)
        changes = {int(x) + _DELAY_US for x in t}
        for w in windows_days:
            changes |= {int(x) + int(w) * _DAY_US + _DELAY_US for x in t}
        for tau in sorted(changes):
            row = [int(k), tau]
            counts = []
            for w in (None, *windows_days):
                m = (t < tau) if w is None else ((t < tau) & (tau - t <= int(w) * _DAY_US))
                counts.append((int(m.sum()), int(c[m].sum()), int(o[m].sum())))
            row += [v for triple in counts for v in triple]
            row += [r for n, cc, oo in counts for r in (priors.rate(cc, n, "click").item(),
                                                         priors.rate(oo, n, "order").item())]
            rows.append(row)
    names = [f.name for f in schema]
    df = pd.DataFrame(rows, columns=names) if rows else pd.DataFrame({n: [] for n in names})
    df["event_timestamp"] = pd.to_datetime(df["event_timestamp"].astype(np.int64), unit="us", utc=True)
    from ppm_platform.io import to_arrow

    return to_arrow(df, schema).to_pandas().sort_values([key, "event_timestamp"], kind="stable").reset_index(drop=True)


# ---- Spark ---------------------------------------------------------------------------------------------------
def counters_frame(interactions_df, entity: str, windows_days: tuple[int, ...], priors: CounterPriors):
    """The Spark DataFrame of ``<entity>_stats`` rows for a Spark DataFrame of canonical interactions."""
    from functools import reduce

    from pyspark.sql import Window
    from pyspark.sql import functions as F

    key, prefix = COUNTER_ENTITIES[entity]
    suffixes = counter_suffixes(windows_days)
    short = {"impressions": "n", "clicks": "c", "orders": "o"}
    delta_cols = [f"{short[f]}{s}" for s in suffixes for f in COUNT_FIELDS]
    per_ts = (interactions_df
              .select(F.col(key).cast("bigint").alias(key), F.unix_micros(F.col("event_timestamp")).alias("ts"),
                      F.col("click").cast("bigint").alias("click"), F.col("order").cast("bigint").alias("order"))
              .groupBy(key, "ts")
              .agg(F.count(F.lit(1)).alias("n"), F.sum("click").alias("c"), F.sum("order").alias("o")))
    # an event enters every counter 1 µs after it, and leaves window W at W + 1 µs after it
    enter = per_ts.select(key, (F.col("ts") + _DELAY_US).alias("tau"),
                          *(F.col(d[0]).alias(d) for d in delta_cols))
    leaves = [per_ts.select(key, (F.col("ts") + int(w) * _DAY_US + _DELAY_US).alias("tau"),
                            *((-F.col(d[0]) if d.endswith(f"_{int(w)}d") else F.lit(0).cast("bigint")).alias(d)
                              for d in delta_cols))
              for w in windows_days]
    deltas = reduce(lambda a, b: a.unionByName(b), leaves, enter)
    changes = deltas.groupBy(key, "tau").agg(*(F.sum(d).alias(d) for d in delta_cols))
    running = Window.partitionBy(key).orderBy("tau").rowsBetween(Window.unboundedPreceding, Window.currentRow)
    cum = changes.select(key, "tau", *(F.sum(d).over(running).cast("bigint").alias(d) for d in delta_cols))

    def rate(count: str, n: str, p: float):
        m = float(priors.strength)
        return ((F.col(count).cast("double") + F.lit(m * p)) / (F.col(n).cast("double") + F.lit(m))).cast("float")

    cols = [F.col(key), F.expr("timestamp_micros(tau)").alias("event_timestamp")]
    cols += [F.col(f"{short[f]}{s}").alias(f"{prefix}_{f}{s}") for s in suffixes for f in COUNT_FIELDS]
    for s in suffixes:
        cols += [rate(f"c{s}", f"n{s}", priors.click_rate).alias(f"{prefix}_{RATE_FIELDS[0]}{s}"),
                 rate(f"o{s}", f"n{s}", priors.order_rate).alias(f"{prefix}_{RATE_FIELDS[1]}{s}")]
    return cum.select(*cols)


def compute_counters(spark, settings: Settings, interactions_path: Path, day: date | None = None) -> dict:
    """Build ``item_stats`` and ``user_stats`` from canonical interactions parquet (a file or a folder of day
    files) into the day-partitioned folders ``features_dir/<table>.parquet``.

    Args:
        day: None = full rebuild (every day; the priors are resolved by :func:`train_window_priors` and saved
            to :func:`priors_path`); a day = only the rows whose change time falls on that UTC day, from the
            interactions before its end, replacing that day's file (priors from :func:`load_priors`). A day's
            file is the same either way.

    Returns:
        ``{"item_stats": {"rows", "entities"}, "user_stats": {...}, "priors": {...}, "windows_days", "seconds"}``
        (+ ``"day"``).

    Raises:
        FileNotFoundError: a daily run before any full run (no saved priors).
    """
    from pyspark.sql import functions as F

    from ppm_platform.features.behavior_sequences import day_window
    from ppm_platform.features.spark import write_day_folders

    t0 = time.perf_counter()
    windows = tuple(int(w) for w in settings.counters.windows_days)
    if day is None:
        priors = train_window_priors(settings, interactions_path)
        save_priors(settings, priors)
    else:
        priors = load_priors(settings)
    interactions = spark.read.parquet(str(interactions_path))
    if day is not None:
        start, end = day_window(day)
        interactions = interactions.where(F.col("event_timestamp") < F.lit(end))
    out: dict = {"priors": asdict(priors), "windows_days": list(windows)}
    for entity, table in catalog.COUNTER_TABLES.items():
        key = COUNTER_ENTITIES[entity][0]
        frame = counters_frame(interactions, entity, windows, priors)
        if day is not None:
            frame = frame.where((F.col("event_timestamp") >= F.lit(start)) & (F.col("event_timestamp") < F.lit(end)))
        path = catalog.path(settings, table)
        n = write_day_folders(frame, path, catalog.schema(settings, table), [key, "event_timestamp"], day=day)
        keys = pq.read_table(path / f"{day.isoformat()}.parquet" if day else path, columns=[key]).column(0)
        out[table] = {"rows": n, "entities": len(keys.unique())}
    out["seconds"] = round(time.perf_counter() - t0, 3)
    if day is not None:
        out["day"] = day.isoformat()
    log.info("counters: %s", out)
    return out
