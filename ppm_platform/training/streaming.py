"""Bounded-memory reading of the training inputs (issue #8 §4): parquet files are read a *chunk* (a run of
consecutive row groups, about ``chunk_rows`` rows) at a time, never whole.

SGD order: each epoch visits the chunks in a seeded random order and shuffles the rows inside each chunk
with the same generator. When the data fit in one chunk this is exactly ``rng.permutation(rows)`` (a
permutation of one chunk draws nothing), the order of the in-memory trainers before streaming.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
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
        # hand them back first. Probe on the 1e6 training set, one 131k-row chunk: +0.60 GiB RSS for a 0.22 GiB
        # table without this, 0.23 GiB less with it (docs/scale.md §4)
        pa.default_memory_pool().release_unused()
        g0 = int(np.searchsorted(self._group_start, start, side="right")) - 1
        g1 = int(np.searchsorted(self._group_start, start + n, side="left"))
        tbl = self.file.read_row_groups(list(range(g0, g1)), columns=columns)
        return tbl.slice(start - int(self._group_start[g0]), n)

    def order(self, rng: np.random.Generator | None) -> np.ndarray:
        """Chunk indices in file order (``rng`` None) or in a seeded random order."""
        n = len(self.plan)
        return np.arange(n) if rng is None else rng.permutation(n)
