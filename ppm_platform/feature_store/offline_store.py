"""A Feast offline store: Feast's DuckDB store with the point-in-time join done as one ``ASOF LEFT JOIN`` per
feature view, plus a batched read of the result (docs/scale.md §3).

Why: Feast's DuckDB/ibis store (``feast.infra.offline_stores.ibis.point_in_time_join``) inner-joins every
entity row with *every earlier* feature row of its key, then keeps the latest with a ``row_number()`` window.
The work per entity row grows with the key's history, and the intermediate carries every feature column
(``ppm_user_seq`` is ``L*d`` floats), so large training sets took hours (docs/scale.md §3 has the
measurements). An ASOF join (DuckDB ``ASOF LEFT JOIN``,
https://duckdb.org/docs/sql/query_syntax/from#as-of-joins) finds the latest row ``feature_ts <= entity_ts`` per
key with a sort-merge, one output row per entity row. Feast made the same change for its Snowflake store
(feast-dev/feast PR #4850).

What stays Feast's: the registry, feature views and services, ``FeatureStore.get_historical_features``, the
source readers (``feast.infra.offline_stores.duckdb._read_data_source``), the returned
:class:`~feast.infra.offline_stores.ibis.IbisRetrievalJob`, and every other method (``materialize`` /
``pull_latest_from_table_or_query`` ...), inherited unchanged from
:class:`~feast.infra.offline_stores.duckdb.DuckDBOfflineStore`. Only the join differs, and
``tests/unit/test_offline_store.py`` checks it equals Feast's DuckDB store on the same definitions (ties,
TTL, rows before any feature row, duplicate entity rows, list features, two keys).

Semantics (Feast's, https://docs.feast.dev/getting-started/concepts/point-in-time-joins): per entity row and
feature view, the feature row with the same join keys and the greatest ``timestamp_field <= entity ts``; among
rows with equal timestamps the greatest ``created_timestamp_column``; NULL features if there is none or if it
is older than ``entity ts - ttl`` (``ttl`` > 0). ``filter_by_created_timestamp=True`` and an SQL-string
``entity_df`` are delegated to Feast's own join (not used by this project).

Streaming: the store declares :attr:`AsofDuckDBOfflineStore.streams_arrow_batches`; its retrieval job's
:meth:`AsofRetrievalJob.to_arrow_batches` reads a large result in batches
(:mod:`ppm_platform.feature_store.training_sets` asks the store for that capability).

Use: ``offline_store: {type: ppm_platform.feature_store.offline_store.AsofDuckDBOfflineStore}`` in
``feature_store.yaml`` (Feast finds ``AsofDuckDBOfflineStoreConfig`` next to the class; the config is built
in :mod:`ppm_platform.feature_store.repo_config`).
"""

from __future__ import annotations

from typing import Iterator, List, Optional, Union

import ibis
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from feast.feature_view import FeatureView
from feast.infra.offline_stores import offline_utils
from feast.infra.offline_stores.duckdb import (
    DuckDBOfflineStore,
    DuckDBOfflineStoreConfig,
    _read_data_source,
    _write_data_source,
)
from feast.infra.offline_stores.ibis import (
    IbisRetrievalJob,
    _get_entity_df_event_timestamp_range,
    _get_entity_schema,
    _to_utc,
    deduplicate,
)
from feast.infra.offline_stores.offline_store import RetrievalJob, RetrievalMetadata
from feast.infra.registry.base_registry import BaseRegistry
from feast.on_demand_feature_view import OnDemandFeatureView
from feast.repo_config import RepoConfig
from ibis.expr import datatypes as dt
from ibis.expr.types import Table
from pydantic import StrictStr

from ppm_platform.feature_store.repo_config import ASOF_STORE_TYPE


class AsofDuckDBOfflineStoreConfig(DuckDBOfflineStoreConfig):
    """Config of :class:`AsofDuckDBOfflineStore`: the same fields as Feast's DuckDB store."""

    type: StrictStr = ASOF_STORE_TYPE


class AsofRetrievalJob(IbisRetrievalJob):
    """Feast's ibis retrieval job, plus :meth:`to_arrow_batches` to stream a large result."""

    def to_arrow_batches(self, order_by: Optional[List[str]] = None,
                         batch_rows: int = 65_536) -> Iterator[pa.RecordBatch]:
        """The joined rows as Arrow record batches of at most ``batch_rows`` rows.

        Memory: without ``order_by`` the rows stream from DuckDB (bounded by its ``memory_limit``; it spills
        beyond). With ``order_by`` the result is fetched once as an Arrow table and sorted there
        (``pyarrow.compute.sort_indices``, rows copied one batch at a time), so it must fit in memory: a DuckDB
        ``ORDER BY`` over rows carrying long float lists runs out of a small memory cap where the Arrow sort of
        the same rows is fast (docs/scale.md §3). Callers bound it by the entity rows per call.

        Args:
            order_by: columns to sort the result by (ascending); None = DuckDB's output order (not stable
                across runs).
            batch_rows: rows per batch.

        Raises:
            NotImplementedError: on-demand feature views were requested (they transform whole DataFrames).
        """
        if self.on_demand_feature_views:
            raise NotImplementedError("to_arrow_batches does not apply on-demand feature views; use to_arrow()")
        # ibis 12's public Table.to_pyarrow_batches calls DuckDBPyConnection.fetch_record_batch, which DuckDB
        # 2.0 removed; the backend's relation (memtables registered, same SQL) has DuckDB's own arrow reader
        relation = ibis.get_backend(self.table)._to_duckdb_relation(self.table)
        if not order_by:
            yield from relation.to_arrow_reader(batch_rows)
            return
        table = relation.to_arrow_table()
        order = pc.sort_indices(table, [(c, "ascending") for c in order_by])
        for start in range(0, table.num_rows, batch_rows):  # one batch copied at a time, not a sorted table
            yield from table.take(order[start:start + batch_rows]).combine_chunks().to_batches()


def _feature_table(config: RepoConfig, fv: FeatureView, refs: List[str], full_feature_names: bool, tag: str,
                   window: tuple) -> tuple[Table, dict[str, str], str, list[str]]:
    """One feature view's source as an ibis table ready for the ASOF join, limited to rows that can match an
    entity timestamp in ``window`` (``(min, max)``, tz-aware): ``ts <= max`` and, with a ttl, ``ts >= min - ttl``, as
    Feast's SQL stores filter (a predicate DuckDB pushes into the parquet scan: row groups / day files past
    the window are skipped).

    Returns ``(table, {entity column: table key column}, table timestamp column, feature output names)``. Key and timestamp columns get names unique to this view (``tag``), so several views join the
    same entity table without clashes; feature columns keep their output names.
    """
    if fv.batch_source is None:
        raise ValueError(f"Feature view '{fv.name}' has no batch_source and cannot be queried.")
    src = fv.batch_source
    t = _read_data_source(src, str(config.repo_path))
    for old, new in src.field_mapping.items():  # as Feast's read_fv: source name -> feature name
        if old in t.columns:
            t = t.rename({new: old})
    ts, created = src.timestamp_field, src.created_timestamp_column
    join_key_map = fv.projection.join_key_map or {e.name: e.name for e in fv.entity_columns}
    prefix = fv.projection.name_alias or fv.name
    out_names = {(f"{prefix}__{r}" if full_feature_names else r): r for r in refs}
    keys = {ent_col: f"__{tag}_k{i}" for i, ent_col in enumerate(join_key_map.values())}
    ts_col = f"__{tag}_ts"
    utc = dt.Timestamp(timezone="UTC")
    t = t.filter(t[ts].cast(utc) <= ibis.literal(pd.Timestamp(window[1]).ceil("us"), utc))
    if fv.ttl:
        t = t.filter(t[ts].cast(utc) >= ibis.literal(pd.Timestamp(window[0]).floor("us") - fv.ttl, utc))
    cols = {keys[ent_col]: t[fv_col] for fv_col, ent_col in join_key_map.items()}
    cols[ts_col] = t[ts].cast(utc)
    if created:
        cols[f"__{tag}_created"] = t[created].cast(utc)
    cols.update({name: t[ref] for name, ref in out_names.items()})
    t = t.select(**cols)
    if created:  # equal timestamps: the latest created row wins (Feast's deduplicate order)
        t = deduplicate(t, [*keys.values(), ts_col], ts_col, f"__{tag}_created").drop(f"__{tag}_created")
    return t, keys, ts_col, list(out_names)


def asof_point_in_time_join(entity: Table, tables: list[tuple[Table, dict[str, str], str, list[str], object]],
                            event_timestamp_col: str) -> Table:
    """Left-join each feature table to ``entity`` as of ``event_timestamp_col`` (one ASOF join per view).

    ``tables`` items are ``(table, {entity column: key column}, timestamp column, feature names, ttl)``
    as built by :func:`_feature_table`. Returns ``entity``'s columns followed by every feature, one row per
    entity row (row order unspecified, as Feast's).
    """
    out, features = entity, []
    for t, keys, ts_col, feats, ttl in tables:
        preds = [out[ent_col] == t[k] for ent_col, k in keys.items()]
        out = out.asof_join(t, on=out[event_timestamp_col] >= t[ts_col], predicates=preds, lname="",
                            rname="{name}__asof_right")
        if ttl:  # the latest row is older than ttl -> so is every earlier one: Feast returns NULL
            fresh = out[ts_col] >= out[event_timestamp_col] - ibis.interval(seconds=int(ttl.total_seconds()))
            out = out.mutate(**{f: fresh.ifelse(out[f], ibis.null(out[f].type())) for f in feats})
        out = out.drop(*[c for c in out.columns if c in (*keys.values(), ts_col) or c.endswith("__asof_right")])
        features.extend(feats)
    return out.select([*entity.columns, *features])


class AsofDuckDBOfflineStore(DuckDBOfflineStore):
    """Feast's :class:`~feast.infra.offline_stores.duckdb.DuckDBOfflineStore` whose
    ``get_historical_features`` is an ASOF join (module docstring: why, semantics, what is unchanged)."""

    #: capability: its retrieval jobs are :class:`AsofRetrievalJob`, which read a result in Arrow batches
    #: (:meth:`AsofRetrievalJob.to_arrow_batches`) instead of one DataFrame
    streams_arrow_batches = True

    @staticmethod
    def get_historical_features(
        config: RepoConfig,
        feature_views: List[FeatureView],
        feature_refs: List[str],
        entity_df: Union[pd.DataFrame, str],
        registry: BaseRegistry,
        project: str,
        full_feature_names: bool = False,
        filter_by_created_timestamp: bool = False,
    ) -> RetrievalJob:
        """Point-in-time join of ``entity_df`` (a DataFrame with the join keys and one timestamp column) with
        ``feature_refs``; returns an :class:`AsofRetrievalJob`. Delegates to Feast's join for an SQL
        ``entity_df`` or ``filter_by_created_timestamp``. Raises as Feast's store (``ValueError`` for a view
        without a batch source)."""
        if not isinstance(entity_df, pd.DataFrame) or filter_by_created_timestamp:
            return DuckDBOfflineStore.get_historical_features(
                config, feature_views, feature_refs, entity_df, registry, project, full_feature_names,
                filter_by_created_timestamp)
        event_timestamp_col = offline_utils.infer_event_timestamp_from_entity_df(_get_entity_schema(entity_df))
        ts_range = _get_entity_df_event_timestamp_range(entity_df, event_timestamp_col)
        entity_df = _to_utc(entity_df, event_timestamp_col)
        window = (entity_df[event_timestamp_col].min(), entity_df[event_timestamp_col].max())
        entity = ibis.memtable(entity_df)
        tables = []
        for i, fv in enumerate(feature_views):
            name = fv.projection.name_to_use()
            refs = [r.split(":")[1] for r in feature_refs if r.startswith(f"{name}:")]
            t, keys, ts_col, feats = _feature_table(config, fv, refs, full_feature_names, f"fv{i}", window)
            tables.append((t, keys, ts_col, feats, fv.ttl))
        res = asof_point_in_time_join(entity, tables, event_timestamp_col)
        odfvs = OnDemandFeatureView.get_requested_odfvs(feature_refs, project, registry)
        for odfv in (o for o in odfvs if o.mode == "substrait"):
            res = odfv.transform_ibis(res, full_feature_names)
        return AsofRetrievalJob(
            res, [o for o in odfvs if o.mode != "substrait"], full_feature_names,
            metadata=RetrievalMetadata(features=feature_refs,
                                       keys=list(set(entity_df.columns) - {event_timestamp_col}),
                                       min_event_timestamp=ts_range[0], max_event_timestamp=ts_range[1]),
            data_source_writer=_write_data_source,
            staging_location=config.offline_store.staging_location,
            staging_location_endpoint_override=config.offline_store.staging_location_endpoint_override,
            repo_path=str(config.repo_path))
