"""Artifact I/O: atomic parquet/JSON writes (temp file + ``os.replace``) so a crash never leaves a
half-written artifact that a later step would read."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from datetime import date
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


def to_arrow(df: pd.DataFrame | pa.Table, schema: pa.Schema | None = None) -> pa.Table:
    """Convert a DataFrame to an Arrow table, casting to ``schema`` when given.

    Timestamps are coerced to microseconds (Spark 4 cannot read ``TIMESTAMP(NANOS)`` parquet).

    Raises:
        ValueError: a column of ``schema`` is missing, or a cast fails (the message names the column).
    """
    table = df if isinstance(df, pa.Table) else pa.Table.from_pandas(df, preserve_index=False)
    if schema is None:
        return table
    missing = [f.name for f in schema if f.name not in table.column_names]
    if missing:
        raise ValueError(f"missing required column(s) {missing}; have {table.column_names}")
    cols = []
    for field in schema:
        try:
            cols.append(table.column(field.name).cast(field.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise ValueError(f"column {field.name!r}: cannot cast to {field.type}: {e}") from e
    return pa.Table.from_arrays(cols, schema=schema)


def write_parquet_atomic(df: pd.DataFrame | pa.Table, path: Path, schema: pa.Schema | None = None) -> pa.Table:
    """Write ``df`` to ``path`` as one parquet file, atomically (temp file in the same folder + rename).

    Returns the Arrow table that was written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = to_arrow(df, schema)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp, coerce_timestamps="us", allow_truncated_timestamps=True)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return table


def consolidate_parquet_dir(src_dir: Path, path: Path, schema: pa.Schema | None = None,
                            sort_by: list[str] | None = None) -> pa.Table:
    """Read a Spark output folder of part files and write it as one parquet file at ``path`` atomically,
    then remove ``src_dir``. Sorting makes the output byte-stable across re-runs."""
    table = pq.read_table(src_dir)
    if schema is not None:
        table = to_arrow(table, schema)
    out = write_parquet_atomic(_sorted(table, sort_by), path)
    shutil.rmtree(src_dir, ignore_errors=True)
    return out


#: file name of one day's part in a day-partitioned dataset folder (``<dataset>/<YYYY-MM-DD>.parquet``)
DAY_FILE = "{day}.parquet"


def day_of(ts: pa.ChunkedArray | pa.Array) -> pa.Array:
    """UTC calendar day (``date32``) of each timestamp in ``ts`` (any Arrow timestamp unit / tz)."""
    import pyarrow.compute as pc

    if ts.type.tz is not None:
        ts = ts.cast(pa.timestamp(ts.type.unit))  # tz-aware Arrow timestamps are stored in UTC already
    return pc.cast(ts, pa.date32())


def _sorted(table: pa.Table, sort_by: list[str] | None) -> pa.Table:
    return table.sort_by([(c, "ascending") for c in sort_by]) if sort_by else table


def write_day_partitioned(table: pa.Table, path: Path, ts_column: str = "event_timestamp",
                          sort_by: list[str] | None = None) -> pa.Table:
    """Write ``table`` as a day-partitioned dataset folder: one parquet per UTC day of ``ts_column``
    (``path/<YYYY-MM-DD>.parquet``, rows sorted by ``sort_by`` within the day), replacing ``path`` (file or
    folder) as a whole.

    The folder is built next to ``path`` and swapped in with two renames, so a reader sees the old or the
    new dataset, never a mix (a kill between the renames leaves no dataset: "not materialized", never a
    wrong one). Every reader here (pandas, pyarrow, DuckDB, Spark, Feast's file and Spark sources) reads a
    folder of parquet files as one table; files named by day add no partition column. The daily
    partitions of :func:`write_day_partition` replace one file of the same folder.

    Returns:
        ``table`` as written (sorted).
    """
    import pyarrow.compute as pc

    table = _sorted(table, sort_by)
    days = day_of(table.column(ts_column))
    _write_day_folder(((d.isoformat(), table.filter(pc.equal(days, pa.scalar(d, pa.date32()))))
                       for d in pc.unique(days).to_pylist()), Path(path), sort_by)
    return table


def _write_day_folder(days, path: Path, sort_by: list[str] | None) -> int:
    """Write ``(iso day, table)`` pairs (one at a time, each sorted) as ``<day>.parquet`` files of a folder
    built next to ``path``, then swap it in for ``path``; returns the rows written."""
    import uuid

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.days")
    rows = 0
    try:
        tmp.mkdir()
        for name, table in days:
            table = _sorted(table, sort_by)
            pq.write_table(table, tmp / DAY_FILE.format(day=name), coerce_timestamps="us",
                           allow_truncated_timestamps=True)
            rows += table.num_rows
        _swap_in(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def _swap_in(new_dir: Path, path: Path) -> None:
    """Replace ``path`` (file, folder or nothing) by the folder ``new_dir`` with two renames."""
    import uuid

    old = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.old")
    if path.exists():
        os.replace(path, old)
    os.replace(new_dir, path)
    if old.is_dir():
        shutil.rmtree(old, ignore_errors=True)
    elif old.exists():
        old.unlink()


#: the day column Spark partitions its output by before :func:`consolidate_day_dirs` (not in any table)
SPARK_DAY_COLUMN = "_ppm_day"


def consolidate_day_dirs(src_dir: Path, path: Path, schema: pa.Schema, sort_by: list[str] | None = None,
                         day: date | None = None) -> int:
    """Turn a Spark output folder partitioned by :data:`SPARK_DAY_COLUMN` (``src_dir/_ppm_day=<day>/part-*``)
    into the day-partitioned dataset folder ``path`` one day at a time (memory: one day's rows), then
    remove ``src_dir``.

    Args:
        day: None = every day; ``path`` is replaced as a whole (:func:`write_day_partitioned`'s layout and
            swap). A day: only ``path/<day>.parquet`` is replaced (an empty file when Spark wrote no row).

    Returns:
        Rows written.

    Raises:
        ValueError: with ``day``, Spark wrote rows of another day.
    """
    src_dir, path = Path(src_dir), Path(path)
    parts = {p.name.split("=", 1)[1]: p for p in sorted(src_dir.glob(f"{SPARK_DAY_COLUMN}=*")) if p.is_dir()}
    try:
        if day is not None:
            other = sorted(set(parts) - {day.isoformat()})
            if other:
                raise ValueError(f"{path}: the {day} partition's Spark output holds rows of other days {other[:3]}")
            table = to_arrow(pq.read_table(parts[day.isoformat()]), schema) if parts else schema.empty_table()
            return write_day_partition(table, path, day, sort_by=sort_by).num_rows
        # a generator: one day's rows in memory at a time
        return _write_day_folder(((name, to_arrow(pq.read_table(part), schema)) for name, part in parts.items()),
                                 path, sort_by)
    finally:
        shutil.rmtree(src_dir, ignore_errors=True)


def write_day_partition(table: pa.Table, path: Path, day: date, ts_column: str = "event_timestamp",
                        sort_by: list[str] | None = None) -> pa.Table:
    """Write the rows of one UTC ``day`` as ``path/<day>.parquet`` of a day-partitioned dataset folder
    (atomically; an empty day writes an empty file with the schema, so "materialized, 0 rows" differs
    from "not materialized").

    Raises:
        ValueError: ``table`` holds a row of another day, or ``path`` is a single parquet file rather than
            a day-partitioned folder (re-run the full-table asset once to convert it).
    """
    import pyarrow.compute as pc

    path = Path(path)
    if path.is_file():
        raise ValueError(f"{path} is a single parquet file, not a day-partitioned folder; materialize the "
                         "full (unpartitioned) asset once to convert it, then run daily partitions")
    other = pc.sum(pc.not_equal(day_of(table.column(ts_column)), pa.scalar(day, pa.date32()))).as_py() or 0
    if other:
        raise ValueError(f"{path}: {other} row(s) of the {day} partition have a {ts_column} on another day")
    return write_parquet_atomic(_sorted(table, sort_by), path / DAY_FILE.format(day=day.isoformat()))


def write_bytes_atomic(data: bytes, path: Path) -> None:
    """Write ``data`` to ``path`` atomically: a temp file ``.<name>.<random>.tmp`` in the same folder, fsynced,
    then renamed over ``path`` (``os.replace``), so a reader sees the old or the new content, whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json_atomic(obj: Any, path: Path) -> None:
    """Write ``obj`` as pretty JSON, atomically (:func:`write_bytes_atomic`)."""
    write_bytes_atomic(json.dumps(obj, indent=2, sort_keys=True, default=str).encode(), path)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())
