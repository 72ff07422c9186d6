"""Canonical table schemas (DESIGN.md §2) and the feature-table schemas behind the Feast feature views.

These are the contracts between pipeline stages. Every parquet the platform writes conforms to one of
them; timestamps are ``timestamp[us, tz=UTC]`` because Spark 4 refuses nanosecond parquet timestamps.

Feature tables (one parquet each under ``Settings.features_dir``, one Feast feature view each; the user-level,
time-varying ``behavior_sequences`` and ``ppm_user_cache`` are day-partitioned folders ``<table>.parquet/<YYYY-MM-DD>.parquet``
that read as one table, so the daily partitions can replace one day: ``ppm_platform.io.write_day_partitioned``):

================== ========= ==============================================================================
table              entity    columns (besides the join key and ``event_timestamp``)
================== ========= ==============================================================================
item_multimodal    item      text_emb f32[384], image_emb f32[1280] (zeros if no image), has_image i64,
                             encoder_version str
item_profile       item      categories list<str>, release_year i64
user_profile       user      age i64, gender str, occupation str
behavior_sequences user      hist_item_ids i64[<=L] (most recent first), hist_age_s f32[<=L] (seconds
                             between each behaviour and the row's as-of time), hist_len i64
ppm_item_cache     item      ppm_item_vec f32[d], ppm_item_version str
ppm_user_cache     user      ppm_user_seq f32[L*d] (row-major L x d, zero padded), ppm_seq_len i64,
                             ppm_user_version str
item_stats         item      item_{impressions,clicks,orders} i64, item_{click,order}_rate f32, all-time and
                             per recent window (suffix ``_<W>d``): :func:`counter_schema`
user_stats         user      the same with the ``user_`` prefix
================== ========= ==============================================================================

Timestamps of feature rows (the leakage rule, DESIGN.md §4): a user-level row produced by the events of a
user at time ``t`` is stamped ``t + 1 µs`` (:data:`AS_OF_DELAY`), so a point-in-time join for an impression
at ``t`` (Feast joins ``feature_ts <= entity_ts``) never sees it, while any later impression does. Item-level
rows are stamped with the item's ``created_at``.
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")

#: Offset between the producing event and a user-level feature row's as-of timestamp.
AS_OF_DELAY = dt.timedelta(microseconds=1)

ITEMS = pa.schema([
    ("item_id", pa.int64()),
    ("title", pa.string()),
    ("image_uri", pa.string()),
    ("categories", pa.list_(pa.string())),
    ("created_at", TS),
])

USERS = pa.schema([
    ("user_id", pa.int64()),
    ("age", pa.int64()),
    ("gender", pa.string()),
    ("occupation", pa.string()),
])

INTERACTIONS = pa.schema([
    ("user_id", pa.int64()),
    ("item_id", pa.int64()),
    ("event_timestamp", TS),
    ("click", pa.int8()),
    ("order", pa.int8()),
])

QUERIES = pa.schema([
    ("query", pa.string()),
    ("item_id", pa.int64()),
    ("event_timestamp", TS),
])

CANONICAL = {"items": ITEMS, "users": USERS, "interactions": INTERACTIONS, "queries": QUERIES}

# ---- feature tables -------------------------------------------------------------------------------
ITEM_MULTIMODAL = pa.schema([
    ("item_id", pa.int64()),
    ("event_timestamp", TS),
    ("text_emb", pa.list_(pa.float32())),
    ("image_emb", pa.list_(pa.float32())),
    ("has_image", pa.int64()),
    ("encoder_version", pa.string()),
])

ITEM_PROFILE = pa.schema([
    ("item_id", pa.int64()),
    ("event_timestamp", TS),
    ("categories", pa.list_(pa.string())),
    ("release_year", pa.int64()),
])

USER_PROFILE = pa.schema([
    ("user_id", pa.int64()),
    ("event_timestamp", TS),
    ("age", pa.int64()),
    ("gender", pa.string()),
    ("occupation", pa.string()),
])

BEHAVIOR_SEQUENCES = pa.schema([
    ("user_id", pa.int64()),
    ("event_timestamp", TS),
    ("hist_item_ids", pa.list_(pa.int64())),
    ("hist_age_s", pa.list_(pa.float32())),
    ("hist_len", pa.int64()),
])

PPM_ITEM_CACHE = pa.schema([
    ("item_id", pa.int64()),
    ("event_timestamp", TS),
    ("ppm_item_vec", pa.list_(pa.float32())),
    ("ppm_item_version", pa.string()),
])

PPM_USER_CACHE = pa.schema([
    ("user_id", pa.int64()),
    ("event_timestamp", TS),
    ("ppm_user_seq", pa.list_(pa.float32())),
    ("ppm_seq_len", pa.int64()),
    ("ppm_user_version", pa.string()),
])

#: counter tables: entity name -> (join key, column prefix)
COUNTER_ENTITIES = {"item": ("item_id", "item"), "user": ("user_id", "user")}
#: the counts of a counter table, in column order (each also per window), then the smoothed rates
COUNT_FIELDS = ("impressions", "clicks", "orders")
RATE_FIELDS = ("click_rate", "order_rate")


def counter_suffixes(windows_days: tuple[int, ...]) -> list[str]:
    """Column suffixes of a counter table: ``""`` (all-time) then ``"_<W>d"`` per window, in order."""
    return ["", *(f"_{int(w)}d" for w in windows_days)]


def counter_count_columns(prefix: str, windows_days: tuple[int, ...]) -> list[str]:
    """The int64 count columns of a counter table (``<prefix>_impressions``, ..., ``<prefix>_orders_<W>d``)."""
    return [f"{prefix}_{f}{s}" for s in counter_suffixes(windows_days) for f in COUNT_FIELDS]


def counter_rate_columns(prefix: str, windows_days: tuple[int, ...]) -> list[str]:
    """The float32 smoothed-rate columns of a counter table (``<prefix>_click_rate``, ...)."""
    return [f"{prefix}_{f}{s}" for s in counter_suffixes(windows_days) for f in RATE_FIELDS]


def counter_schema(entity: str, windows_days: tuple[int, ...]) -> pa.Schema:
    """Schema of the ``<entity>_stats`` counter table (``entity`` in :data:`COUNTER_ENTITIES`).

    Raises:
        KeyError: an unknown entity.
    """
    key, prefix = COUNTER_ENTITIES[entity]
    return pa.schema([(key, pa.int64()), ("event_timestamp", TS),
                      *((c, pa.int64()) for c in counter_count_columns(prefix, windows_days)),
                      *((c, pa.float32()) for c in counter_rate_columns(prefix, windows_days))])


def semantic_id_columns(levels: int) -> list[str]:
    """The code columns of ``item_semantic_id``: ``sid_1`` .. ``sid_<levels>`` (level 1 = the coarsest)."""
    return [f"sid_{i + 1}" for i in range(int(levels))]


def semantic_id_schema(levels: int) -> pa.Schema:
    """Schema of the ``item_semantic_id`` table (:mod:`ppm_platform.features.semantic_ids`): one int64 code per
    residual level and the ``sid_version`` of the codebook that assigned them."""
    return pa.schema([("item_id", pa.int64()), ("event_timestamp", TS),
                      *((c, pa.int64()) for c in semantic_id_columns(levels)), ("sid_version", pa.string())])


#: MovieLens genres (u.genre), the entity vocabulary of ``items.categories`` on the demo data.
MOVIELENS_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
    "War", "Western",
)
