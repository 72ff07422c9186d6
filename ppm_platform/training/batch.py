"""Feature rows -> model input tensors. THE one conversion used by training, offline scoring and online
serving, so a Feast row means the same tensor everywhere (no train/serve skew).

Input: a DataFrame whose columns are the Feast features of the ``urm_training`` feature service (as returned
by ``get_historical_features`` offline, or assembled from ``get_online_features`` online). Output: a dict of
numpy arrays named by :data:`ppm_platform.models.urm.URM_INPUT_NAMES`:

=============== ======= ========= ==========================================================
name            dtype   shape     meaning
=============== ======= ========= ==========================================================
user_idx        int64   [B]       0 padding, 1 out-of-vocabulary (cold), >= 2 known user
item_idx        int64   [B]       same convention, items
user_side       int64   [B, 3]    age bucket, gender, occupation (0/1 convention as above)
item_genres     float32 [B, G]    multi-hot of the item's categories
hist_item_idx   int64   [B, L]    clicked-item ID sequence, most recent first, 0 padding
hist_mask       float32 [B, L]    1 where hist_item_idx is a real behaviour
ppm_user_seq    float32 [B, L, d] cached PPM sequence-encoder output (zeros where absent)
ppm_seq_mask    float32 [B, L]    1 for the first ppm_seq_len positions
ppm_item_vec    float32 [B, d]    cached PPM item-tower output (zeros if the item has none)
=============== ======= ========= ==========================================================

Vocabularies are fitted on the training window only, so ids first seen later are out-of-vocabulary:
exactly what cold-start users and items look like in production.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

import numpy as np
import pandas as pd

PAD, OOV = 0, 1
#: MovieLens-style age buckets (upper bounds, exclusive); the last bucket is open-ended.
AGE_BOUNDS = (18, 25, 35, 45, 50, 56)


def _is_missing(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, float) and np.isnan(v):
        return True
    return v is pd.NA


def _build_vocab(values: Iterable[Any]) -> dict[str, int]:
    uniq = sorted({str(v) for v in values if not _is_missing(v)})
    return {v: i + 2 for i, v in enumerate(uniq)}


def _lookup(vocab: dict[str, int], values: Iterable[Any]) -> np.ndarray:
    return np.fromiter((PAD if _is_missing(v) else vocab.get(str(v), OOV) for v in values), dtype=np.int64)


@dataclass
class FeatureEncoder:
    """Fitted vocabularies + shapes that turn feature rows into model inputs.

    Attributes:
        max_len: L, the sequence length of ``hist_*`` and ``ppm_*`` inputs.
        ppm_dim: d, the width of the cached PPM vectors (0 when the model does not use PPM).
        users, items, genders, occupations, genres: string-keyed vocabularies (index >= 2).
    """

    max_len: int
    ppm_dim: int
    users: dict[str, int] = field(default_factory=dict)
    items: dict[str, int] = field(default_factory=dict)
    genders: dict[str, int] = field(default_factory=dict)
    occupations: dict[str, int] = field(default_factory=dict)
    genres: dict[str, int] = field(default_factory=dict)

    # ---- fitting / persistence -------------------------------------------------------------------
    @classmethod
    def fit(cls, train: pd.DataFrame, max_len: int, ppm_dim: int) -> "FeatureEncoder":
        """Fit vocabularies on the training rows (never on validation/test rows)."""
        genres = _build_vocab(g for cats in train["categories"] if not _is_missing_list(cats) for g in cats)
        return cls(max_len=max_len, ppm_dim=ppm_dim,
                   users=_build_vocab(train["user_id"]), items=_build_vocab(train["item_id"]),
                   genders=_build_vocab(train["gender"]), occupations=_build_vocab(train["occupation"]),
                   genres=genres)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureEncoder":
        return cls(**d)

    # ---- sizes the models need ----------------------------------------------------------------------
    @property
    def n_users(self) -> int:
        return len(self.users) + 2

    @property
    def n_items(self) -> int:
        return len(self.items) + 2

    @property
    def user_side_cardinalities(self) -> tuple[int, int, int]:
        return (len(AGE_BOUNDS) + 1 + 2, len(self.genders) + 2, len(self.occupations) + 2)

    @property
    def n_genres(self) -> int:
        return max(len(self.genres), 1)

    # ---- transform --------------------------------------------------------------------------------
    def transform(self, df: pd.DataFrame) -> dict[str, np.ndarray]:
        """Convert feature rows to model inputs (see module docstring for names, dtypes, shapes).

        Missing features (null from a point-in-time join before the first row, or an entity absent from
        the online store) become padding/zeros, the same offline and online.

        Raises:
            KeyError: a required feature column is absent from ``df`` (the message names it).
            ValueError: a ``ppm_user_seq`` row is not ``L * d`` long (its row position is named).
        """
        for col in ("user_id", "item_id", "age", "gender", "occupation", "categories", "hist_item_ids"):
            if col not in df.columns:
                raise KeyError(f"feature column {col!r} missing; have {list(df.columns)}")
        n, L = len(df), self.max_len
        age = pd.to_numeric(df["age"], errors="coerce").to_numpy(dtype=float)
        age_idx = np.where(np.isnan(age), PAD, np.searchsorted(AGE_BOUNDS, np.nan_to_num(age), side="right") + 2)
        out: dict[str, np.ndarray] = {
            "user_idx": _lookup(self.users, df["user_id"]),
            "item_idx": _lookup(self.items, df["item_id"]),
            "user_side": np.stack([age_idx.astype(np.int64), _lookup(self.genders, df["gender"]),
                                   _lookup(self.occupations, df["occupation"])], axis=1),
        }
        genres = np.zeros((n, self.n_genres), dtype=np.float32)
        for r, cats in enumerate(df["categories"]):
            if not _is_missing_list(cats):
                for g in cats:
                    j = self.genres.get(str(g))
                    if j is not None:
                        genres[r, j - 2] = 1.0
        out["item_genres"] = genres
        hist = np.zeros((n, L), dtype=np.int64)
        for r, ids in enumerate(df["hist_item_ids"]):
            if not _is_missing_list(ids):
                ids = list(ids)[:L]
                hist[r, : len(ids)] = _lookup(self.items, ids)
        out["hist_item_idx"] = hist
        out["hist_mask"] = (hist != PAD).astype(np.float32)
        d = self.ppm_dim
        seq = np.zeros((n, L, d), dtype=np.float32)
        seq_mask = np.zeros((n, L), dtype=np.float32)
        item_vec = np.zeros((n, d), dtype=np.float32)
        if d and "ppm_user_seq" in df.columns:
            lens = pd.to_numeric(df["ppm_seq_len"], errors="coerce").fillna(0).to_numpy(dtype=np.int64)
            for r, flat in enumerate(df["ppm_user_seq"]):
                if not _is_missing_list(flat):
                    a = np.asarray(flat, dtype=np.float32)
                    if a.size != L * d:
                        raise ValueError(f"row {r}: ppm_user_seq has {a.size} values, expected L*d = {L}*{d}")
                    seq[r] = a.reshape(L, d)
                    seq_mask[r, : min(int(lens[r]), L)] = 1.0
            for r, v in enumerate(df["ppm_item_vec"]):
                if not _is_missing_list(v):
                    item_vec[r] = np.asarray(v, dtype=np.float32)
        out["ppm_user_seq"], out["ppm_seq_mask"], out["ppm_item_vec"] = seq, seq_mask, item_vec
        return out


def _is_missing_list(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, float):
        return bool(np.isnan(v))
    return False


def labels(df: pd.DataFrame) -> np.ndarray:
    """Click and order labels as float32 [B, 2]."""
    return df[["click", "order"]].to_numpy(dtype=np.float32)
