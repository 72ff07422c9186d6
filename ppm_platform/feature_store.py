"""Library API over the Feast feature store (DESIGN.md §3-4): register the definitions of
``feature_repo/features.py``, build point-in-time training sets, materialize to the online store, and
read online features for serving. No Dagster import here; the assets call these functions.

Configuration is built **in code** from :class:`~ppm_platform.config.Settings` (:func:`repo_config_dict`),
not read from ``feature_repo/feature_store.yaml``: Feast expands ``$VAR`` in that file
(``os.path.expandvars``) but has no ``${VAR:-default}``, so it could not honour ``PPM_ARTIFACTS_DIR`` with
a default. The checked-in yaml holds the same values for the default artifacts dir (CLI use), and
:func:`apply_definitions` writes the resolved yaml of the current settings to
``<feast_dir>/feature_store.yaml`` (``feast -c feature_repo -f <that file> ui``).

Profiles (``settings.profile``): ``local`` = DuckDB offline store + SQLite online store (registry and
online db under ``settings.feast_dir``); ``cluster`` = Spark offline store (master from
``settings.spark.master``) + Redis online store (``settings.redis``, ``host:port``). The source class per
profile is picked in ``feature_repo/features.py::make_source``.

Point-in-time semantics: Feast joins the latest feature row with ``feature_ts <= entity_ts`` (no expiry,
``ttl=0``); user-level rows are stamped ``event + 1 µs`` (``schemas.AS_OF_DELAY``) so the impression that
produced a row never sees it. Entity timestamps are floored to whole microseconds before the join (parquet
feature timestamps are µs; the returned ``event_timestamp`` is the floored value), which can only move a
join earlier, never leak.

Offline store of the ``local`` profile: :mod:`ppm_platform.offline_store`, Feast's DuckDB store with the
point-in-time join done as an ASOF join (Feast's own store joins every earlier feature row of a key first,
which made the 1e7 training set take hours; docs/scale.md §3). Its results equal Feast's DuckDB store's
(``tests/unit/test_offline_store.py``).

Training-set memory is bounded by chunking: entity rows are sorted by ``(event_timestamp, input
position)`` and joined ``chunk_rows`` at a time (time windows) through Feast's ``get_historical_features``,
each chunk streamed to the parquet file under a DuckDB memory limit. On the ASOF store the labels go through
the join and the result is read in Arrow batches; on other stores (Spark in ``cluster``) only the join keys,
timestamp and a row id go to Feast and labels are re-attached from the input by row id.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import sys
import tempfile
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from ppm_platform.config import Settings
from ppm_platform.io import to_arrow

log = logging.getLogger("ppm_platform.feature_store")


class _FileRegistryServeWhileMaterializingFilter(logging.Filter):
    """Drops Feast's advisory that ``serve_features_while_materializing`` "typically has no effect" on a file
    registry: on ours it does (the file registry honours it; without it reads of a materializing view fail,
    ``tests/unit/test_feature_store.py::test_online_reads_keep_serving_while_a_view_is_materializing``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("`serve_features_while_materializing` is enabled but `registry_type`")


logging.getLogger("feast.repo_config").addFilter(_FileRegistryServeWhileMaterializingFilter())

if TYPE_CHECKING:  # feast import is slow (6-12 s): keep it out of module import
    from feast import FeatureService, FeatureStore

PROJECT = "ppm_platform"
TIMESTAMP = "event_timestamp"
#: entity rows per Feast call on stores that return whole DataFrames (Spark in ``cluster``; Feast's DuckDB
#: store). Measured with Feast's DuckDB store on MovieLens-100K shapes (L=20, d=32): 10k rows peak ~2.9 GB
#: RSS and 50k rows ~9 GB at the same ~1.7k rows/s (it materializes every earlier feature row of a user,
#: lists included, before keeping the latest), so smaller chunks cost nothing there.
DEFAULT_CHUNK_ROWS = 10_000
#: entity rows per call of the ASOF offline store (``local`` profile) when the training set is streamed: its
#: cost per call is mostly one scan of the feature tables, so calls are large, but each call's result is
#: sorted in Arrow memory (``AsofRetrievalJob.to_arrow_batches``): 250k rows of the 1e7 training set are
#: 0.71 GiB and their last time window joined in 48 s under the 1 GB DuckDB cap (docs/scale.md §3)
STREAM_CHUNK_ROWS = 250_000
#: Feast ``offline_store.type`` of the ``local`` profile: Feast's DuckDB store with an ASOF point-in-time
#: join (:mod:`ppm_platform.offline_store`)
ASOF_STORE_TYPE = "ppm_platform.offline_store.AsofDuckDBOfflineStore"
#: Feast ``registry.registry_store_type`` of both profiles: Feast's file registry with atomic writes
#: (:mod:`ppm_platform.registry_store`)
REGISTRY_STORE_TYPE = "ppm_platform.registry_store.AtomicFileRegistryStore"
ROW_ID = "_ppm_row_id"
#: rows per parquet row group of the written training set (~45 MB with L=20, d=32): readers that stream it
#: (``urm_train``) read about what they need, not a whole 250k-row join chunk
ROW_GROUP_ROWS = 16_384
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


# ---- configuration --------------------------------------------------------------------------------
#: rows per online-store write batch while materializing (Feast ``materialization.online_write_batch_size``)
MATERIALIZE_BATCH_ROWS = 10_000


def repo_config_dict(settings: Settings) -> dict[str, Any]:
    """The ``feature_store.yaml`` content for ``settings`` (absolute paths), as a dict."""
    feast_dir = settings.feast_dir
    cfg: dict[str, Any] = {
        "project": PROJECT,
        "provider": "local",
        # serve_features_while_materializing: materialize flips a view to MATERIALIZING in the registry, and
        # Feast >= 0.64 refuses online reads of such a view (feast#6780) -- a serving outage for every
        # materialize or daily run; with it, reads keep the last materialized values until the run ends
        # registry_store_type: the registry file is replaced atomically, never rewritten in place (a server
        # refreshing its cache read a half-written registry during a materialize: ppm_platform.registry_store)
        "registry": {"registry_type": "file", "path": str(feast_dir / "registry.db"),
                     "registry_store_type": REGISTRY_STORE_TYPE,
                     "cache_ttl_seconds": 60, "serve_features_while_materializing": True},
        "entity_key_serialization_version": 3,
        # materialize reads the latest row per entity (a window in the offline store), not every row of the
        # range followed by a pandas dedupe, and writes the online store 10k rows at a time: Feast's
        # defaults held the whole ppm_user_cache history in pandas (20.9 GiB RSS at 1e7 impressions,
        # 2.27 M rows x 640 floats; docs/scale.md §4)
        "materialization": {"pull_latest_features": True, "online_write_batch_size": MATERIALIZE_BATCH_ROWS},
    }
    online = settings.online_store or ("redis" if settings.profile == "cluster" else "sqlite")
    cfg["online_store"] = ({"type": "redis", "connection_string": redis_connection_string(settings.redis)}
                           if online == "redis" else {"type": "sqlite", "path": str(feast_dir / "online_store.db")})
    if settings.profile == "cluster":
        sp = settings.spark
        cfg["offline_store"] = {"type": "spark", "spark_conf": {
            "spark.master": sp.master,
            "spark.ui.enabled": "false",
            "spark.sql.session.timeZone": "UTC",
            "spark.sql.shuffle.partitions": str(sp.shuffle_partitions),
            "spark.sql.execution.arrow.pyspark.enabled": "true",
            "spark.driver.memory": sp.driver_memory,
            "spark.driver.extraJavaOptions": sp.java_options,
        }}
    else:
        cfg["offline_store"] = {"type": ASOF_STORE_TYPE}
    return cfg


#: Redis client bounds (added to ``settings.redis`` unless it names them, e.g. ``"host:6379,socket_timeout=5"``):
#: seconds one socket read/write and one connect may block. redis-py waits forever by default, so a hung Redis
#: hung every ``/rank``; a killed one is refused at once (no timeout involved)
REDIS_SOCKET_TIMEOUT_S = 1.0
REDIS_CONNECT_TIMEOUT_S = 0.5
#: retries of a Redis command that failed on its connection, immediate (redis-py's default is 3 with 1-10 s
#: exponential backoff, timeouts included: a request took 8.4 s to fail while Redis was down); one retry on a
#: new connection covers a pooled connection that a restarted Redis closed while idle. A timeout is not
#: retried, so a hung Redis fails a request after one REDIS_SOCKET_TIMEOUT_S
REDIS_RETRIES = 1


def redis_connection_string(conn: str) -> str:
    """Feast's Redis ``connection_string`` (``host:port[,param=value...]``, passed to ``redis.Redis``) with
    ``socket_timeout`` / ``socket_connect_timeout`` set to :data:`REDIS_SOCKET_TIMEOUT_S` /
    :data:`REDIS_CONNECT_TIMEOUT_S` where ``conn`` does not set them."""
    given = {p.split("=", 1)[0].strip() for p in conn.split(",") if "=" in p}
    extra = [f"{k}={v}" for k, v in (("socket_timeout", REDIS_SOCKET_TIMEOUT_S),
                                     ("socket_connect_timeout", REDIS_CONNECT_TIMEOUT_S)) if k not in given]
    return ",".join([conn, *extra])


def get_store(settings: Settings) -> "FeatureStore":
    """A :class:`feast.FeatureStore` configured from ``settings`` (see the module docstring). On a Redis
    online store its client retries a command that lost its connection :data:`REDIS_RETRIES` time(s) without
    backoff and a timed-out one never (Feast's config has no retry setting, so the policy is set on the client
    Feast creates)."""
    from feast import FeatureStore, RepoConfig

    settings.feast_dir.mkdir(parents=True, exist_ok=True)
    config = RepoConfig(**repo_config_dict(settings))
    config.repo_path = settings.feature_repo_dir
    store = FeatureStore(repo_path=str(settings.feature_repo_dir), config=config)
    if config.online_store.type == "redis" and config.online_store.redis_type.value == "redis":
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.retry import Retry

        # creating the client does not connect (redis-py connects on the first command)
        client = store._get_provider().online_store._get_client(config.online_store)
        client.set_retry(Retry(NoBackoff(), REDIS_RETRIES, supported_errors=(RedisConnectionError,)))
    return store


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


def load_definitions(settings: Settings) -> dict[str, list[Any]]:
    """Build the Feast objects of ``<settings.feature_repo_dir>/features.py`` for ``settings``.

    Returns ``{"entities", "data_sources", "feature_views", "feature_services"}`` lists.
    """
    path = settings.feature_repo_dir / "features.py"
    if not path.is_file():
        raise FileNotFoundError(f"Feast definitions not found: {path} (Settings.feature_repo_dir)")
    mod_name = "ppm_feature_repo_features"
    mod = sys.modules.get(mod_name)
    if mod is None or Path(mod.__file__).resolve() != path.resolve():
        spec = importlib.util.spec_from_file_location(mod_name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = mod
        spec.loader.exec_module(mod)
    return mod.build_definitions(settings)


def apply_definitions(settings: Settings) -> dict[str, Any]:
    """Register every entity, data source, feature view and feature service (in-process ``store.apply``).

    Idempotent. Also writes the resolved config to ``<feast_dir>/feature_store.yaml`` for the Feast CLI.

    Returns:
        ``{"entities": [...], "feature_views": [...], "feature_services": [...], "seconds": s,
        "config": path}`` with the names now in the registry.
    """
    t0 = time.perf_counter()
    defs = load_definitions(settings)
    store = get_store(settings)
    store.apply([*defs["entities"], *defs["data_sources"], *defs.get("push_sources", []), *defs["feature_views"],
                 *defs["feature_services"]])
    cfg_path = settings.feast_dir / "feature_store.yaml"
    tmp = cfg_path.with_name(f".{cfg_path.name}.tmp")
    tmp.write_text(yaml.safe_dump(repo_config_dict(settings), sort_keys=False))
    os.replace(tmp, cfg_path)
    return {
        "entities": sorted(e.name for e in store.list_entities()),
        "feature_views": sorted(v.name for v in store.list_feature_views()),
        "feature_services": sorted(s.name for s in store.list_feature_services()),
        "seconds": round(time.perf_counter() - t0, 3),
        "config": str(cfg_path),
    }


# ---- helpers --------------------------------------------------------------------------------------
def _service_views(store: "FeatureStore", service: "FeatureService"):
    return [store.get_feature_view(p.name) for p in service.feature_view_projections]


def _service_join_keys(store: "FeatureStore", service: "FeatureService") -> list[str]:
    keys: list[str] = []
    for fv in _service_views(store, service):
        for col in fv.entity_columns:
            if col.name not in keys:
                keys.append(col.name)
    return keys


def _arrow_type(dtype) -> pa.DataType:
    """Arrow type of a Feast ``feast.types`` dtype (the ones our views use, plus the other primitives)."""
    from feast.types import Array, PrimitiveFeastType

    prim = {
        PrimitiveFeastType.INT32: pa.int32(), PrimitiveFeastType.INT64: pa.int64(),
        PrimitiveFeastType.FLOAT32: pa.float32(), PrimitiveFeastType.FLOAT64: pa.float64(),
        PrimitiveFeastType.STRING: pa.string(), PrimitiveFeastType.BOOL: pa.bool_(),
        PrimitiveFeastType.BYTES: pa.binary(), PrimitiveFeastType.UNIX_TIMESTAMP: pa.timestamp("us", tz="UTC"),
    }
    if isinstance(dtype, Array):
        return pa.list_(_arrow_type(dtype.base_type))
    return prim[dtype]


def _feature_fields(store: "FeatureStore", service: "FeatureService") -> list[pa.Field]:
    """Output feature columns of ``service`` (``full_feature_names=False``) with their Arrow types."""
    out: list[pa.Field] = []
    for proj in service.feature_view_projections:
        for f in proj.features:
            out.append(pa.field(f.name, _arrow_type(f.dtype)))
    names = [f.name for f in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"feature service {service.name!r}: feature names {dup} collide across views")
    return out


def _check_sources(settings: Settings, store: "FeatureStore", service: "FeatureService | None" = None) -> None:
    """Raise a clear error if a local parquet behind the service (or any view) is missing."""
    views = _service_views(store, service) if service is not None else store.list_feature_views()
    for fv in views:
        path = getattr(fv.batch_source, "path", None)
        if path and "://" not in path and not Path(path).exists():
            raise FileNotFoundError(
                f"feature view {fv.name!r}: source {path} does not exist; build the feature table "
                f"{fv.tags.get('table', fv.name)!r} first (settings.features_dir={settings.features_dir})")


def _prepare_entity_df(entity_df: pd.DataFrame, keys: list[str], feature_names: list[str]) -> pd.DataFrame:
    missing = [c for c in [*keys, TIMESTAMP] if c not in entity_df.columns]
    if missing:
        raise ValueError(f"entity_df is missing column(s) {missing}; has {list(entity_df.columns)}")
    clash = [c for c in entity_df.columns if c in feature_names or c == ROW_ID]
    if clash:
        raise ValueError(f"entity_df column(s) {clash} clash with feature names / the row id column")
    df = entity_df.reset_index(drop=True).copy()
    ts = df[TIMESTAMP]
    if pd.api.types.is_datetime64_any_dtype(ts) and getattr(ts.dt, "tz", None) is None:
        ts = ts.dt.tz_localize("UTC")  # naive timestamps are taken as UTC
    df[TIMESTAMP] = pd.to_datetime(ts, utc=True).dt.floor("us")  # feature timestamps are µs
    if df[TIMESTAMP].isna().any():
        raise ValueError(f"entity_df has {int(df[TIMESTAMP].isna().sum())} null event_timestamp value(s)")
    for k in keys:
        if df[k].isna().any():
            raise ValueError(f"entity_df has {int(df[k].isna().sum())} null {k!r} value(s)")
        df[k] = df[k].astype("int64")
    df[ROW_ID] = pd.RangeIndex(len(df), dtype="int64")
    return df


def _iter_chunks(df: pd.DataFrame, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """Entity rows in ``(event_timestamp, input position)`` order, ``chunk_rows`` at a time."""
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    ordered = df.sort_values([TIMESTAMP, ROW_ID], kind="stable")
    for start in range(0, len(ordered), chunk_rows):
        yield ordered.iloc[start:start + chunk_rows]


def _empty_features(df: pd.DataFrame, fields: list[pa.Field]) -> pd.DataFrame:
    out = df.copy()
    for f in fields:
        out[f.name] = pd.Series([None] * len(df), dtype="Int64" if pa.types.is_integer(f.type) else object,
                                index=df.index)
    return out


def _historical(store: "FeatureStore", service: "FeatureService", entity_df: pd.DataFrame):
    """``store.get_historical_features`` of ``service`` (short feature names) for ``entity_df``, Feast's
    retrieval job. Silences ibis' own call of a DuckDB method DuckDB deprecated (once per call; not ours)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"fetch_arrow_table\(\) is deprecated", category=DeprecationWarning)
        return store.get_historical_features(entity_df=entity_df, features=service, full_feature_names=False)


def _join_chunk(store: "FeatureStore", service: "FeatureService", chunk: pd.DataFrame, keys: list[str],
                fields: list[pa.Field]) -> pd.DataFrame:
    """Point-in-time join of one chunk; returns the chunk's rows (all columns) plus features, by row id."""
    query = chunk[[ROW_ID, *keys, TIMESTAMP]].copy()  # Feast rewrites the timestamp column in place
    res = _historical(store, service, query).to_df()
    if len(res) != len(query) or res[ROW_ID].nunique() != len(query):
        raise RuntimeError(
            f"point-in-time join returned {len(res)} rows ({res[ROW_ID].nunique()} distinct) for "
            f"{len(query)} entity rows: {len(query) - res[ROW_ID].nunique()} row(s) dropped")
    feats = res.set_index(ROW_ID)[[f.name for f in fields]]
    out = chunk.join(feats, on=ROW_ID, how="left")
    for f in fields:  # ints come back as float64 where NULL: make them nullable Int64
        if pa.types.is_integer(f.type):
            out[f.name] = out[f.name].astype("Int64")
    return out


def _streams(store: "FeatureStore") -> bool:
    """Whether the store's offline store is the ASOF store, whose retrieval job streams Arrow batches."""
    return store.config.offline_store.type == ASOF_STORE_TYPE


def _stream_chunk(store: "FeatureStore", service: "FeatureService", chunk: pd.DataFrame,
                  schema: pa.Schema) -> Iterator[pa.Table]:
    """Point-in-time join of one chunk on the ASOF store, as tables of at most :data:`ROW_GROUP_ROWS` rows in
    ``(event_timestamp, row id)`` order with ``schema``'s columns; never the chunk's features whole in memory.

    All of the chunk's columns (keys, timestamp, labels, row id) go through Feast, which returns entity columns
    unchanged. ``chunk`` is in ``(event_timestamp, row id)`` order (:func:`_iter_chunks`), so the returned row
    ids must be exactly the chunk's, in order: a dropped or repeated row raises ``RuntimeError`` naming it.
    """
    job = _historical(store, service, chunk.copy())
    want, pos = chunk[ROW_ID].to_numpy(), 0
    for batch in job.to_arrow_batches(order_by=[TIMESTAMP, ROW_ID], batch_rows=ROW_GROUP_ROWS):
        got = batch.column(ROW_ID).to_numpy()
        if len(got) > len(want) - pos or not (got == want[pos:pos + len(got)]).all():
            raise RuntimeError(f"point-in-time join returned row ids out of step with the entity rows after "
                               f"{pos} of {len(want)} rows (a row dropped or repeated)")
        pos += len(got)
        yield pa.Table.from_batches([batch]).select(schema.names).cast(schema)
    del job
    pa.default_memory_pool().release_unused()  # the chunk's sorted result: hand it back before the next call
    if pos != len(want):
        raise RuntimeError(f"point-in-time join returned {pos} rows for {len(want)} entity rows: "
                           f"{len(want) - pos} row(s) dropped")


def _restore_ts(df: pd.DataFrame) -> pd.DataFrame:
    df[TIMESTAMP] = pd.to_datetime(df[TIMESTAMP], utc=True)
    return df


# ---- offline: training sets -----------------------------------------------------------------------
def get_training_frame(settings: Settings, entity_df: pd.DataFrame, service: str = "urm_training",
                       chunk_rows: int = DEFAULT_CHUNK_ROWS, store: "FeatureStore | None" = None
                       ) -> pd.DataFrame:
    """Point-in-time join of ``entity_df`` with the features of feature service ``service``.

    Args:
        entity_df: the service's join keys (``user_id`` and/or ``item_id``), ``event_timestamp`` (UTC;
            naive values are taken as UTC) and any label / extra columns, which are returned unchanged.
        chunk_rows: entity rows per Feast call (rows are chunked in time order to bound memory).

    Returns:
        One row per entity row, in ``entity_df``'s order (index reset), with ``event_timestamp`` tz-aware
        UTC and the service's features (``full_feature_names=False``): NULL / ``None`` where no feature
        row exists at or before the row's time; integer features as nullable ``Int64``.

    Raises:
        ValueError: a required column is missing or null, or a column clashes with a feature name.
        RuntimeError: Feast returned a different number of rows than it was given (names the count).
        FileNotFoundError: a feature table behind the service has not been built.
    """
    store = store or get_store(settings)
    fs = store.get_feature_service(service, allow_cache=True)
    keys, fields = _service_join_keys(store, fs), _feature_fields(store, fs)
    df = _prepare_entity_df(entity_df, keys, [f.name for f in fields])
    if len(df) == 0:
        return _empty_features(df, fields).drop(columns=[ROW_ID])
    _check_sources(settings, store, fs)
    # the same DuckDB cap as the training set: the 1,000-pair serving-parity check at 1e7 took 8.6 GiB uncapped
    with limit_duckdb_memory(settings, settings.urm.training_set_memory_limit):
        parts = [_join_chunk(store, fs, chunk, keys, fields) for chunk in _iter_chunks(df, chunk_rows)]
    out = pd.concat(parts, ignore_index=True).sort_values(ROW_ID, kind="stable")
    if len(out) != len(df):
        raise RuntimeError(f"training frame has {len(out)} rows for {len(df)} entity rows")
    return _restore_ts(out.drop(columns=[ROW_ID]).reset_index(drop=True))


@contextlib.contextmanager
def limit_duckdb_memory(settings: Settings, limit: str | None):
    """Within the block, cap the memory of the DuckDB connection Feast's DuckDB offline store runs on (ibis'
    default backend, process-wide) at ``limit`` (e.g. ``"1GB"``; DuckDB spills joins and windows beyond it to
    ``<artifacts>/.duckdb_spill``); the previous limit is restored after. The spill folder is set once per
    process and kept (DuckDB cannot switch it once used). No-op for ``limit`` None or outside the ``local``
    profile. Measured on synthetic 1e5: a 40k-row chunk stays at 1.4 GiB process RSS with ``"1GB"``
    (docs/scale.md §4)."""
    if not limit or settings.profile != "local":
        yield
        return
    import ibis

    con = ibis.get_backend()
    old = con.raw_sql("SELECT current_setting('memory_limit')").fetchone()[0]
    spill = settings.artifacts_dir / ".duckdb_spill"
    if con.raw_sql("SELECT current_setting('temp_directory')").fetchone()[0] != str(spill):
        try:
            con.raw_sql(f"SET temp_directory = '{spill}'")
        except Exception as e:  # already used by an earlier query of this process: keep that folder
            log.info("DuckDB temp_directory kept (%s)", e)
    con.raw_sql(f"SET memory_limit = '{limit}'")
    try:
        yield
    finally:
        con.raw_sql(f"SET memory_limit = '{old}'")  # DuckDB removes its own spill files when a query ends


def write_training_set(settings: Settings, entity_df: pd.DataFrame, out_path: Path,
                       service: str = "urm_training", chunk_rows: int | None = None,
                       store: "FeatureStore | None" = None, memory_limit: str | None = None) -> dict[str, Any]:
    """Stream the point-in-time training set of ``entity_df`` into one parquet file, atomically.

    Chunks (see :func:`get_training_frame`) are joined and appended one at a time to a temp file in the
    target folder, which is renamed onto ``out_path`` at the end (a crash leaves no partial file).
    Chunks are time partitions: consecutive ``chunk_rows`` rows of the entity rows sorted by
    ``(event_timestamp, input position)``, so each Feast call covers one time window and rows are written
    in that order, i.e. ``entity_df``'s order when it is time-sorted (as interactions are). The schema is
    fixed up front from the feature views' types, so a chunk whose features are all NULL still writes typed
    columns. Memory: one chunk's join (``memory_limit`` caps DuckDB's part, see :func:`limit_duckdb_memory`)
    plus the entity keys, timestamps and labels (~40 B per row).

    Every chunk is one ``store.get_historical_features`` call of the configured offline store. Locally that is
    the ASOF store (:mod:`ppm_platform.offline_store`): labels go through the join with the keys and the result
    is written in Arrow batches (``chunk_rows`` None = :data:`STREAM_CHUNK_ROWS`). Other stores (Spark in
    ``cluster``) return each chunk as a DataFrame joined back to the labels by row id (``chunk_rows`` None =
    :data:`DEFAULT_CHUNK_ROWS`). Either way every row id is checked against the input (the dask store drops
    rows silently, docs/scale.md §3).

    Returns:
        ``{"rows", "seconds", "rows_per_s", "rows_per_min", "chunks", "chunk_rows", "path"}``.
    """
    with limit_duckdb_memory(settings, memory_limit):
        return _write_training_set(settings, entity_df, out_path, service, chunk_rows, store)


def _write_training_set(settings: Settings, entity_df: pd.DataFrame, out_path: Path, service: str,
                        chunk_rows: int | None, store: "FeatureStore | None") -> dict[str, Any]:
    t0 = time.perf_counter()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    store = store or get_store(settings)
    streams = _streams(store)
    chunk_rows = chunk_rows or (STREAM_CHUNK_ROWS if streams else DEFAULT_CHUNK_ROWS)
    fs = store.get_feature_service(service, allow_cache=True)
    keys, fields = _service_join_keys(store, fs), _feature_fields(store, fs)
    df = _prepare_entity_df(entity_df, keys, [f.name for f in fields])
    if len(df):
        _check_sources(settings, store, fs)
    base = to_arrow(df.drop(columns=[ROW_ID])).schema  # types of the entity / label columns
    base = pa.schema([pa.field(TIMESTAMP, pa.timestamp("us", tz="UTC")) if f.name == TIMESTAMP else f
                      for f in base])
    schema = pa.schema([*base, *fields])
    fd, tmp = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".tmp", dir=out_path.parent)
    os.close(fd)
    rows = chunks = 0
    try:
        with pq.ParquetWriter(tmp, schema, coerce_timestamps="us", allow_truncated_timestamps=True) as writer:
            for chunk in _iter_chunks(df, chunk_rows):
                if streams:
                    for part in _stream_chunk(store, fs, chunk, schema):
                        writer.write_table(part, row_group_size=ROW_GROUP_ROWS)
                else:
                    part = _join_chunk(store, fs, chunk, keys, fields).sort_values(ROW_ID, kind="stable")
                    writer.write_table(to_arrow(part.drop(columns=[ROW_ID]), schema), row_group_size=ROW_GROUP_ROWS)
                rows += len(chunk)
                chunks += 1
            if rows == 0:
                writer.write_table(schema.empty_table())
        if rows != len(df):
            raise RuntimeError(f"wrote {rows} rows for {len(df)} entity rows")
        os.replace(tmp, out_path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    secs = time.perf_counter() - t0
    return {"rows": rows, "seconds": round(secs, 3), "rows_per_s": round(rows / secs, 1) if secs else None,
            "rows_per_min": round(60 * rows / secs) if secs else None, "chunks": chunks, "chunk_rows": chunk_rows,
            "path": str(out_path)}


# ---- online ----------------------------------------------------------------------------------------
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
    _check_sources(settings, store)
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


def online_user_features(store: "FeatureStore", user_id: int, service: "str | list[str]" = "urm_user") -> dict[str, Any]:
    """The online features of one user (``user_id`` included); values are ``None`` for an unknown user.
    ``service``: a feature service name, or a list of ``"view:feature"`` references (read only those)."""
    resp = store.get_online_features(features=_online_features_arg(store, service),
                                     entity_rows=[{"user_id": int(user_id)}])
    return {k: v[0] for k, v in resp.to_dict().items()}


def online_item_features(store: "FeatureStore", item_ids: list[int],
                         service: "str | list[str]" = "urm_item") -> pd.DataFrame:
    """The online features of ``item_ids``: one row per requested id, in request order (duplicates kept);
    feature values ``None`` for unknown ids. ``service``: as :func:`online_user_features`."""
    ids = [int(i) for i in item_ids]
    resp = store.get_online_features(features=_online_features_arg(store, service),
                                     entity_rows={"item_id": ids})
    df = pd.DataFrame(resp.to_dict())
    if df["item_id"].tolist() != ids:  # Feast keeps request order; guard the contract anyway
        raise RuntimeError("online store returned items out of request order")
    return df
