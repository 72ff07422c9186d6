"""Item id -> row of the ME feature table: the one indexer that the PPM pre-training (in memory and streamed
from disk) and the evaluation harness use to turn impressions and behaviour histories into rows of the
catalog's multi-modal (ME) matrix.

Row 0 of the table is an all-zero padding item, so a padded history position indexes a zero vector and the
models need no special case for it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


class MEIndex:
    """The ME table of a catalog and the lookup from item id to its row.

    Args:
        item_ids: int64 ``[N]`` item id of each ME row (:func:`~ppm_platform.features.item_multimodal.me_matrix`).
        me: float32 ``[N, me_dim]`` ME features, row ``i`` for ``item_ids[i]``.

    Attributes:
        table: float32 ``[N + 1, me_dim]``: row 0 all zeros (padding), row ``i + 1`` = ``me[i]``.
    """

    def __init__(self, item_ids: np.ndarray, me: np.ndarray):
        ids = np.asarray(item_ids, dtype=np.int64)
        order = np.argsort(ids, kind="stable")
        self._ids = ids[order]
        self._rows = (order + 1).astype(np.int64)
        self.table = np.vstack([np.zeros((1, me.shape[1]), np.float32), me]).astype(np.float32)

    @classmethod
    def of(cls, item_multimodal: pd.DataFrame) -> "MEIndex":
        """The index of an ``item_multimodal`` feature table (its ME features, row order kept)."""
        from ppm_platform.features.item_multimodal import me_matrix

        return cls(*me_matrix(item_multimodal))

    def _lookup(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ids = np.asarray(ids, dtype=np.int64)
        if not len(self._ids):
            return np.zeros(ids.shape, np.int64), np.ones(ids.shape, bool)
        pos = np.minimum(np.searchsorted(self._ids, ids), len(self._ids) - 1)
        return self._rows[pos], self._ids[pos] != ids

    def rows(self, ids: np.ndarray, what: str = "item_id") -> np.ndarray:
        """int64 table rows (>= 1) of ``ids`` (any shape).

        Raises:
            KeyError: an id has no ME row; the message names ``what``, the first such id, its position in
                ``ids`` and how many ids are affected.
        """
        rows, bad = self._lookup(ids)
        if bad.any():
            at = np.argwhere(bad)[0]
            raise KeyError(f"{what} {int(np.asarray(ids)[tuple(at)])} has no item_multimodal row (position "
                           f"{tuple(int(a) for a in at) if len(at) > 1 else int(at[0])}; {int(bad.sum())} affected)")
        return rows

    def history_rows(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """int64 ``[B, L]`` table rows of a padded history (``ids`` int64 ``[B, L]``, ``mask`` ``[B, L]`` with
        1 / True at real behaviours): the row of each real behaviour, 0 (padding) elsewhere.

        Raises:
            KeyError: a real behaviour's item has no ME row (``history item_id``, with its position ``(row, col)``).
        """
        valid = np.asarray(mask) > 0
        out = np.zeros(np.shape(ids), dtype=np.int64)
        rows, bad = self._lookup(np.asarray(ids)[valid])
        if bad.any():
            r, c = np.argwhere(valid)[int(np.flatnonzero(bad)[0])]
            raise KeyError(f"history item_id {int(np.asarray(ids)[r, c])} has no item_multimodal row (position "
                           f"({int(r)}, {int(c)}); {int(bad.sum())} affected)")
        out[valid] = rows
        return out
