"""Semantic ids: a few discrete codes per item from its frozen content vector, which the ranker embeds and
trains like ordinary ids (``item_semantic_id``).

Why: the frozen PPM item vector (or the ME feature) was trained for another objective and the ranker's
gradient never reaches it. Quantizing it into codes gives the ranker trainable inputs that items with similar
content share, so a cold item inherits what was learned on warm items with its codes (QARM, Kuaishou CIKM'25;
the WWW'25 multimodal CTR challenge winner did the same).

Quantizer: residual k-means (the residual quantization of TIGER / RQ-VAE, Rajput et al., NeurIPS'23, with
k-means per level in place of a learned VAE, as QARM does): level 1 clusters the vectors into ``K``
centroids, level 2 clusters what level 1 left (``x - C1[code1]``), and so on for ``L`` levels. Codes are
assigned greedily level by level from the stored float32 centroids only (:meth:`Codebook.assign`), so the
Spark job, the fit and the new-item push give the same codes for the same vector.

* fit (the library, on the driver): on the source vectors of the **train-window** items (items with an event
  before the validation cut), so validation / test items that launched later are coded exactly as a new item
  would be, from centroids they did not shape;
* assignment (Spark ``mapInPandas``, as the PPM caches): every catalog item, stamped with its source row's
  ``event_timestamp`` (the content's time: point-in-time joins see the codes when they see the vector);
* storage: the codebook folder (``centroids.npz`` + ``codebook.json``; no pickle) of the catalog artifact
  ``semantic_id_codebook``, read again by :mod:`ppm_platform.serving.new_item`.

Version rule: ``sid_version`` = hash of the centroids and of the version of the vectors they were fitted on
(the ``ppm_version`` for ``source="ppm"``, the ``encoder_version`` for ``"me"``), so a refit (new centroids)
or a new PPM gives a new ``sid_version`` even when the codes happen to coincide; a URM trained on codes of
one version is refused by serving against rows of another (:mod:`ppm_platform.serving.ranker`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from ppm_platform.config import Settings
from ppm_platform.data.schemas import semantic_id_columns, semantic_id_schema

log = logging.getLogger("ppm_platform.features")

CENTROIDS_FILE, CODEBOOK_FILE = "centroids.npz", "codebook.json"
#: the version column of each source table (the codebook's ``source_version`` is its one value)
SOURCE_TABLES = {"ppm": ("ppm_item_cache", "ppm_item_version"), "me": ("item_multimodal", "encoder_version")}


def sid_version_for(centroids: np.ndarray, source: str, source_version: str | None) -> str:
    """THE ``sid_version``: 12 hex chars of SHA-256 over the float32 centroids' bytes and shape, the source kind
    and the source vectors' version (``ppm_version`` or ``encoder_version``)."""
    c = np.ascontiguousarray(centroids, dtype=np.float32)
    h = hashlib.sha256()
    h.update(f"{c.shape}|{source}|{source_version}".encode())
    h.update(c.tobytes())
    return h.hexdigest()[:12]


def assign_codes(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Greedy residual assignment: per level the nearest centroid (squared L2) of what the previous levels left.

    Args:
        x: float32 ``[N, d]`` vectors. centroids: float32 ``[L, K, d]``.

    Returns:
        int64 ``[N, L]`` codes in ``[0, K)``.

    Raises:
        ValueError: ``x``'s width is not the centroids' ``d``.
    """
    c = np.asarray(centroids, dtype=np.float32)
    r = np.array(x, dtype=np.float32, copy=True)
    if r.ndim != 2 or r.shape[1] != c.shape[2]:
        raise ValueError(f"vectors of shape {r.shape} but the codebook has width d={c.shape[2]}")
    codes = np.zeros((len(r), c.shape[0]), dtype=np.int64)
    for lvl in range(c.shape[0]):
        cl = c[lvl]
        # ||r - c||^2 = ||r||^2 - 2 r.c + ||c||^2; ||r||^2 is the same for every centroid of a row
        dist = (cl * cl).sum(axis=1)[None, :] - 2.0 * (r @ cl.T)
        codes[:, lvl] = np.argmin(dist, axis=1)
        r -= cl[codes[:, lvl]]
    return codes


def reconstruct(codes: np.ndarray, centroids: np.ndarray, levels: int | None = None) -> np.ndarray:
    """The vectors the first ``levels`` codes stand for: ``sum_l C_l[code_l]``, float32 ``[N, d]``."""
    c = np.asarray(centroids, dtype=np.float32)
    n = c.shape[0] if levels is None else int(levels)
    out = np.zeros((len(codes), c.shape[2]), dtype=np.float32)
    for lvl in range(n):
        out += c[lvl][np.asarray(codes)[:, lvl]]
    return out


def fit_residual_kmeans(x: np.ndarray, levels: int, k: int, seed: int = 0, n_init: int = 4) -> np.ndarray:
    """Fit ``levels`` levels of ``k`` centroids by k-means on the residuals (scikit-learn ``KMeans``, seeded:
    the same vectors give the same centroids).

    Args:
        x: float32 ``[N, d]`` vectors (the train-window items). levels: L >= 1. k: K >= 1 (capped at the number of
            distinct residuals of a level; unused slots repeat the last centroid, so codes stay in ``[0, K)``).

    Returns:
        float32 ``[L, K, d]`` centroids.

    Raises:
        ValueError: no vectors, ``levels < 1`` or ``k < 1``.
    """
    from sklearn.cluster import KMeans

    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"residual k-means needs a non-empty [N, d] matrix, got shape {x.shape}")
    if levels < 1 or k < 1:
        raise ValueError(f"levels and k must be >= 1, got {levels}, {k}")
    cents = np.zeros((levels, k, x.shape[1]), dtype=np.float32)
    r = x.copy()
    for lvl in range(levels):
        n_distinct = len(np.unique(r.round(6), axis=0))
        kk = max(1, min(k, n_distinct))
        km = KMeans(n_clusters=kk, random_state=seed + lvl, n_init=n_init).fit(r.astype(np.float64))
        c = km.cluster_centers_.astype(np.float32)
        cents[lvl, :kk] = c
        cents[lvl, kk:] = c[-1]  # never nearer than the slot it copies: argmin picks the first of equals
        # the residual from the stored float32 centroids, exactly as assign_codes computes it later
        r -= cents[lvl][assign_codes(r, cents[lvl:lvl + 1])[:, 0]]
    return cents


@dataclass(frozen=True)
class Codebook:
    """Fitted residual k-means centroids and where they came from.

    Attributes:
        centroids: float32 ``[L, K, d]``.
        source: ``ppm`` (PPM item vectors) or ``me`` (ME features).
        source_version: the ``ppm_version`` / ``encoder_version`` of the vectors it was fitted on.
        fitted_items: how many (train-window) items the fit saw.
    """

    centroids: np.ndarray
    source: str
    source_version: str | None
    fitted_items: int = 0

    @property
    def levels(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def size(self) -> int:
        """K, centroids per level (codes are in ``[0, K)``)."""
        return int(self.centroids.shape[1])

    @property
    def dim(self) -> int:
        return int(self.centroids.shape[2])

    @functools.cached_property
    def sid_version(self) -> str:
        return sid_version_for(self.centroids, self.source, self.source_version)

    def assign(self, x: np.ndarray) -> np.ndarray:
        """int64 ``[N, L]`` codes of float32 ``[N, d]`` vectors (:func:`assign_codes`)."""
        return assign_codes(x, self.centroids)

    def to_json(self) -> dict:
        return {"levels": self.levels, "codebook_size": self.size, "dim": self.dim, "source": self.source,
                "source_version": self.source_version, "fitted_items": self.fitted_items,
                "sid_version": self.sid_version, "centroids_file": CENTROIDS_FILE}

    def save(self, folder: Path) -> Path:
        """Write ``centroids.npz`` + ``codebook.json`` to ``folder``, replacing it whole (a reader sees the old
        or the new codebook, never a mix). Returns ``folder``."""
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:8]}.tmp")
        tmp.mkdir()
        try:
            np.savez(tmp / CENTROIDS_FILE, centroids=np.ascontiguousarray(self.centroids, np.float32))
            (tmp / CODEBOOK_FILE).write_text(json.dumps(self.to_json(), indent=2))
            old = folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:8]}.old")
            if folder.exists():
                os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return folder

    @classmethod
    def load(cls, folder: Path) -> "Codebook":
        """Read a saved codebook (no pickle: ``allow_pickle=False``).

        Raises:
            FileNotFoundError: no codebook in ``folder``. ValueError: its recorded ``sid_version`` is not that of
                its centroids (a partial or edited codebook).
        """
        folder = Path(folder)
        if not (folder / CODEBOOK_FILE).exists():
            raise FileNotFoundError(f"{folder} holds no semantic-id codebook: materialize 'item_semantic_id' first")
        meta = json.loads((folder / CODEBOOK_FILE).read_text())
        with np.load(folder / CENTROIDS_FILE, allow_pickle=False) as z:
            cents = z["centroids"].astype(np.float32)
        cb = cls(cents, meta["source"], meta.get("source_version"), int(meta.get("fitted_items", 0)))
        if meta.get("sid_version") != cb.sid_version:
            raise ValueError(f"{folder}: codebook.json records sid_version {meta.get('sid_version')} but its centroids "
                             f"hash to {cb.sid_version}")
        return cb


# ---- source vectors ----------------------------------------------------------------------------------------------
def source_vectors(rows: pd.DataFrame, source: str) -> np.ndarray:
    """The vectors a codebook of ``source`` quantizes, float32 ``[N, d]``, row order kept: ``ppm_item_vec`` of
    ``ppm_item_cache`` rows, or the ME feature (:func:`~ppm_platform.features.item_multimodal.me_matrix`) of
    ``item_multimodal`` rows.

    Raises:
        ValueError: an unknown source, or vectors of different widths.
    """
    if source == "ppm":
        vals = [np.asarray(v, dtype=np.float32) for v in rows["ppm_item_vec"]]
        if len({v.shape for v in vals}) > 1:
            raise ValueError("ppm_item_vec rows have different widths")
        return np.stack(vals) if vals else np.zeros((0, 0), np.float32)
    if source == "me":
        from ppm_platform.features.item_multimodal import me_matrix

        return me_matrix(rows)[1]
    raise ValueError(f"unknown semantic-id source {source!r}; choose from {sorted(SOURCE_TABLES)}")


def _one_version(values: pd.Series, what: str) -> str | None:
    vs = sorted(values.dropna().astype(str).unique())
    if len(vs) > 1:
        raise ValueError(f"{what} holds {len(vs)} versions {vs[:4]}: one codebook quantizes one feature space")
    return vs[0] if vs else None


def train_window_items(settings: Settings, interactions_path: Path) -> set[int]:
    """Items with at least one event before the validation cut (:func:`~ppm_platform.data.split.settings_cutoffs`)."""
    from ppm_platform.data.split import settings_cutoffs

    inter = pd.read_parquet(interactions_path, columns=["item_id", "event_timestamp"])
    if inter.empty:
        return set()
    valid_start, _ = settings_cutoffs(inter["event_timestamp"], settings)
    return set(inter.loc[inter["event_timestamp"] < valid_start, "item_id"].astype("int64").tolist())


def fit_codebook(settings: Settings, source_rows: pd.DataFrame, fit_items: set[int] | None) -> Codebook:
    """The codebook of ``settings.semantic_ids`` fitted on the ``source_rows`` of ``fit_items`` (all rows when
    None or when none of them has a row).

    Raises:
        ValueError: the source rows hold several versions, or no rows.
    """
    sc = settings.semantic_ids
    table, vcol = SOURCE_TABLES[sc.source]
    version = _one_version(source_rows[vcol], table)
    rows = source_rows
    if fit_items is not None:
        sub = source_rows[source_rows["item_id"].isin(fit_items)]
        rows = sub if len(sub) else source_rows
    x = source_vectors(rows, sc.source)
    cents = fit_residual_kmeans(x, sc.levels, sc.codebook_size, sc.seed, sc.n_init)
    return Codebook(cents, sc.source, version, len(rows))


def codebook_quality(cb: Codebook, x: np.ndarray) -> dict:
    """Figures of a codebook on vectors ``x``: relative reconstruction error after each level
    (``||x - x_hat_l||^2 / ||x - mean(x)||^2``), distinct codes used per level, distinct full code tuples and
    the largest number of items sharing one tuple."""
    codes = cb.assign(x)
    denom = float(((x - x.mean(axis=0)) ** 2).sum()) or 1.0
    rel = [round(float(((x - reconstruct(codes, cb.centroids, lvl + 1)) ** 2).sum()) / denom, 4)
           for lvl in range(cb.levels)]
    tuples = pd.Series(map(tuple, codes)).value_counts()
    return {"relative_error_by_level": rel, "codes_used_by_level": [int(len(np.unique(codes[:, i])))
                                                                     for i in range(cb.levels)],
            "distinct_ids": int(len(tuples)), "max_items_per_id": int(tuples.iloc[0]) if len(tuples) else 0}


# ---- assignment (Spark) -----------------------------------------------------------------------------------------
_LOCK = threading.Lock()
_CODEBOOKS: dict[tuple, Codebook] = {}


def get_codebook(folder: Path, sid_version: str | None = None) -> Codebook:
    """The codebook of ``folder``, loaded once per process per (folder, mtime).

    Raises:
        ValueError: it is not of ``sid_version`` (the codebook was replaced while a job ran).
    """
    folder = Path(folder).resolve()
    key = (str(folder), (folder / CODEBOOK_FILE).stat().st_mtime_ns)
    with _LOCK:
        if key not in _CODEBOOKS:
            _CODEBOOKS.clear()
            _CODEBOOKS[key] = Codebook.load(folder)
        cb = _CODEBOOKS[key]
    if sid_version is not None and cb.sid_version != sid_version:
        raise ValueError(f"{folder}: holds sid_version {cb.sid_version}, the job expected {sid_version}")
    return cb


def code_frame(rows: pd.DataFrame, cb: Codebook) -> pd.DataFrame:
    """Source rows -> ``item_semantic_id`` rows (``item_id``, ``event_timestamp`` of the row, ``sid_1..sid_L``
    int64, ``sid_version``).

    Raises:
        ValueError: a row's source version is not the codebook's (codes would mean nothing), or a width mismatch.
    """
    table, vcol = SOURCE_TABLES[cb.source]
    if vcol in rows and (bad := set(rows[vcol].dropna().astype(str)) - {cb.source_version}):
        raise ValueError(f"{table} rows of version(s) {sorted(bad)} but the codebook {cb.sid_version} was fitted on "
                         f"{cb.source_version}: refit it (materialize item_semantic_id)")
    codes = cb.assign(source_vectors(rows, cb.source)) if len(rows) else np.zeros((0, cb.levels), np.int64)
    out = pd.DataFrame({"item_id": rows["item_id"].to_numpy(dtype=np.int64),
                        "event_timestamp": rows["event_timestamp"].to_numpy()})
    for i, c in enumerate(semantic_id_columns(cb.levels)):
        out[c] = codes[:, i]
    out["sid_version"] = cb.sid_version
    return out


def _assign_partition(batches: Iterator[pd.DataFrame], folder: str, sid_version: str) -> Iterator[pd.DataFrame]:
    from ppm_platform.features.spark import worker_logger

    logger = worker_logger()
    cb = get_codebook(Path(folder), sid_version)
    for pdf in batches:
        if pdf.empty:
            continue
        t0 = time.perf_counter()
        out = code_frame(pdf, cb)
        logger.debug("item_semantic_id: %d items in %.3f s", len(out), time.perf_counter() - t0)
        yield out


def compute_item_semantic_id(spark, settings: Settings, source_path: Path, interactions_path: Path,
                             codebook_dir: Path, out_path: Path) -> dict:
    """Fit the codebook on the train-window items (driver), save it to ``codebook_dir``, then code every row of
    the source table in Spark -> ``out_path`` (``item_semantic_id``, sorted by item_id).

    Args:
        source_path: ``ppm_item_cache`` (``semantic_ids.source = "ppm"``) or ``item_multimodal`` (``"me"``).

    Returns:
        ``{"rows", "seconds", "sid_version", "source", "source_version", "levels", "codebook_size",
        "fitted_items", "relative_error_by_level", "codes_used_by_level", "distinct_ids", "max_items_per_id"}``
        (quality figures on the fitted items).

    Raises:
        ValueError: the source holds several versions.
    """
    from ppm_platform.features.spark import default_partitions, write_consolidated

    t0 = time.perf_counter()
    sc = settings.semantic_ids
    table, vcol = SOURCE_TABLES[sc.source]
    cols = (["item_id", "event_timestamp", "ppm_item_vec", vcol] if sc.source == "ppm" else
            ["item_id", "event_timestamp", "text_emb", "image_emb", "has_image", vcol])
    rows = pq.read_table(source_path, columns=cols).to_pandas()
    fit_items = train_window_items(settings, interactions_path)
    cb = fit_codebook(settings, rows, fit_items)
    cb.save(codebook_dir)
    fitted = rows[rows["item_id"].isin(fit_items)] if fit_items else rows
    quality = codebook_quality(cb, source_vectors(fitted if len(fitted) else rows, sc.source))
    del rows
    levels = cb.levels
    schema = ("item_id bigint, event_timestamp timestamp, "
              + ", ".join(f"{c} bigint" for c in semantic_id_columns(levels)) + ", sid_version string")
    src = spark.read.parquet(str(source_path)).select(*cols)
    out = src.repartition(default_partitions(spark)).mapInPandas(
        functools.partial(_assign_partition, folder=str(Path(codebook_dir).resolve()), sid_version=cb.sid_version),
        schema=schema)
    written = write_consolidated(out, out_path, semantic_id_schema(levels), ["item_id"])
    secs = time.perf_counter() - t0
    res = {"rows": written.num_rows, "seconds": round(secs, 3), "sid_version": cb.sid_version, "source": cb.source,
           "source_version": cb.source_version, "levels": levels, "codebook_size": cb.size,
           "fitted_items": cb.fitted_items, **quality}
    log.info("item_semantic_id: %s", res)
    return res


def semantic_id_table_quality(path: Path, levels: int, codebook_size: int, item_ids=None) -> dict:
    """The checks of an ``item_semantic_id`` table: every code in ``[0, K)`` and non-null, one item per row, every
    item of ``item_ids`` coded (when given), one non-null ``sid_version``.

    Returns:
        ``{"rows", "passed", "problems": [str], "sid_versions": {version: rows}, "uncoded_items"}``.
    """
    df = pd.read_parquet(path)
    problems: list[str] = []
    cols = semantic_id_columns(levels)
    if missing := [c for c in [*cols, "sid_version"] if c not in df.columns]:
        problems.append(f"missing column(s) {missing}")
    else:
        for c in cols:
            bad = df[c].isna() | (df[c] < 0) | (df[c] >= codebook_size)
            if bad.any():
                problems.append(f"{int(bad.sum())} {c} value(s) outside [0, {codebook_size})")
    if df.empty:
        problems.append("no rows")
    if df["item_id"].duplicated().any():
        problems.append(f"{int(df['item_id'].duplicated().sum())} duplicate item_id row(s)")
    versions = {str(k): int(v) for k, v in df.get("sid_version", pd.Series(dtype=object)).value_counts().items()}
    if len(versions) != 1 or df.get("sid_version", pd.Series([None])).isna().any():
        problems.append(f"sid_version must be one non-null value, got {versions}")
    uncoded = 0
    if item_ids is not None:
        uncoded = len(set(int(i) for i in item_ids) - set(df["item_id"].astype("int64").tolist()))
        if uncoded:
            problems.append(f"{uncoded} catalog item(s) without a semantic id")
    return {"rows": int(len(df)), "passed": not problems, "problems": problems, "sid_versions": versions,
            "uncoded_items": uncoded}
