"""Point-in-time training sets from the Feast feature store: :func:`get_training_frame` (a DataFrame) and
:func:`write_training_set` (streamed into one parquet file under a memory cap).

Point-in-time semantics: Feast joins the latest feature row with ``feature_ts <= entity_ts`` (no expiry,
``ttl=0``); user-level rows are stamped ``event + 1 µs`` (``schemas.AS_OF_DELAY``) so the impression that
produced a row never sees it. Entity timestamps are floored to whole microseconds before the join (parquet
feature timestamps are µs; the returned ``event_timestamp`` is the floored value), which can only move a
join earlier, never leak.

Memory is bounded by chunking: entity rows are sorted by ``(event_timestamp, input position)`` and joined
``chunk_rows`` at a time (time windows) through Feast's ``get_historical_features``, each chunk streamed to
the parquet file under a DuckDB memory limit. Whether a chunk's result can be streamed is a capability of the
configured offline store (:func:`streams_arrow_batches`): on a store that streams (the ASOF store of the
``local`` profile, :mod:`ppm_platform.feature_store.offline_store`) the labels go through the join and the
result is read in Arrow batches; on other stores (Spark in ``cluster``) only the join keys, timestamp and a
row id go to Feast and labels are re-attached from the input by row id.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ppm_platform.config import Settings
from ppm_platform.feature_store.definitions import check_sources, service_views
from ppm_platform.feature_store.memory import limit_duckdb_memory
from ppm_platform.feature_store.repo_config import get_store
from ppm_platform.io import to_arrow

if TYPE_CHECKING:  # feast import is slow: keep it out of module import
    from feast import FeatureService, FeatureStore

TIMESTAMP = "event_timestamp"
#: entity rows per Feast call on stores that return whole DataFrames (Spark in ``cluster``; Feast's DuckDB
#: store). Feast's DuckDB store materializes every earlier feature row of a user, lists included, before
#: keeping the latest, so its memory grows with the chunk at the same rows/s: small chunks cost nothing there
#: (docs/scale.md §3)
DEFAULT_CHUNK_ROWS = 10_000
#: entity rows per call of a streaming offline store (the ASOF store of the ``local`` profile): its cost per
#: call is mostly one scan of the feature tables, so calls are large, but each call's result is sorted in
#: Arrow memory (``AsofRetrievalJob.to_arrow_batches``), which bounds them (docs/scale.md §3)
STREAM_CHUNK_ROWS = 250_000
ROW_ID = "_ppm_row_id"
#: rows per parquet row group of the written training set: readers that stream it (``urm_train``) read about
#: what they need, not a whole join chunk
ROW_GROUP_ROWS = 16_384


# ---- helpers --------------------------------------------------------------------------------------
def _service_join_keys(store: "FeatureStore", service: "FeatureService") -> list[str]:
    keys: list[str] = []
    for fv in service_views(store, service):
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


def streams_arrow_batches(store: "FeatureStore") -> bool:
    """Whether ``store``'s offline store streams its point-in-time results: it declares the capability
    ``streams_arrow_batches`` (:class:`~ppm_platform.feature_store.offline_store.AsofDuckDBOfflineStore`) and
    its retrieval jobs have ``to_arrow_batches(order_by, batch_rows)``."""
    return bool(getattr(store._get_provider().offline_store, "streams_arrow_batches", False))


def _stream_chunk(store: "FeatureStore", service: "FeatureService", chunk: pd.DataFrame,
                  schema: pa.Schema) -> Iterator[pa.Table]:
    """Point-in-time join of one chunk on a streaming offline store, as tables of at most
    :data:`ROW_GROUP_ROWS` rows in ``(event_timestamp, row id)`` order with ``schema``'s columns; never the
    chunk's features whole in memory.

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
    check_sources(settings, store, fs)
    # the same DuckDB cap as the training set: a serving-parity check on a large store is a large join too
    with limit_duckdb_memory(settings, settings.urm.training_set_memory_limit):
        parts = [_join_chunk(store, fs, chunk, keys, fields) for chunk in _iter_chunks(df, chunk_rows)]
    out = pd.concat(parts, ignore_index=True).sort_values(ROW_ID, kind="stable")
    if len(out) != len(df):
        raise RuntimeError(f"training frame has {len(out)} rows for {len(df)} entity rows")
    return _restore_ts(out.drop(columns=[ROW_ID]).reset_index(drop=True))


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

    Every chunk is one ``store.get_historical_features`` call of the configured offline store. On a store that
    streams (:func:`streams_arrow_batches`; locally the ASOF store, :mod:`ppm_platform.feature_store.offline_store`)
    labels go through the join with the keys and the result is written in Arrow batches (``chunk_rows`` None =
    :data:`STREAM_CHUNK_ROWS`). Other stores (Spark in ``cluster``) return each chunk as a DataFrame joined back
    to the labels by row id (``chunk_rows`` None = :data:`DEFAULT_CHUNK_ROWS`). Either way every row id is
    checked against the input (Feast's dask store drops rows silently, docs/scale.md §3).

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
    streams = streams_arrow_batches(store)
    chunk_rows = chunk_rows or (STREAM_CHUNK_ROWS if streams else DEFAULT_CHUNK_ROWS)
    fs = store.get_feature_service(service, allow_cache=True)
    keys, fields = _service_join_keys(store, fs), _feature_fields(store, fs)
    df = _prepare_entity_df(entity_df, keys, [f.name for f in fields])
    if len(df):
        check_sources(settings, store, fs)
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
