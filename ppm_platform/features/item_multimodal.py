"""Spark job: the item multi-modal (ME) feature table ``item_multimodal`` (DESIGN.md §3-4).

One row per item: ``text_emb`` (MiniLM over :func:`~ppm_platform.data.item_content.item_text`), ``image_emb``
(EfficientNet-Lite0 pooled features of the item image, zeros when there is none), ``has_image``,
``encoder_version``, stamped with the item's ``created_at``. Encoding runs in ``mapInPandas`` on Spark Python
workers; each worker loads the two frozen encoders once (:func:`ppm_platform.encoders.get_text_encoder` /
``get_image_encoder``).

:func:`me_matrix` is THE definition of the ME feature vector used by PPM training and the PPM caches:
``concat(text_emb, image_emb, has_image)``.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ppm_platform.config import EncoderSettings, Settings
from ppm_platform.data.item_content import item_text
from ppm_platform.data.schemas import ITEM_MULTIMODAL
from ppm_platform.features.spark import default_partitions, driver_progress, worker_logger, write_consolidated

log = logging.getLogger("ppm_platform.features")

#: the default encoders' widths, for the ME matrix of an empty table (a non-empty one has its rows' widths)
_DEFAULT_ENCODERS = EncoderSettings()

_SPARK_SCHEMA = ("item_id bigint, event_timestamp timestamp, text_emb array<float>, image_emb array<float>, "
                 "has_image bigint, encoder_version string")


def _none_if_missing(uri) -> str | None:
    if uri is None or (isinstance(uri, float) and np.isnan(uri)) or uri == "":
        return None
    return str(uri)


def encode_items_frame(pdf: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """Encode one batch of canonical item rows into ITEM_MULTIMODAL rows with the process-wide encoders.

    Images are opened inside the catalog root ``settings.data_dir`` (resolved: a symlink swapped after
    ingest to point outside it is refused, not followed).

    Raises:
        ppm_platform.encoders.ImageLoadError: an item image cannot be read, or is refused
            (``ImageRefusedError``: outside the catalog root, missing, too many pixels), naming the path.
    """
    from ppm_platform.encoders import get_image_encoder, get_text_encoder

    enc = settings.encoders
    text, image = get_text_encoder(settings), get_image_encoder(settings)
    texts = [item_text(t, c) for t, c in zip(pdf["title"], pdf["categories"])]
    temb = text.encode(texts, batch_size=enc.text_batch_size)
    iemb, has = image.encode_paths([_none_if_missing(u) for u in pdf["image_uri"]], batch_size=enc.image_batch_size,
                                   root=settings.data_dir)
    return pd.DataFrame({
        "item_id": pdf["item_id"].to_numpy(dtype=np.int64),
        "event_timestamp": pdf["created_at"].to_numpy(),
        "text_emb": list(temb),
        "image_emb": list(iemb),
        "has_image": has,
        "encoder_version": f"{text.version}|{image.version}",
    })


def _encode_partition(batches: Iterator[pd.DataFrame], settings: Settings) -> Iterator[pd.DataFrame]:
    """``mapInPandas`` body: runs on a Spark Python worker, one Arrow batch at a time."""
    from ppm_platform.encoders import configure_worker_threads

    configure_worker_threads(settings)
    logger = worker_logger()
    done, t_start = 0, time.perf_counter()
    for pdf in batches:
        if pdf.empty:
            continue
        t0 = time.perf_counter()
        out = encode_items_frame(pdf, settings)
        dt = time.perf_counter() - t0
        done += len(out)
        logger.info("item_multimodal: encoded %d items in %.2f s (%.1f items/s; this partition %d items, %.1f items/s)",
                    len(out), dt, len(out) / max(dt, 1e-9), done, done / max(time.perf_counter() - t_start, 1e-9))
        yield out


def compute_item_multimodal(spark, settings: Settings, items_path: Path, out_path: Path) -> dict:
    """Encode every item of the canonical ``items`` parquet into ``out_path`` (schema ITEM_MULTIMODAL, one
    file sorted by item_id).

    Returns:
        ``{"items", "with_image", "without_image", "seconds", "items_per_s", "encoder_version"}``.

    Raises:
        ppm_platform.encoders.ImageLoadError (inside the Spark job error): an image cannot be read.
    """
    from ppm_platform.encoders import encoder_version

    t0 = time.perf_counter()
    version = encoder_version(settings)
    items = spark.read.parquet(str(items_path)).select("item_id", "title", "image_uri", "categories", "created_at")
    encoded = items.repartition(default_partitions(spark)).mapInPandas(
        functools.partial(_encode_partition, settings=settings), schema=_SPARK_SCHEMA)
    with driver_progress(spark, "item_multimodal"):
        table = write_consolidated(encoded, out_path, ITEM_MULTIMODAL, ["item_id"])
    seconds = time.perf_counter() - t0
    n = table.num_rows
    with_image = int(pc.sum(table.column("has_image")).as_py() or 0)
    versions = set(table.column("encoder_version").unique().to_pylist())
    if versions and versions != {version}:
        raise RuntimeError(f"item_multimodal: workers used encoder version(s) {versions}, driver expected {version}")
    stats = {"items": n, "with_image": with_image, "without_image": n - with_image, "seconds": round(seconds, 3),
             "items_per_s": round(n / max(seconds, 1e-9), 2), "encoder_version": version}
    log.info("item_multimodal: %s", stats)
    return stats


# ---- the ME feature ---------------------------------------------------------------------------------------------
def _stack(values: Sequence, column: str, dim: int | None) -> np.ndarray:
    arrays = [np.asarray(v, dtype=np.float32) for v in values]
    if not arrays:
        return np.zeros((0, dim or 0), dtype=np.float32)
    lengths = {a.shape for a in arrays}
    if len(lengths) != 1 or len(next(iter(lengths))) != 1:
        raise ValueError(f"{column}: rows have different shapes {sorted(lengths)[:5]}")
    return np.stack(arrays)


def me_matrix(table: pd.DataFrame | pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """The multi-modal (ME) feature of each item: ``concat(text_emb, image_emb, has_image)``.

    Args:
        table: rows of ``item_multimodal`` (a DataFrame or Arrow table; row order is kept).

    Returns:
        ``(item_ids int64 [N], me float32 [N, me_dim])`` with ``me_dim = text_dim + image_dim + 1``
        (:attr:`~ppm_platform.config.EncoderSettings.me_dim`).

    Raises:
        ValueError: a column is missing or embedding rows have different lengths.
    """
    if isinstance(table, pa.Table):
        table = table.to_pandas()
    missing = [c for c in ("item_id", "text_emb", "image_emb", "has_image") if c not in table.columns]
    if missing:
        raise ValueError(f"me_matrix: missing column(s) {missing}")
    ids = table["item_id"].to_numpy(dtype=np.int64)
    text = _stack(table["text_emb"].tolist(), "text_emb", _DEFAULT_ENCODERS.text_dim)
    image = _stack(table["image_emb"].tolist(), "image_emb", _DEFAULT_ENCODERS.image_dim)
    has = table["has_image"].to_numpy(dtype=np.float32).reshape(-1, 1)
    return ids, np.ascontiguousarray(np.concatenate([text, image, has], axis=1), dtype=np.float32)


def read_me_matrix(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """:func:`me_matrix` of an ``item_multimodal`` parquet file."""
    return me_matrix(pq.read_table(path, columns=["item_id", "text_emb", "image_emb", "has_image"]))
