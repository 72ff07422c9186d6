"""Feast definitions of ppm-platform as a function of the settings: entities, data sources, feature views,
feature services (:func:`build_definitions`).

The names here are contracts (DESIGN.md §4, ``ppm_platform/data/schemas.py``). Nothing is built at import:
the library (``ppm_platform.feature_store.apply_definitions``) loads this file and calls
:func:`build_definitions` with its own :class:`~ppm_platform.config.Settings`, so it can register them for any
artifacts folder (tests use tmp dirs) without reading the environment. The module-level objects the Feast CLI
(``cd feature_repo && feast apply``) discovers are built from the environment's settings in ``repo.py`` only.

Sources: one parquet per feature table at its :mod:`ppm_platform.data.catalog` path under ``Settings.features_dir``
(a file, or for the user-level tables a folder of day files that Feast's file and Spark sources read as one
table); the source class is picked per profile in :func:`make_source` (``local``: ``FileSource`` read by the
DuckDB offline store; ``cluster``: ``SparkSource``, which the Spark offline store requires).

Every feature view has ``ttl=timedelta(0)``: no expiry, the latest row at or before the join time is
always valid (a user's sequence / cache row stays the truth until the user's next event).
"""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

try:  # the Feast CLI imports this file with feature_repo/ on sys.path; find the library next to it
    import ppm_platform  # noqa: F401
except ModuleNotFoundError:  # pragma: no cover - only when the package is not pip-installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
from feast.data_format import ParquetFormat
from feast.types import Array, Float32, Int64, String

from ppm_platform.data import catalog
from ppm_platform.config import Settings
from ppm_platform.data.schemas import counter_count_columns, counter_rate_columns, semantic_id_columns

TIMESTAMP_FIELD = "event_timestamp"
NO_EXPIRY = timedelta(0)

#: feature view -> feature table (:mod:`ppm_platform.data.catalog` name) it reads
VIEW_TABLES = {
    "item_multimodal": "item_multimodal",
    "item_profile": "item_profile",
    "user_profile": "user_profile",
    "user_recent_items": "behavior_sequences",
    "ppm_item_cache": "ppm_item_cache",
    "ppm_user_cache": "ppm_user_cache",
    "item_stats": "item_stats",
    "user_stats": "user_stats",
    "item_semantic_id": "item_semantic_id",
}

#: feature service -> feature views it bundles
SERVICES = {
    "urm_user": ["user_profile", "user_recent_items", "ppm_user_cache", "user_stats"],
    "urm_item": ["item_profile", "ppm_item_cache", "item_stats"],
    "urm_training": ["user_profile", "user_recent_items", "ppm_user_cache", "user_stats", "item_profile",
                     "ppm_item_cache", "item_stats"],
    "idrec_user": ["user_profile", "user_recent_items", "user_stats"],
}


#: feature views that also take rows pushed straight to the online store (new items, serving/new_item.py):
#: their source is a Feast ``PushSource`` named ``<view>_push`` wrapping the same batch source, so
#: offline joins and ``materialize`` read the parquet exactly as before.
PUSH_VIEWS = ("item_multimodal", "item_profile", "ppm_item_cache", "item_semantic_id")
#: views registered only when their table has been written (the ``item_semantic_id`` stage runs before
#: ``feast_definitions`` in the pipeline): a view over a table no stage wrote would fail every join and
#: ``materialize``; the services that list it then carry it, so its codes reach the training set and serving
OPTIONAL_VIEWS = ("item_semantic_id",)
#: feature services that carry an optional view when it is registered
OPTIONAL_VIEW_SERVICES = {"item_semantic_id": ("urm_item", "urm_training")}


def registered_views(settings: Settings) -> list[str]:
    """The feature views :func:`build_definitions` registers for ``settings``: every view of :data:`VIEW_TABLES`
    except the :data:`OPTIONAL_VIEWS` whose table does not exist."""
    return [v for v, t in VIEW_TABLES.items() if v not in OPTIONAL_VIEWS or catalog.path(settings, t).exists()]


def services(settings: Settings) -> dict[str, list[str]]:
    """Feature service -> its views for ``settings``: :data:`SERVICES` plus the registered optional views."""
    have = set(registered_views(settings))
    out = {name: list(members) for name, members in SERVICES.items()}
    for view, names in OPTIONAL_VIEW_SERVICES.items():
        if view in have:
            for name in names:
                out[name].append(view)
    return out


def make_source(settings: Settings, table: str):
    """The batch source of one feature table, per profile (the one place that picks the class)."""
    path = str(catalog.path(settings, table))
    desc = f"feature table {table!r} (ppm_platform.data.catalog)"
    if settings.profile == "cluster":
        from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

        return SparkSource(name=table, path=path, file_format="parquet",
                           timestamp_field=TIMESTAMP_FIELD, description=desc)
    return FileSource(name=table, path=path, file_format=ParquetFormat(),
                      timestamp_field=TIMESTAMP_FIELD, description=desc)


def build_definitions(settings: Settings) -> dict[str, list[Any]]:
    """Build every Feast object for ``settings``.

    Returns:
        ``{"entities": [...], "data_sources": [...], "push_sources": [...], "feature_views": [...],
        "feature_services": [...]}``
    """
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64,
                  description="A user of the catalog (its user id).")
    item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.INT64,
                  description="An item of the catalog (its item id).")
    have = registered_views(settings)
    sources = {t: make_source(settings, t) for t in sorted({VIEW_TABLES[v] for v in have})}
    enc, L, d = settings.encoders, settings.sequence.max_len, settings.ppm.d_model

    push_sources = {v: PushSource(name=f"{v}_push", batch_source=sources[VIEW_TABLES[v]],
                                  description=f"online push of {v} rows (new items)") for v in PUSH_VIEWS if v in have}

    def view(name: str, entity: Entity, fields: list[Field], description: str, tags: dict[str, str]):
        key = Field(name=entity.join_key, dtype=Int64)
        return FeatureView(
            name=name, entities=[entity], ttl=NO_EXPIRY, online=True,
            schema=[key, *fields], source=push_sources.get(name, sources[VIEW_TABLES[name]]),
            description=description,
            tags={"table": VIEW_TABLES[name], **tags},
        )

    views = [
        view("item_multimodal", item, [
            Field(name="text_emb", dtype=Array(Float32)),
            Field(name="image_emb", dtype=Array(Float32)),
            Field(name="has_image", dtype=Int64),
            Field(name="encoder_version", dtype=String),
        ], "Frozen fine-tuned text + image encoder outputs per item (the multi-modal ME feature).",
            {"kind": "encoder-cache", "text_dim": str(enc.text_dim), "image_dim": str(enc.image_dim),
             "version_field": "encoder_version"}),
        view("item_profile", item, [
            Field(name="categories", dtype=Array(String)),
            Field(name="release_year", dtype=Int64),
        ], "Item side features for IDRec.", {"kind": "profile"}),
        view("user_profile", user, [
            Field(name="age", dtype=Int64),
            Field(name="gender", dtype=String),
            Field(name="occupation", dtype=String),
        ], "User side features for IDRec.", {"kind": "profile"}),
        view("user_recent_items", user, [
            Field(name="hist_item_ids", dtype=Array(Int64)),
            Field(name="hist_age_s", dtype=Array(Float32)),
            Field(name="hist_len", dtype=Int64),
        ], "Last L clicked item ids strictly before the row's as-of time (most recent first) and their "
           "ages in seconds; rows stamped event time + 1 µs (leakage rule).",
            {"kind": "sequence", "L": str(L), "order": "most-recent-first"}),
        view("ppm_item_cache", item, [
            Field(name="ppm_item_vec", dtype=Array(Float32)),
            Field(name="ppm_item_version", dtype=String),
        ], "Frozen PPM item projection of the ME feature.",
            {"kind": "ppm-cache", "d": str(d), "version_field": "ppm_item_version"}),
        view("ppm_user_cache", user, [
            Field(name="ppm_user_seq", dtype=Array(Float32)),
            Field(name="ppm_seq_len", dtype=Int64),
            Field(name="ppm_user_version", dtype=String),
        ], "Frozen PPM bidirectional-Transformer output over the user's last L clicked items, flattened "
           "row-major L x d (zero padded), as of the row's timestamp.",
            {"kind": "ppm-cache", "layout": "row-major", "L": str(L), "d": str(d),
             "version_field": "ppm_user_version"}),
    ]
    windows = tuple(settings.counters.windows_days)
    for entity_obj, prefix in ((item, "item"), (user, "user")):
        views.append(view(f"{prefix}_stats", entity_obj, [
            *(Field(name=c, dtype=Int64) for c in counter_count_columns(prefix, windows)),
            *(Field(name=c, dtype=Float32) for c in counter_rate_columns(prefix, windows)),
        ], f"Point-in-time counters of the {prefix}: impressions, clicks, orders and smoothed click / order rates "
           "strictly before the row's time, all-time and per recent window (suffix _<W>d); one row per change "
           "(an event enters at t + 1 µs, leaves window W at t + W + 1 µs).",
            {"kind": "counters", "windows_days": ",".join(str(w) for w in windows),
             "prior_strength": str(settings.counters.prior_strength),
             "prior": "features/counter_priors.json (train-window rates unless set in settings.counters)"}))
    if "item_semantic_id" in have:
        sid = settings.semantic_ids
        views.append(view("item_semantic_id", item, [
            *(Field(name=c, dtype=Int64) for c in semantic_id_columns(sid.levels)),
            Field(name="sid_version", dtype=String),
        ], "Semantic ids: residual k-means codes (level 1 coarsest) of the item's frozen content vector, "
           "stamped with that vector's time; sid_version names the codebook (ppm_platform.features.semantic_ids).",
            {"kind": "semantic-id", "levels": str(sid.levels), "codebook_size": str(sid.codebook_size),
             "source": sid.source, "version_field": "sid_version"}))
    by_name = {v.name: v for v in views}
    feature_services = [
        FeatureService(name=name, features=[by_name[v] for v in members],
                       description=f"{name}: {', '.join(members)}")
        for name, members in services(settings).items()
    ]
    return {"entities": [user, item], "data_sources": list(sources.values()),
            "feature_views": views, "feature_services": feature_services,
            "push_sources": list(push_sources.values())}
