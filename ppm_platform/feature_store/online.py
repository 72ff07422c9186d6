"""The online side of the feature store: materialize the offline feature tables into the online store
(overwriting stored rows), read online features for serving, and name the errors of an online store that is
down or busy."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ppm_platform.config import Settings
from ppm_platform.feature_store.definitions import check_sources
from ppm_platform.feature_store.memory import limit_duckdb_memory
from ppm_platform.feature_store.repo_config import get_store

if TYPE_CHECKING:  # feast import is slow: keep it out of module import
    from feast import FeatureStore

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def overwrite_online_rows(store: "FeatureStore") -> "FeatureStore":
    """Make ``store``'s online writes replace the stored row whatever its timestamp, as a materialize needs:
    it writes the offline table's latest row per entity as of its end, so the online store must equal it.
    Feast's SQLite store always overwrites; its Redis store skips a row whose ``event_timestamp`` is not newer
    than the stored one (``tests/unit/test_online_daily.py``), which kept stale values online where a table
    was recomputed with unchanged timestamps (caches of a retrained PPM; a day re-run for late events). Sets
    Feast's ``skip_dedup`` on a Redis store; a no-op on SQLite. Returns ``store``."""
    if store.config.online_store.type == "redis":
        store.config.online_store.skip_dedup = True
    return store


def online_store_errors() -> tuple[type[BaseException], ...]:
    """The exceptions of an online store that is down or busy (not a bug, not a bad request): the Redis
    client's ``ConnectionError`` / ``TimeoutError`` and SQLite's ``OperationalError`` (``database is
    locked`` past the busy timeout, Python's ``sqlite3`` default of 5 s; Feast's SQLite store sets none)."""
    import sqlite3

    errors: list[type[BaseException]] = [sqlite3.OperationalError]
    try:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        errors += [RedisConnectionError, RedisTimeoutError]
    except ImportError:  # no redis client installed: no Redis store either
        pass
    return tuple(errors)


def _earliest_feature_ts(store: "FeatureStore") -> datetime:
    """Earliest ``event_timestamp`` over the local parquet sources (parquet statistics / one column);
    1970-01-01 where a source cannot be read locally (e.g. a cluster path)."""
    earliest: datetime | None = None
    for fv in store.list_feature_views():
        path = getattr(fv.batch_source, "path", None)
        if not path or "://" in path or not Path(path).exists():
            return EPOCH
        col = pq.read_table(path, columns=[fv.batch_source.timestamp_field]).column(0)
        if len(col) == 0 or col.null_count == len(col):
            continue
        lo = pc.min(col).as_py()
        lo = lo if lo.tzinfo else lo.replace(tzinfo=timezone.utc)
        earliest = lo if earliest is None or lo < earliest else earliest
    return earliest or EPOCH


def materialize(settings: Settings, end: datetime | None = None,
                store: "FeatureStore | None" = None) -> dict[str, Any]:
    """Load the latest row per entity (as of ``end``, default now) of every feature view into the online
    store: ``store.materialize(start=earliest feature timestamp, end)``. (``materialize_incremental`` on a
    never-materialized ``ttl=0`` view would start one year before now and skip older data.) DuckDB's memory
    is capped at ``settings.materialize_memory_limit`` meanwhile (:func:`limit_duckdb_memory`).

    Returns:
        ``{"views": n, "seconds": s, "start": iso, "end": iso, "view_seconds": {view: s}}``.
    """
    t0 = time.perf_counter()
    store = store or get_store(settings)
    check_sources(settings, store)
    end = end or datetime.now(timezone.utc)
    end = end if end.tzinfo else end.replace(tzinfo=timezone.utc)
    start = _earliest_feature_ts(store)
    views = store.list_feature_views()
    # one view at a time under a progress bar (views done, rate, ETA; silent off a TTY: tqdm disable=None);
    # Feast draws its own per-view row bar inside. Same result as one call over all views.
    from tqdm.auto import tqdm

    view_seconds = {}
    overwrite_online_rows(store)
    with limit_duckdb_memory(settings, settings.materialize_memory_limit):
        for fv in tqdm(sorted(views, key=lambda v: v.name), desc="materialize", unit="view", disable=None):
            tv = time.perf_counter()
            store.materialize(start_date=start, end_date=end, feature_views=[fv.name])
            view_seconds[fv.name] = round(time.perf_counter() - tv, 3)
    return {"views": len(views), "seconds": round(time.perf_counter() - t0, 3),
            "start": start.isoformat(), "end": end.isoformat(), "view_seconds": view_seconds}


def _online_features_arg(store: "FeatureStore", service: "str | list[str]"):
    """A feature service name -> the registered service; a list of ``"view:feature"`` refs -> itself."""
    return list(service) if isinstance(service, (list, tuple)) else store.get_feature_service(service, allow_cache=True)


def read_online_user(store: "FeatureStore", user_id: int, service: "str | list[str]" = "urm_user") -> dict[str, Any]:
    """The online features of one user (``user_id`` included); values are ``None`` for an unknown user.
    ``service``: a feature service name, or a list of ``"view:feature"`` references (read only those)."""
    resp = store.get_online_features(features=_online_features_arg(store, service),
                                     entity_rows=[{"user_id": int(user_id)}])
    return {k: v[0] for k, v in resp.to_dict().items()}


def read_online_items(store: "FeatureStore", item_ids: list[int],
                      service: "str | list[str]" = "urm_item") -> pd.DataFrame:
    """The online features of ``item_ids``: one row per requested id, in request order (duplicates kept);
    feature values ``None`` for unknown ids. ``service``: as :func:`read_online_user`."""
    ids = [int(i) for i in item_ids]
    resp = store.get_online_features(features=_online_features_arg(store, service),
                                     entity_rows={"item_id": ids})
    df = pd.DataFrame(resp.to_dict())
    if df["item_id"].tolist() != ids:  # Feast keeps request order; guard the contract anyway
        raise RuntimeError("online store returned items out of request order")
    return df
