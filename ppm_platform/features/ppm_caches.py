"""Spark jobs: the frozen PPM caches ``ppm_item_cache`` and ``ppm_user_cache`` (DESIGN.md §4).

* ``ppm_item_cache`` (item): ``ppm_item_vec = PPM.encode_items(ME)`` (``d`` floats), stamped with the item's
  ``item_multimodal`` timestamp.
* ``ppm_user_cache`` (user, as-of time): for each ``behavior_sequences`` row, the history's cached item vectors
  padded to ``L`` (most recent first, left aligned, see :func:`pad_history`) go through
  ``PPM.encode_sequence`` with the row's ages and mask; the ``[L, d]`` output is stored flattened row-major as
  ``ppm_user_seq`` (``L*d`` floats, exactly zero at padded positions), with ``ppm_seq_len`` valid positions.
  The row keeps the sequence row's ``event_timestamp`` (already ``t + AS_OF_DELAY``: the leakage rule holds).

Both run in ``mapInPandas``; each Spark Python worker loads the PPM once (cache keyed by model folder and
``ppm_version``) and, for the user cache, the small items x d vector table once. Every row carries the
``ppm_version`` that produced it (version rule); the user cache refuses item vectors of another version.

Versions (DESIGN.md §4 version rule): a cache vector means something only for the PPM
weights that computed it AND the encoders of the ME features it was computed from, so ``ppm_version`` covers
both: :func:`ppm_version_for` (the one place it is computed) of the PPM's weights hash and an encoder
version. The PPM's own ``ppm_version`` uses the encoders it was pre-trained on (``model.json`` metadata
``encoder_version``); an item cache row uses the ``encoder_version`` of the ``item_multimodal`` row it encodes.
They are equal exactly when the ME features come from the encoders the PPM was trained on; ME features of
re-fine-tuned encoders give rows of another version, which the user cache, the URM trainer and serving refuse.
"""

from __future__ import annotations

from datetime import date

import functools
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ppm_platform.config import Settings
from ppm_platform.data.schemas import PPM_ITEM_CACHE, PPM_USER_CACHE
from ppm_platform.features.item_multimodal import me_matrix
from ppm_platform.features.spark import default_partitions, worker_logger, write_consolidated, write_day_folders

log = logging.getLogger("ppm_platform.features")

_ITEM_SCHEMA = "item_id bigint, event_timestamp timestamp, ppm_item_vec array<float>, ppm_item_version string"
_USER_SCHEMA = ("user_id bigint, event_timestamp timestamp, ppm_user_seq array<float>, ppm_seq_len bigint, "
                "ppm_user_version string")
#: item id used at padded history positions by :func:`pad_history` (never a real id lookup: masked out)
PAD_ITEM_ID = -1


# ---- shared helpers (also for PPM training / serving) -------------------------------------------------------
def pad_history(hist_item_ids: Sequence, hist_age_s: Sequence, max_len: int,
                pad_id: int = PAD_ITEM_ID) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pad/truncate variable-length histories (most recent first) to a fixed ``max_len``, left aligned.

    Position 0 is the most recent behaviour; a history longer than ``max_len`` keeps its ``max_len`` most
    recent entries. ``None`` (or NaN) histories count as empty.

    Args:
        hist_item_ids: B sequences of item ids (``behavior_sequences.hist_item_ids``).
        hist_age_s: B sequences of ages in seconds, same lengths as ``hist_item_ids``.
        max_len: L.
        pad_id: id written at padded positions.

    Returns:
        ``(ids int64 [B, L], ages float32 [B, L] (0 at padding), mask float32 [B, L] (1 = valid))`` -- the
        mask convention of :mod:`ppm_platform.models.layers`.

    Raises:
        ValueError: ids and ages of a row have different lengths, or ``max_len < 1``.
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    B = len(hist_item_ids)
    if len(hist_age_s) != B:
        raise ValueError(f"{B} id sequences but {len(hist_age_s)} age sequences")
    ids = np.full((B, max_len), pad_id, dtype=np.int64)
    ages = np.zeros((B, max_len), dtype=np.float32)
    mask = np.zeros((B, max_len), dtype=np.float32)
    for r, (h, a) in enumerate(zip(hist_item_ids, hist_age_s)):
        if h is None or h is pd.NA or (isinstance(h, float) and np.isnan(h)):
            continue
        h = np.asarray(h, dtype=np.int64)
        a = np.asarray(a, dtype=np.float32)
        if h.shape != a.shape:
            raise ValueError(f"row {r}: {h.shape[0]} item ids but {a.shape[0]} ages")
        k = min(len(h), max_len)
        ids[r, :k] = h[:k]
        ages[r, :k] = a[:k]
        mask[r, :k] = 1.0
    return ids, ages, mask


class ItemVectorTable:
    """An in-memory ``item_id -> vector`` table (sorted ids + ``[N, d]`` matrix) with batched lookup."""

    def __init__(self, item_ids: np.ndarray, vectors: np.ndarray):
        item_ids = np.asarray(item_ids, dtype=np.int64)
        order = np.argsort(item_ids, kind="stable")
        self.ids = item_ids[order]
        if len(self.ids) > 1 and (np.diff(self.ids) == 0).any():
            dup = self.ids[1:][np.diff(self.ids) == 0][:5].tolist()
            raise ValueError(f"duplicate item ids in the vector table: {dup}")
        self.vectors = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32)[order])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return len(self.ids)

    def lookup(self, ids: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Vectors of ``ids`` (any shape ``S``) -> float32 ``[*S, d]``; positions with ``mask == 0`` get zeros.

        Raises:
            KeyError: a (valid) id is not in the table; the message lists the unknown ids.
        """
        ids = np.asarray(ids, dtype=np.int64)
        valid = np.ones(ids.shape, dtype=bool) if mask is None else np.asarray(mask) > 0
        if len(self.ids):
            pos_c = np.minimum(np.searchsorted(self.ids, ids), len(self.ids) - 1)
            found = self.ids[pos_c] == ids
        else:
            pos_c, found = np.zeros(ids.shape, np.int64), np.zeros(ids.shape, bool)
        bad = valid & ~found
        if bad.any():
            raise KeyError(f"item id(s) not in the item vector table: {sorted(set(ids[bad].tolist()))[:20]}")
        out = np.zeros((*ids.shape, self.dim), dtype=np.float32)
        out[valid] = self.vectors[pos_c[valid]]
        return out

    @classmethod
    def from_parquet(cls, path: Path, id_col: str = "item_id", vec_col: str = "ppm_item_vec") -> "ItemVectorTable":
        table = pq.read_table(path, columns=[id_col, vec_col])
        col = table.column(vec_col).combine_chunks()
        n = table.num_rows
        flat = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        d = len(flat) // n if n else 0
        if n and (pc.list_value_length(col).to_numpy() != d).any():
            raise ValueError(f"{path}: {vec_col} rows have different lengths")
        return cls(table.column(id_col).to_numpy(), flat.reshape(n, d))


def ppm_version_for(weights_version: str, encoder_version: str | None) -> str:
    """THE ``ppm_version`` (see the module docstring): the feature space of PPM cache vectors computed by PPM
    weights ``weights_version`` (:func:`~ppm_platform.model_store.model_version`) from ME features of
    encoders ``encoder_version`` (``item_multimodal.encoder_version``, ``"<text>|<image>"``).

    Returns:
        12 hex chars of SHA-256 of ``"<weights_version>|<encoder_version>"``; ``weights_version`` itself
        when ``encoder_version`` is None (a PPM saved without the encoders it was trained on; no ME row has a
        null encoder version, so its cache rows never match it).
    """
    import hashlib

    if encoder_version is None:
        return str(weights_version)
    return hashlib.sha256(f"{weights_version}|{encoder_version}".encode()).hexdigest()[:12]


def weights_version_of(model_dir: Path) -> str:
    """The weights hash of a saved PPM folder (``model.json`` ``version``; no weights loaded).

    Raises:
        ValueError: ``model.json`` records no version.
    """
    from ppm_platform.model_store import read_model_json

    v = read_model_json(Path(model_dir)).get("version")
    if not v:
        raise ValueError(f"{model_dir}: model.json records no weights version")
    return str(v)


def ppm_version_of(model_dir: Path) -> str:
    """The ``ppm_version`` of a saved PPM folder, read from its ``model.json`` (no weights loaded):
    :func:`ppm_version_for` of its weights hash and the ``encoder_version`` it was pre-trained on (metadata),
    checked against ``metadata["ppm_version"]`` when that is recorded.

    Raises:
        ValueError: ``model.json`` records no weights version, or a ``metadata["ppm_version"]`` that is not
            that of its weights and encoders (e.g. a PPM saved before ``ppm_version`` covered the encoders).
    """
    from ppm_platform.model_store import read_model_json

    doc = read_model_json(Path(model_dir))
    meta = doc.get("metadata") or {}
    weights_v, enc_v = weights_version_of(model_dir), meta.get("encoder_version")
    v = ppm_version_for(weights_v, enc_v)
    if meta.get("ppm_version") and meta["ppm_version"] != v:
        raise ValueError(f"{model_dir}: metadata ppm_version {meta['ppm_version']} is not the version {v} of its "
                         f"weights {weights_v} with the encoders it was trained on ({enc_v}); a PPM saved before "
                         "ppm_version covered the encoders: retrain it (the ppm_model asset)")
    return v


_LOCK = threading.Lock()
_PPM_CACHE: dict[tuple[str, str], object] = {}
_VEC_CACHE: dict[tuple, ItemVectorTable] = {}


def get_ppm(model_dir: Path, ppm_version: str):
    """The PPM of ``model_dir`` (eval mode), loaded once per process per (folder, version).

    Raises:
        ValueError: the folder now holds another version than the driver planned with.
    """
    from ppm_platform.model_store import load_ppm

    key = (str(Path(model_dir).resolve()), ppm_version)
    with _LOCK:
        if key not in _PPM_CACHE:
            model, _ = load_ppm(Path(model_dir))
            got = ppm_version_of(model_dir)
            if got != ppm_version:
                raise ValueError(f"{model_dir}: holds ppm_version {got}, job expected {ppm_version} "
                                 "(model replaced while the job ran?)")
            model.eval()
            _PPM_CACHE.clear()  # keep one model per worker
            _PPM_CACHE[key] = model
        return _PPM_CACHE[key]


def get_item_vectors(path: Path, ppm_version: str) -> ItemVectorTable:
    """The ``ppm_item_cache`` vector table, loaded once per process per (file, mtime, size, version).

    Raises:
        ValueError: the file holds vectors of another ``ppm_version`` (version rule).
    """
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_mtime_ns, st.st_size, ppm_version)
    with _LOCK:
        if key not in _VEC_CACHE:
            check_item_cache_version(p, ppm_version)
            _VEC_CACHE.clear()
            _VEC_CACHE[key] = ItemVectorTable.from_parquet(p)
        return _VEC_CACHE[key]


# ---- item cache --------------------------------------------------------------------------------------------------
#: why an item cache can hold another version than the PPM, and what to do (the refusals' advice)
_ITEM_CACHE_ADVICE = ("it was computed by another PPM, or from ME features of other encoders than the PPM was "
                      "trained on (item_multimodal rebuilt after re-fine-tuning an encoder?): retrain the PPM on "
                      "the current item_multimodal (ppm_model) and recompute ppm_item_cache")


def check_item_cache_version(path: Path, ppm_version: str, expected_by: str | None = None) -> None:
    """Refuse an item cache whose rows are not all of ``ppm_version`` (version rule): the one check before the
    user cache encodes sequences from its vectors (on the driver, and again in each worker that loads it).

    Args:
        path: the ``ppm_item_cache`` parquet; expected_by: who expects the version, for the message.

    Raises:
        ValueError: a row holds another version (names them and :data:`_ITEM_CACHE_ADVICE`).
    """
    versions = set(pq.read_table(path, columns=["ppm_item_version"]).column("ppm_item_version").unique().to_pylist())
    if versions - {ppm_version}:
        want = f"{expected_by} is {ppm_version}" if expected_by else f"expected {ppm_version}"
        raise ValueError(f"{path}: ppm_item_cache holds ppm_version(s) {sorted(versions)}, {want}; {_ITEM_CACHE_ADVICE}")


def encode_item_frame(pdf: pd.DataFrame, ppm, weights_version: str) -> pd.DataFrame:
    """item_multimodal rows -> PPM_ITEM_CACHE rows (``ppm_item_vec = ppm.encode_items(me_matrix(rows))``),
    each stamped ``ppm_item_version = ppm_version_for(weights_version, row's encoder_version)``.

    Args:
        pdf: item_multimodal rows (``item_id``, ``event_timestamp``, ``text_emb``, ``image_emb``,
            ``has_image``, ``encoder_version``).
        ppm: the PPM; weights_version: its weights hash (:func:`weights_version_of`).

    Raises:
        KeyError: ``pdf`` has no ``encoder_version`` column. ValueError: the ME width is not the PPM's ``me_dim``.
    """
    import torch

    if "encoder_version" not in pdf.columns:
        raise KeyError("item_multimodal rows lack the encoder_version column (the item cache version covers it)")
    ids, me = me_matrix(pdf)
    if me.shape[1] != ppm.cfg.me_dim:
        raise ValueError(f"ME features have {me.shape[1]} dims but the PPM expects me_dim={ppm.cfg.me_dim}")
    with torch.inference_mode():
        vec = ppm.encode_items(torch.from_numpy(me)).float().numpy()
    by_encoder = {e: ppm_version_for(weights_version, None if e is None or e is pd.NA else str(e))
                  for e in pd.unique(pdf["encoder_version"])}
    return pd.DataFrame({"item_id": ids, "event_timestamp": pdf["event_timestamp"].to_numpy(),
                         "ppm_item_vec": list(vec),
                         "ppm_item_version": pdf["encoder_version"].map(by_encoder).to_numpy(dtype=object)})


def _item_partition(batches: Iterator[pd.DataFrame], settings: Settings, model_dir: str,
                    ppm_version: str, weights_version: str) -> Iterator[pd.DataFrame]:
    from ppm_platform.encoders import configure_worker_threads

    configure_worker_threads(settings)
    logger = worker_logger()
    ppm = get_ppm(Path(model_dir), ppm_version)
    for pdf in batches:
        if pdf.empty:
            continue
        t0 = time.perf_counter()
        out = encode_item_frame(pdf, ppm, weights_version)
        logger.debug("ppm_item_cache: %d items in %.3f s", len(out), time.perf_counter() - t0)
        yield out


def compute_ppm_item_cache(spark, settings: Settings, item_multimodal_path: Path, ppm_model_dir: Path,
                           out_path: Path) -> dict:
    """Frozen PPM item tower over every ``item_multimodal`` row -> ``out_path`` (PPM_ITEM_CACHE, sorted by
    item_id). Each row's ``ppm_item_version`` covers the PPM's weights and the row's encoder version
    (:func:`encode_item_frame`): the PPM's ``ppm_version`` when the ME features come from the encoders it was
    trained on, another version (logged as a warning; refused downstream) when they do not.

    Returns:
        ``{"rows", "seconds", "rows_per_s", "ppm_version", "cache_versions"}``: the PPM's version and the rows
        per ``ppm_item_version`` written.
    """
    t0 = time.perf_counter()
    version, weights = ppm_version_of(ppm_model_dir), weights_version_of(ppm_model_dir)
    src = spark.read.parquet(str(item_multimodal_path)).select(
        "item_id", "event_timestamp", "text_emb", "image_emb", "has_image", "encoder_version")
    out = src.repartition(default_partitions(spark)).mapInPandas(
        functools.partial(_item_partition, settings=settings, model_dir=str(Path(ppm_model_dir).resolve()),
                          ppm_version=version, weights_version=weights), schema=_ITEM_SCHEMA)
    table = write_consolidated(out, out_path, PPM_ITEM_CACHE, ["item_id"])
    counts = {str(r["values"]): int(r["counts"]) for r in pc.value_counts(table.column("ppm_item_version")).to_pylist()}
    if set(counts) - {version}:
        log.warning("ppm_item_cache: rows of version(s) %s, the PPM in %s is %s: %s", counts, ppm_model_dir, version,
                    _ITEM_CACHE_ADVICE)
    return {**_stats("ppm_item_cache", table.num_rows, time.perf_counter() - t0, version), "cache_versions": counts}


# ---- user cache --------------------------------------------------------------------------------------------------
def encode_sequence_frame(pdf: pd.DataFrame, ppm, items: ItemVectorTable, max_len: int,
                          ppm_version: str) -> pd.DataFrame:
    """behavior_sequences rows -> PPM_USER_CACHE rows (pad, look up item vectors, ``ppm.encode_sequence``,
    zero the padding, flatten row-major to ``L*d``).

    Raises:
        KeyError: a history holds an item id that has no ``ppm_item_cache`` row (names the ids).
    """
    import torch

    ids, ages, mask = pad_history(list(pdf["hist_item_ids"]), list(pdf["hist_age_s"]), max_len)
    vecs = items.lookup(ids, mask)
    with torch.inference_mode():
        m = torch.from_numpy(mask)
        seq = ppm.encode_sequence(torch.from_numpy(vecs), torch.from_numpy(ages), m)
        seq = (seq * m.unsqueeze(-1)).float().numpy()
    flat = seq.reshape(len(pdf), -1)
    return pd.DataFrame({"user_id": pdf["user_id"].to_numpy(dtype=np.int64),
                         "event_timestamp": pdf["event_timestamp"].to_numpy(),
                         "ppm_user_seq": list(flat),
                         "ppm_seq_len": mask.sum(axis=1).astype(np.int64),
                         "ppm_user_version": ppm_version})


def _user_partition(batches: Iterator[pd.DataFrame], settings: Settings, model_dir: str, item_cache_path: str,
                    ppm_version: str, max_len: int) -> Iterator[pd.DataFrame]:
    from ppm_platform.encoders import configure_worker_threads

    configure_worker_threads(settings)
    logger = worker_logger()
    ppm = get_ppm(Path(model_dir), ppm_version)
    items = get_item_vectors(Path(item_cache_path), ppm_version)
    if items.dim != ppm.cfg.d_model:
        raise ValueError(f"item vectors have {items.dim} dims but the PPM has d_model={ppm.cfg.d_model}")
    for pdf in batches:
        if pdf.empty:
            continue
        t0 = time.perf_counter()
        out = encode_sequence_frame(pdf, ppm, items, max_len, ppm_version)
        logger.debug("ppm_user_cache: %d rows in %.3f s", len(out), time.perf_counter() - t0)
        yield out


def compute_ppm_user_cache(spark, settings: Settings, behavior_sequences_path: Path, ppm_item_cache_path: Path,
                           ppm_model_dir: Path, out_path: Path, day: date | None = None) -> dict:
    """Frozen PPM sequence encoder over every ``behavior_sequences`` row -> the day-partitioned dataset folder
    ``out_path`` (PPM_USER_CACHE, one ``<YYYY-MM-DD>.parquet`` per UTC day of ``event_timestamp``, sorted by
    user_id, event_timestamp within a day). ``L = settings.sequence.max_len`` (must be <= the PPM's max_len).
    With ``day``, only that day's sequence rows are encoded and only that day's file is replaced (the daily
    partition; the same file as a full run's).

    Returns:
        ``{"rows", "seconds", "rows_per_s", "ppm_version"}``.

    Raises:
        ValueError: the item cache was computed by another PPM version, or L exceeds the PPM's max_len.
    """
    from ppm_platform.model_store import read_model_json

    t0 = time.perf_counter()
    version = ppm_version_of(ppm_model_dir)
    L = settings.sequence.max_len
    ppm_max_len = int(read_model_json(Path(ppm_model_dir))["config"].get("max_len", L))
    if L > ppm_max_len:
        raise ValueError(f"settings.sequence.max_len={L} exceeds the PPM's max_len={ppm_max_len}")
    check_item_cache_version(ppm_item_cache_path, version, f"the PPM in {ppm_model_dir}")
    src = spark.read.parquet(str(behavior_sequences_path)).select(
        "user_id", "event_timestamp", "hist_item_ids", "hist_age_s")
    if day is not None:
        from pyspark.sql import functions as F

        from ppm_platform.features.behavior_sequences import day_window

        start, end = day_window(day)
        src = src.where((F.col("event_timestamp") >= F.lit(start)) & (F.col("event_timestamp") < F.lit(end)))
    out = src.repartition(default_partitions(spark)).mapInPandas(
        functools.partial(_user_partition, settings=settings, model_dir=str(Path(ppm_model_dir).resolve()),
                          item_cache_path=str(Path(ppm_item_cache_path).resolve()), ppm_version=version,
                          max_len=L), schema=_USER_SCHEMA)
    rows = write_day_folders(out, out_path, PPM_USER_CACHE, ["user_id", "event_timestamp"], day=day)
    return _stats("ppm_user_cache", rows, time.perf_counter() - t0, version)


def _stats(name: str, rows: int, seconds: float, version: str) -> dict:
    stats = {"rows": rows, "seconds": round(seconds, 3), "rows_per_s": round(rows / max(seconds, 1e-9), 2),
             "ppm_version": version}
    log.info("%s: %s", name, stats)
    return stats


# ---- one version per cache table (DESIGN.md §4) -----------------------------------------------------------------
#: cache table -> the column holding each row's version
CACHE_VERSION_COLUMNS = {"ppm_item_cache": "ppm_item_version", "ppm_user_cache": "ppm_user_version"}


def cache_table_versions(path: Path, column: str, expected: str | None = None) -> dict:
    """Rows per version of a PPM cache table and whether it holds exactly one (what the asset checks report):
    the daily path rewrites one day of ``ppm_user_cache`` at a time, so after a PPM retrain the folder can hold
    two versions. Reads only ``column``, one file and row group at a time.

    Args:
        path: the table, a parquet file or a folder of ``*.parquet`` day files (``ppm_user_cache``).
        column: its version column (:data:`CACHE_VERSION_COLUMNS`).
        expected: when given (the current PPM's ``ppm_version``), the one version must be this one.

    Returns:
        ``{"rows", "versions": {version: rows}, "null_rows", "files_by_version": {version: [day files, at most
        10]}, "expected", "passed", "problems": [str]}``; ``passed`` is True when every row holds the same,
        non-null version (``expected``, when given) and the table has rows.

    Raises:
        FileNotFoundError: ``path`` does not exist. KeyError: a file lacks ``column`` (named).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"cache table {path} does not exist")
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    versions: dict[str, int] = {}
    files_by: dict[str, list[str]] = {}
    rows = nulls = 0
    for f in files:
        pf = pq.ParquetFile(f)
        if column not in pf.schema_arrow.names:
            raise KeyError(f"{f}: no column {column!r} (has {pf.schema_arrow.names})")
        for batch in pf.iter_batches(columns=[column], batch_size=65_536):
            col = batch.column(0)
            rows += len(col)
            nulls += col.null_count
            for r in pc.value_counts(col.drop_null()).to_pylist():
                v = str(r["values"])
                versions[v] = versions.get(v, 0) + int(r["counts"])
                if f.name not in files_by.setdefault(v, []) and len(files_by[v]) < 10:
                    files_by[v].append(f.name)
    problems = []
    if rows == 0:
        problems.append(f"{path} has no rows")
    if len(versions) > 1:
        problems.append(f"{len(versions)} versions in one cache table: "
                        + ", ".join(f"{v} ({n} rows)" for v, n in sorted(versions.items())))
    if nulls:
        problems.append(f"{nulls} row(s) with a null {column}")
    if expected is not None and versions and set(versions) != {expected}:
        problems.append(f"the current PPM is {expected}, the table holds {sorted(versions)}")
    return {"rows": rows, "versions": versions, "null_rows": nulls, "files_by_version": files_by,
            "expected": expected, "passed": not problems, "problems": problems}
