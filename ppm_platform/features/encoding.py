"""Feature rows -> model input tensors (:class:`FeatureVectorizer`). THE one conversion used by training, offline
scoring and online serving, so a Feast row means the same tensor everywhere (no train/serve skew).

Input: a DataFrame whose columns are the Feast features of the ``urm_training`` feature service (as returned
by ``get_historical_features`` offline, or assembled from ``get_online_features`` online). Output: a dict of
numpy arrays named by :data:`ppm_platform.models.urm.URM_INPUT_NAMES`:

=============== ======= ========= ==========================================================
name            dtype   shape     meaning
=============== ======= ========= ==========================================================
user_idx        int64   [B]       0 padding, 1 out-of-vocabulary (cold or rare), >= 2 known user
item_idx        int64   [B]       same convention, items
user_side       int64   [B, 3]    age bucket, gender, occupation (1 = unknown / missing, >= 2 known)
item_genres     float32 [B, G]    multi-hot of the item's categories
item_content    float32 [B]       1 = the item has its content features (a profile row, and a PPM item
                                  vector when the model reads one); 0 = a learned no-content input is used
user_dense      float32 [B, Du]   the user's counters (``user_stats``), standardized (see below)
item_dense      float32 [B, Di]   the item's counters (``item_stats``), standardized
hist_item_idx   int64   [B, L]    clicked-item ID sequence, most recent first, 0 padding
hist_mask       float32 [B, L]    1 where hist_item_idx is a real behaviour
ppm_user_seq    float32 [B, L, d] cached PPM sequence-encoder output (zeros where absent)
ppm_seq_mask    float32 [B, L]    1 for the first ppm_seq_len positions
ppm_item_vec    float32 [B, d]    cached PPM item-tower output (zeros if the item has none)
item_sid        int64   [B, Ls]   semantic-id codes (``item_semantic_id``), one vocabulary index per
                                  level, 1 = OOV (no row, or a code no train row had); only when
                                  ``sid_levels > 0``
=============== ======= ========= ==========================================================

Vocabularies are fitted on the training window only, so ids first seen later are out-of-vocabulary:
exactly what cold-start users and items look like in production. With ``min_count > 1`` the ids with fewer
train impressions share the OOV row too, so that row is trained (a "minimum-count vocabulary").

Counters (:mod:`ppm_platform.features.counters`; ``counter_windows`` not None): per entity and per window
(all-time, then each ``_<W>d``) the five inputs ``log1p(impressions)``, ``log1p(clicks)``, ``log1p(orders)``,
and the smoothed click and order rates ``(count + m p) / (impressions + m)`` recomputed here from the counts
with the prior ``p`` of the train rows' labels (:meth:`FeatureVectorizer.fit`'s ``rate_prior``). A missing
counter row (an entity with no event yet, or unknown online) is zero impressions, i.e. rate = ``p``; each
input is then standardized with its train-rows mean and std.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

import numpy as np
import pandas as pd

from ppm_platform.data.schemas import COUNT_FIELDS, counter_count_columns, counter_suffixes, semantic_id_columns

PAD, OOV = 0, 1
#: MovieLens-style age buckets (upper bounds, exclusive); the last bucket is open-ended.
AGE_BOUNDS = (18, 25, 35, 45, 50, 56)
#: dense counter inputs per window, in order (see the module docstring)
DENSE_FIELDS = ("log_impressions", "log_clicks", "log_orders", "click_rate", "order_rate")


def _is_missing(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, float) and np.isnan(v):
        return True
    return v is pd.NA


def _vocab_of(counts: dict[str, int], min_count: int = 1) -> dict[str, int]:
    return {v: i + 2 for i, v in enumerate(sorted(k for k, n in counts.items() if n >= min_count))}


def _count_keys(acc: dict[str, int], values: Iterable[Any]) -> None:
    """Add the occurrences of each non-missing ``str(value)`` to ``acc``."""
    s = pd.Series(list(values) if not isinstance(values, pd.Series) else values, dtype=object)
    s = s[~s.map(_is_missing)] if len(s) else s
    for k, n in s.astype(str).value_counts().items():
        acc[k] = acc.get(k, 0) + int(n)


def _lookup(vocab: dict[str, int], values: Iterable[Any], missing: int = PAD) -> np.ndarray:
    """Vocabulary indices (int64) of ``values``: ``missing`` for missing values, OOV for unseen (keys are ``str(value)``)."""
    get = vocab.get
    return np.fromiter((missing if _is_missing(v) else get(str(v), OOV) for v in values), dtype=np.int64)


def dense_names(prefix: str, windows: tuple[int, ...]) -> list[str]:
    """Names of the dense counter inputs of one entity (``<prefix>_<field><suffix>``), in input order."""
    return [f"{prefix}_{f}{s}" for s in counter_suffixes(windows) for f in DENSE_FIELDS]


@dataclass
class FeatureVectorizer:
    """Fitted vocabularies + shapes that turn feature rows into model inputs.

    Named as scikit-learn's vectorizers (fit on rows, transform rows into arrays), not "encoder", which names
    the text and image item encoders (:mod:`ppm_platform.encoders`).

    Attributes:
        max_len: L, the sequence length of ``hist_*`` and ``ppm_*`` inputs.
        ppm_dim: d, the width of the cached PPM vectors (0 when the model does not use PPM).
        users, items, genders, occupations, genres: string-keyed vocabularies (index >= 2).
        min_count: ids with fewer train impressions were left out of ``users`` / ``items`` (share OOV).
        counter_windows: windows (days) of the ``user_stats`` / ``item_stats`` counters read, None = no
            counters (``user_dense`` / ``item_dense`` have width 0).
        rate_prior: ``{"click", "order", "strength"}`` of the smoothed rates recomputed from the counts.
        dense_mean, dense_std: ``{"user": [...], "item": [...]}`` standardization of the dense inputs.
        sid_levels: semantic-id levels read (``sid_1`` .. ``sid_<Ls>``), 0 = none (no ``item_sid`` output).
        sid_vocabs: per level, code (as text) -> index >= 2, fitted on the train rows like the id vocabularies.
    """

    max_len: int
    ppm_dim: int
    users: dict[str, int] = field(default_factory=dict)
    items: dict[str, int] = field(default_factory=dict)
    genders: dict[str, int] = field(default_factory=dict)
    occupations: dict[str, int] = field(default_factory=dict)
    genres: dict[str, int] = field(default_factory=dict)
    min_count: int = 1
    counter_windows: tuple[int, ...] | None = None
    rate_prior: dict[str, float] = field(default_factory=dict)
    dense_mean: dict[str, list[float]] = field(default_factory=dict)
    dense_std: dict[str, list[float]] = field(default_factory=dict)
    sid_levels: int = 0
    sid_vocabs: list[dict[str, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.counter_windows is not None:  # JSON gives a list
            self.counter_windows = tuple(int(w) for w in self.counter_windows)

    # ---- fitting / persistence -------------------------------------------------------------------
    #: the columns :meth:`fit` reads besides the counters (:meth:`fit_columns`)
    FIT_COLUMNS = ("user_id", "item_id", "gender", "occupation", "categories")

    @staticmethod
    def counter_columns(entity: str, windows: tuple[int, ...] | None) -> list[str]:
        """The ``<entity>_stats`` count columns an encoder with ``counter_windows=windows`` reads ([] for None)."""
        return [] if windows is None else counter_count_columns(entity, windows)

    @classmethod
    def fit_columns(cls, counter_windows: tuple[int, ...] | None = None, sid_levels: int = 0) -> list[str]:
        """Every column :meth:`fit_chunks` reads: :data:`FIT_COLUMNS`, the counters' count columns, then the
        semantic-id code columns."""
        return [*cls.FIT_COLUMNS, *cls.counter_columns("user", counter_windows),
                *cls.counter_columns("item", counter_windows), *semantic_id_columns(sid_levels)]

    @classmethod
    def fit(cls, train: pd.DataFrame, max_len: int, ppm_dim: int, **kw: Any) -> "FeatureVectorizer":
        """Fit vocabularies (and the counters' standardization) on the training rows (never on validation /
        test rows). Keyword arguments as :meth:`fit_chunks`."""
        return cls.fit_chunks([train], max_len, ppm_dim, **kw)

    @classmethod
    def fit_chunks(cls, chunks: Iterable[pd.DataFrame], max_len: int, ppm_dim: int, *, min_count: int = 1,
                   counter_windows: tuple[int, ...] | None = None,
                   rate_prior: dict[str, float] | None = None, sid_levels: int = 0) -> "FeatureVectorizer":
        """:meth:`fit` over training rows given in pieces (only :meth:`fit_columns` are read): the same
        encoder as ``fit(pd.concat(chunks))``, in memory bounded by the distinct values.

        Args:
            min_count: users / items with fewer train rows than this map to OOV (1 = every train id).
            counter_windows: windows of the counter views to read (None = no counters).
            rate_prior: ``{"click", "order", "strength"}`` prior of the recomputed smoothed rates (required
                with ``counter_windows``; :func:`label_prior` of the train rows).
            sid_levels: semantic-id levels to read (``sid_1`` ..; 0 = none); each level's vocabulary holds the
                codes of the train rows.

        Raises:
            ValueError: ``min_count < 1``, or counters without a ``rate_prior``.
        """
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        if counter_windows is not None and not rate_prior:
            raise ValueError("counter_windows needs a rate_prior ({'click', 'order', 'strength'})")
        counts: dict[str, dict[str, int]] = {c: {} for c in ("user_id", "item_id", "gender", "occupation", "genres")}
        enc = cls(max_len=max_len, ppm_dim=ppm_dim, min_count=min_count, counter_windows=counter_windows,
                  rate_prior=dict(rate_prior or {}), sid_levels=int(sid_levels))
        sid_counts: list[dict[str, int]] = [{} for _ in range(sid_levels)]
        moments: dict[str, list[np.ndarray]] = {}
        n_rows = 0
        for df in chunks:
            if not len(df):
                continue
            n_rows += len(df)
            for c in ("user_id", "item_id", "gender", "occupation"):
                _count_keys(counts[c], df[c])
            _count_keys(counts["genres"], (g for cats in df["categories"] if not _is_missing_list(cats) for g in cats))
            for acc, c in zip(sid_counts, semantic_id_columns(sid_levels)):
                codes = _numeric(df[c])
                _count_keys(acc, (str(int(v)) for v in codes[~np.isnan(codes)]))
            for entity in ("user", "item") if counter_windows is not None else ():
                x = enc._dense(df, entity, len(df)).astype(np.float64)
                m = moments.setdefault(entity, [np.zeros(x.shape[1]), np.zeros(x.shape[1])])
                m[0] += x.sum(axis=0)
                m[1] += (x * x).sum(axis=0)
        enc.users = _vocab_of(counts["user_id"], min_count)
        enc.items = _vocab_of(counts["item_id"], min_count)
        enc.genders, enc.occupations = _vocab_of(counts["gender"]), _vocab_of(counts["occupation"])
        enc.genres = _vocab_of(counts["genres"])
        # codes sorted as numbers, so the index order follows the code order (readable vocabularies)
        enc.sid_vocabs = [{k: i + 2 for i, k in enumerate(sorted(acc, key=int))} for acc in sid_counts]
        for entity, (s1, s2) in moments.items():
            mean = s1 / max(n_rows, 1)
            std = np.sqrt(np.maximum(s2 / max(n_rows, 1) - mean * mean, 0.0))
            enc.dense_mean[entity] = [float(v) for v in mean]
            enc.dense_std[entity] = [float(v) if v > 1e-6 else 1.0 for v in std]  # a constant input stays 0
        return enc

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureVectorizer":
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

    @property
    def sid_cardinalities(self) -> tuple[int, ...]:
        """Vocabulary size (incl. the 2 reserved) of each semantic-id level; () without semantic ids."""
        return tuple(len(v) + 2 for v in self.sid_vocabs[:self.sid_levels])

    @property
    def n_user_dense(self) -> int:
        """Width ``Du`` of ``user_dense`` (0 without counters)."""
        return 0 if self.counter_windows is None else len(dense_names("user", self.counter_windows))

    @property
    def n_item_dense(self) -> int:
        """Width ``Di`` of ``item_dense`` (0 without counters)."""
        return 0 if self.counter_windows is None else len(dense_names("item", self.counter_windows))

    # ---- transform --------------------------------------------------------------------------------
    #: feature columns every transform needs (user-level, then item-level); plus :meth:`counter_columns`
    USER_COLUMNS = ("user_id", "age", "gender", "occupation", "hist_item_ids")
    ITEM_COLUMNS = ("item_id", "categories")

    def user_columns(self) -> list[str]:
        """Every user-level column :meth:`transform_request` reads (the PPM cache columns are optional)."""
        return [*self.USER_COLUMNS, *self.counter_columns("user", self.counter_windows)]

    def item_columns(self) -> list[str]:
        """Every item-level column :meth:`transform_request` reads (``ppm_item_vec`` is optional)."""
        return [*self.ITEM_COLUMNS, *self.counter_columns("item", self.counter_windows),
                *semantic_id_columns(self.sid_levels)]

    def output_names(self) -> tuple[str, ...]:
        """The arrays :meth:`transform` returns, in order: the URM inputs, then ``item_sid`` with semantic ids."""
        return (*_OUTPUT_ORDER, *(("item_sid",) if self.sid_levels else ()))

    def transform(self, df: pd.DataFrame) -> dict[str, np.ndarray]:
        """Convert feature rows to model inputs (see module docstring for names, dtypes, shapes).

        Missing features (null from a point-in-time join before the first row, or an entity absent from
        the online store) become the cold-entity inputs, the same offline and online: OOV ids and side
        features, zero-impression counters, ``item_content`` 0 when the item's content rows are absent.
        Vectorized: the per-row work is a vocabulary ``dict`` lookup per id and one ``np.concatenate`` per
        list column (no per-element Python loop).

        Raises:
            KeyError: a required feature column is absent from ``df`` (the message names it).
            ValueError: a ``ppm_user_seq`` row is not ``L * d`` long (its row position is named).
        """
        for col in (*self.user_columns(), *self.item_columns()):
            if col not in df.columns:
                raise KeyError(f"feature column {col!r} missing; have {list(df.columns)}")
        out = self._encode_user(df, len(df))
        out.update(self._encode_item(df, len(df)))
        return {k: out[k] for k in self.output_names()}

    def transform_request(self, user: dict[str, Any] | pd.DataFrame, items: pd.DataFrame) -> dict[str, np.ndarray]:
        """Model inputs for one user x N candidate items in the batch form of :meth:`transform`: the user's
        inputs (:meth:`encode_user`, encoded **once**) broadcast (read-only views, no copy) to the ``N`` item
        rows (:meth:`encode_items`); ``transform_request(u, items)`` equals ``transform(items with u's columns
        repeated)`` exactly (tested). Serving feeds the unbroadcast halves to the broadcasting ONNX graph
        instead (:mod:`ppm_platform.serving.onnx_export`).

        Args:
            user: the user's feature values (:meth:`user_columns`, optional ``ppm_user_seq``/``ppm_seq_len``).
            items: N rows with :meth:`item_columns` (optional ``ppm_item_vec``).

        Returns:
            the dict of :meth:`transform` with batch size ``N``.

        Raises:
            KeyError / ValueError: as :meth:`transform`.
        """
        n = len(items)
        out = {k: np.broadcast_to(v, (n, *v.shape[1:])) for k, v in self.encode_user(user).items()}
        out.update(self.encode_items(items))
        return {k: out[k] for k in self.output_names()}

    def encode_user(self, user: dict[str, Any] | pd.DataFrame) -> dict[str, np.ndarray]:
        """The user-side model inputs (:data:`~ppm_platform.models.urm.USER_INPUT_NAMES`) of one user, batch 1.

        Args:
            user: a ``dict`` of feature values as returned by :func:`ppm_platform.feature_store.read_online_user`,
                or a 1-row DataFrame (:meth:`user_columns`; ``ppm_user_seq`` / ``ppm_seq_len`` optional).

        Raises:
            KeyError: a required column is absent (named). ValueError: not one row, or a wrong cache width.
        """
        # a dict of 1-element columns, not a DataFrame: building a frame costs more than encoding it
        ucols = user if isinstance(user, pd.DataFrame) else {k: [v] for k, v in user.items()}
        if isinstance(user, pd.DataFrame) and len(user) != 1:
            raise ValueError(f"encode_user takes one user row, got {len(user)}")
        for col in self.user_columns():
            if col not in ucols:
                raise KeyError(f"feature column {col!r} missing; have {list(ucols.keys())}")
        return self._encode_user(ucols, 1)

    def encode_items(self, items: pd.DataFrame) -> dict[str, np.ndarray]:
        """The item-side model inputs (:data:`~ppm_platform.models.urm.ITEM_INPUT_NAMES`) of ``N`` item rows.

        Raises:
            KeyError: a required column is absent (named). ValueError: a wrong cache width.
        """
        for col in self.item_columns():
            if col not in items:
                raise KeyError(f"feature column {col!r} missing; have {list(items.keys())}")
        return self._encode_item(items, len(items))

    def _dense(self, df: "pd.DataFrame | dict[str, list]", entity: str, n: int) -> np.ndarray:
        """Unstandardized dense counter inputs float32 ``[n, D]`` of ``entity`` (NULL counts = 0)."""
        windows = self.counter_windows
        if windows is None:
            return np.zeros((n, 0), np.float32)
        cols = []
        for s in counter_suffixes(windows):
            imp, clk, ordr = (np.nan_to_num(_numeric(df[f"{entity}_{f}{s}"])) for f in COUNT_FIELDS)
            m, p = self.rate_prior["strength"], self.rate_prior
            cols += [np.log1p(imp), np.log1p(clk), np.log1p(ordr),
                     (clk + m * p["click"]) / (imp + m), (ordr + m * p["order"]) / (imp + m)]
        return np.stack(cols, axis=1).astype(np.float32)

    def _standardized(self, df, entity: str, n: int) -> np.ndarray:
        x = self._dense(df, entity, n)
        if x.shape[1] == 0:
            return x
        mean = np.asarray(self.dense_mean[entity], np.float32)
        std = np.asarray(self.dense_std[entity], np.float32)
        return ((x - mean) / std).astype(np.float32)

    def _encode_user(self, df: "pd.DataFrame | dict[str, list]", n: int) -> dict[str, np.ndarray]:
        # df: a frame or a dict of equally long columns (n rows); ``col in df`` tests a column either way
        L, d = self.max_len, self.ppm_dim
        age = _numeric(df["age"])
        age_idx = np.where(np.isnan(age), OOV, np.searchsorted(AGE_BOUNDS, np.nan_to_num(age), side="right") + 2)
        out: dict[str, np.ndarray] = {
            "user_idx": _lookup(self.users, df["user_id"]),
            # a missing side feature (no profile row) is "unknown" (OOV), the input content dropout trains
            "user_side": np.stack([age_idx.astype(np.int64), _lookup(self.genders, df["gender"], OOV),
                                   _lookup(self.occupations, df["occupation"], OOV)], axis=1),
            "user_dense": self._standardized(df, "user", n),
        }
        rows, pos, flat = _flatten_lists(df["hist_item_ids"], L)
        hist = np.zeros((n, L), dtype=np.int64)
        hist[rows, pos] = _lookup(self.items, flat)
        out["hist_item_idx"] = hist
        out["hist_mask"] = (hist != PAD).astype(np.float32)
        seq = np.zeros((n, L, d), dtype=np.float32)
        seq_mask = np.zeros((n, L), dtype=np.float32)
        if d and "ppm_user_seq" in df:
            present = ~np.fromiter((_is_missing_list(v) for v in df["ppm_user_seq"]), dtype=bool, count=n)
            if present.any():
                vals = [np.asarray(v, dtype=np.float32).ravel() for v, p in zip(df["ppm_user_seq"], present) if p]
                sizes = np.fromiter((a.size for a in vals), dtype=np.int64, count=len(vals))
                if (sizes != L * d).any():
                    r = int(np.flatnonzero(present)[np.flatnonzero(sizes != L * d)[0]])
                    raise ValueError(f"row {r}: ppm_user_seq has {int(sizes[sizes != L * d][0])} values, "
                                     f"expected L*d = {L}*{d}")
                seq[present] = np.stack(vals).reshape(-1, L, d)
                lens = np.nan_to_num(_numeric(df["ppm_seq_len"])).astype(np.int64)
                lens = np.where(present, np.clip(lens, 0, L), 0)
                seq_mask = (np.arange(L)[None, :] < lens[:, None]).astype(np.float32)
        out["ppm_user_seq"], out["ppm_seq_mask"] = seq, seq_mask
        return out

    def _encode_item(self, df: pd.DataFrame, n: int) -> dict[str, np.ndarray]:
        d = self.ppm_dim
        out: dict[str, np.ndarray] = {"item_idx": _lookup(self.items, df["item_id"])}
        genres = np.zeros((n, self.n_genres), dtype=np.float32)
        rows, _, flat = _flatten_lists(df["categories"], None)
        if len(flat):
            j = np.fromiter((self.genres.get(str(g), -1) for g in flat), dtype=np.int64, count=len(flat))
            keep = j >= 0
            genres[rows[keep], j[keep] - 2] = 1.0
        out["item_genres"] = genres
        content = ~np.fromiter((_is_missing_list(v) for v in df["categories"]), dtype=bool, count=n)
        item_vec = np.zeros((n, d), dtype=np.float32)
        if d:
            has_vec = (~np.fromiter((_is_missing_list(v) for v in df["ppm_item_vec"]), dtype=bool, count=n)
                       if "ppm_item_vec" in df else np.zeros(n, bool))
            if has_vec.any():
                item_vec[has_vec] = np.stack([np.asarray(v, dtype=np.float32)
                                              for v, p in zip(df["ppm_item_vec"], has_vec) if p])
            content &= has_vec
        out["ppm_item_vec"] = item_vec
        out["item_content"] = content.astype(np.float32)
        out["item_dense"] = self._standardized(df, "item", n)
        if self.sid_levels:
            sid = np.full((n, self.sid_levels), OOV, dtype=np.int64)
            for j, c in enumerate(semantic_id_columns(self.sid_levels)):
                codes = _numeric(df[c])  # a null (no semantic-id row) or a code no train row had: OOV
                vocab = self.sid_vocabs[j]
                sid[:, j] = [OOV if np.isnan(v) else vocab.get(str(int(v)), OOV) for v in codes]
            out["item_sid"] = sid
        return out


def label_prior(click: np.ndarray, order: np.ndarray, strength: float) -> dict[str, float]:
    """The ``rate_prior`` of :meth:`FeatureVectorizer.fit_chunks` from the train rows' labels: their click and
    order rates and the prior ``strength`` (impressions). Empty labels give 0.5 / 0.5 (only tests fit on nothing)."""
    click, order = np.asarray(click, np.float64), np.asarray(order, np.float64)
    return {"click": float(click.mean()) if click.size else 0.5,
            "order": float(order.mean()) if order.size else 0.5, "strength": float(strength)}


_OUTPUT_ORDER = ("user_idx", "item_idx", "user_side", "item_genres", "item_content", "user_dense", "item_dense",
                 "hist_item_idx", "hist_mask", "ppm_user_seq", "ppm_seq_mask", "ppm_item_vec")


def _to_float(v: Any) -> float:
    if v is None or v is pd.NA:
        return np.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return np.nan


def _numeric(values: Any) -> np.ndarray:
    """float64 array of ``values`` (a Series or a list); None / NA / non-numeric -> NaN. A short list (the
    serving path's one user row) is converted element by element: a pandas Series per column cost more than
    the rest of the request's encoding."""
    if not isinstance(values, pd.Series) and len(values) <= 64:
        return np.fromiter((_to_float(v) for v in values), dtype=float, count=len(values))
    s = values if isinstance(values, pd.Series) else pd.Series(list(values), dtype=object)
    return pd.to_numeric(s, errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def _flatten_lists(col: Iterable[Any], max_len: int | None) -> tuple[np.ndarray, np.ndarray, list]:
    """Flatten a column of lists (None/NaN = empty) truncated to ``max_len``: (row index, position, values)."""
    parts = [[] if _is_missing_list(v) else list(v)[:max_len] for v in col]
    lens = np.fromiter((len(p) for p in parts), dtype=np.int64, count=len(parts))
    rows = np.repeat(np.arange(len(parts), dtype=np.int64), lens)
    starts = np.repeat(np.cumsum(lens) - lens, lens)
    pos = np.arange(len(rows), dtype=np.int64) - starts
    flat = [x for p in parts for x in p]
    return rows, pos, flat


def _is_missing_list(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, float):
        return bool(np.isnan(v))
    return False
