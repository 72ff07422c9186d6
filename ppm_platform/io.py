"""Artifact I/O: atomic parquet/JSON writes (temp file + ``os.replace``) so a crash never leaves a
half-written artifact that a later step would read."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
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
    if sort_by:
        table = table.sort_by([(c, "ascending") for c in sort_by])
    out = write_parquet_atomic(table, path)
    shutil.rmtree(src_dir, ignore_errors=True)
    return out


def write_json_atomic(obj: Any, path: Path) -> None:
    """Write ``obj`` as pretty JSON, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())
