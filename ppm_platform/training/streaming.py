"""Bounded-memory reading of the training inputs: parquet files are read a *chunk* (a run of
consecutive row groups, about ``chunk_rows`` rows) at a time, never whole.

SGD order: each epoch visits the chunks in a seeded random order and shuffles the rows inside each chunk
with the same generator. When the data fit in one chunk this is exactly ``rng.permutation(rows)`` (a
permutation of one chunk draws nothing), so an in-memory frame and its parquet file give the same order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


def parquet_glob(path: Path) -> str:
    """A DuckDB ``read_parquet`` argument for ``path``: the file, or every ``*.parquet`` under a folder (a
    day-partitioned dataset)."""
    path = Path(path)
    return str(path / "**" / "*.parquet") if path.is_dir() else str(path)


def chunk_ranges(num_rows: int, chunk_rows: int) -> list[tuple[int, int]]:
    """``[(first row, rows)]`` of consecutive chunks of ``chunk_rows`` rows (the last may be smaller). By row
    count, not by the file's row groups, so the chunks (hence the SGD order) do not depend on how a writer
    happened to cut row groups.

    Raises:
        ValueError: ``chunk_rows < 1``.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    return [(s, min(chunk_rows, num_rows - s)) for s in range(0, num_rows, chunk_rows)]


class ParquetChunks:
    """A parquet file read chunk by chunk (see the module docstring); memory is bounded by one chunk plus
    the row groups it overlaps.

    Attributes:
        path: the file; num_rows: its rows; plan: :func:`chunk_ranges` of its rows.
    """

    def __init__(self, path: Path, chunk_rows: int):
        self.path = Path(path)
        self.file = pq.ParquetFile(self.path)
        md = self.file.metadata
        self.num_rows = md.num_rows
        sizes = np.array([md.row_group(i).num_rows for i in range(md.num_row_groups)], dtype=np.int64)
        self._group_start = np.concatenate([[0], np.cumsum(sizes)])
        self.plan = chunk_ranges(self.num_rows, chunk_rows)

    def __len__(self) -> int:
        return len(self.plan)

    def read(self, k: int, columns: list[str] | None = None) -> pa.Table:
        """Chunk ``k`` as an Arrow table (``columns`` only, when given)."""
        return self.read_rows(*self.plan[k], columns=columns)

    def tail(self, n: int, columns: list[str] | None = None) -> pa.Table:
        """The last ``n`` rows (all of them when the file has fewer), reading only the last row groups."""
        n = min(n, self.num_rows)
        return self.read_rows(self.num_rows - n, n, columns=columns)

    def read_rows(self, start: int, n: int, columns: list[str] | None = None) -> pa.Table:
        """Rows ``[start, start + n)`` as an Arrow table, reading only the row groups they overlap."""
        if n <= 0:
            empty = self.file.schema_arrow.empty_table()
            return empty if columns is None else empty.select(columns)
        # the previous chunk's decode buffers stay in pyarrow's (mimalloc) pool after its table is freed:
        # hand them back first, or they stay resident on top of the next chunk (docs/scale.md §4)
        pa.default_memory_pool().release_unused()
        g0 = int(np.searchsorted(self._group_start, start, side="right")) - 1
        g1 = int(np.searchsorted(self._group_start, start + n, side="left"))
        tbl = self.file.read_row_groups(list(range(g0, g1)), columns=columns)
        return tbl.slice(start - int(self._group_start[g0]), n)

    def order(self, rng: np.random.Generator | None) -> np.ndarray:
        """Chunk indices in file order (``rng`` None) or in a seeded random order."""
        n = len(self.plan)
        return np.arange(n) if rng is None else rng.permutation(n)

    # ---- the chunk-source interface of the CTR trainer (shared with FrameChunks) -------------------------
    #: whether the rows are in memory already (the trainer then encodes each chunk once)
    in_memory = False

    @property
    def columns(self) -> list[str]:
        return list(self.file.schema_arrow.names)

    def columns_frame(self, columns: list[str]) -> pd.DataFrame:
        """Whole (small) columns of every row as a DataFrame (e.g. timestamps, labels)."""
        return pq.read_table(self.path, columns=columns).to_pandas()

    def column(self, name: str) -> pd.Series:
        return self.columns_frame([name])[name]

    def read_frame(self, k: int, columns: list[str], mask: np.ndarray | None = None) -> pd.DataFrame:
        """Chunk ``k``'s ``columns`` as a DataFrame, only the rows where ``mask`` (bool, chunk length) is true."""
        tbl = self.read(k, columns)
        return (tbl if mask is None else tbl.filter(pa.array(mask))).to_pandas()


class FrameChunks:
    """An in-memory DataFrame behind the same chunk interface as :class:`ParquetChunks` (the CTR trainer's
    chunk source): chunks are :func:`chunk_ranges` of its rows, so a frame and its parquet file give the
    trainer the same chunks, hence the same SGD order and model.

    Args:
        df: the rows (index 0..n-1); chunk_rows: rows per chunk.
    """

    in_memory = True

    def __init__(self, df: pd.DataFrame, chunk_rows: int):
        self.df = df.reset_index(drop=True)
        self.num_rows = len(self.df)
        self.plan = chunk_ranges(self.num_rows, chunk_rows)

    def __len__(self) -> int:
        return len(self.plan)

    order = ParquetChunks.order

    @property
    def columns(self) -> list[str]:
        return list(self.df.columns)

    def columns_frame(self, columns: list[str]) -> pd.DataFrame:
        return self.df[columns]

    def column(self, name: str) -> pd.Series:
        return self.df[name]

    def read_frame(self, k: int, columns: list[str], mask: np.ndarray | None = None) -> pd.DataFrame:
        start, n = self.plan[k]
        part = self.df.iloc[start:start + n][columns]
        return (part if mask is None else part[mask]).reset_index(drop=True)
