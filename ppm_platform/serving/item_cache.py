"""In-process cache of the candidates' model inputs, read from the Feast online store.

Why a cache and not a pre-joined online view: the item side of a request (N candidates x every item view
the model reads: categories, the PPM item vector, the item counters) was most of its time, and Feast's Python
``get_online_features`` costs per view and per value, so a pre-joined view would still decode N rows per
request. Item features change with the catalog, the PPM and the item counters, i.e. with a materialize, a
push or a daily run, not per request, so the ranking service keeps the *encoded* item inputs of the whole
catalog in memory (one row per item: ~0.3 kB with the default shapes) and a request gathers N rows. The
values still come from Feast: the cache is filled with bulk ``get_online_features`` calls of the model's item
feature references, encoded by the model's own :class:`~ppm_platform.features.encoding.FeatureVectorizer`.

Coherence:

* **refresh**: every ``serving.item_cache_refresh_s`` seconds a background thread re-reads every cached item
  from the online store and swaps the new snapshot in (requests never see a half-built one); so a value
  re-materialized or pushed for a cached item is served within the refresh interval plus one reload (the
  staleness bound; measured by ``benchmarks/latency.py``);
* **misses**: an id that is not in the snapshot (an item pushed after the last refresh, or an unknown id) is
  read from Feast in the request and kept until the next refresh if the online store has it; an id the online
  store does not have is never cached, so an item pushed later is served from its first request after;
* **versions**: every cached row keeps the ``ppm_item_version`` (and, for a model that embeds semantic ids,
  the ``sid_version``) it was read with, and the Ranker's version checks run on them, so caches recomputed by
  another PPM, or codes of another codebook, are refused exactly as without the cache;
* **memory**: at most ``serving.item_cache_max_items`` items are held; ids beyond are read from Feast per
  request (correct, slower).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from ppm_platform.features.encoding import FeatureVectorizer

log = logging.getLogger("ppm_platform.serving")

#: item ids per bulk Feast read of the blocking first load
LOAD_CHUNK_IDS = 5_000
#: item ids per Feast read of a background refresh, and the pause after each: a bulk read holds the GIL for
#: its whole decode, and the request threads' many GIL hand-offs queue behind it (one read of the whole
#: catalog shows up in the open-loop p99, docs/serving.md), so the refresh reads in short slices and sleeps
#: between them
REFRESH_CHUNK_IDS = 50
REFRESH_PAUSE_S = 0.01


@dataclass(frozen=True)
class ItemBatch:
    """The item side of one request.

    Attributes:
        inputs: encoded item inputs (:data:`~ppm_platform.models.urm.ITEM_INPUT_NAMES`), batch N, request order.
        known: bool ``[N]``: the item has a row in the online store.
        versions: the ``ppm_item_version`` values of the items (None-free), for the version check.
        misses: how many of the N were read from Feast in this request (not cached).
        sid_versions: the ``sid_version`` values of the items (None-free; empty without a sid version field).
    """

    inputs: dict[str, np.ndarray]
    known: np.ndarray
    versions: set[str]
    misses: int
    sid_versions: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class _Snapshot:
    index: dict[int, int]
    arrays: dict[str, np.ndarray]
    known: np.ndarray
    versions: np.ndarray  # object [rows]: str or None
    loaded_at: float
    load_seconds: float
    sid_versions: np.ndarray | None = None  # object [rows]: str or None (None: no sid version field)


def _refresh_loop(ref: "weakref.ref[ItemFeatureCache]", stop: threading.Event, interval_s: float) -> None:
    while not stop.wait(interval_s):
        cache = ref()
        if cache is None:
            return
        try:
            cache.refresh()
        except Exception:  # the online store may be briefly unavailable: keep serving the last snapshot
            log.exception("item cache refresh failed; serving the previous snapshot")
        del cache


class ItemFeatureCache:
    """Encoded item inputs of the whole catalog, read from the Feast online store (see the module docstring).

    Args:
        fetch: ``fetch(item_ids) -> DataFrame`` of the online item features in request order (``item_id`` plus
            the model's item feature columns; missing values None), e.g. a bound
            :func:`ppm_platform.feature_store.read_online_items`.
        vectorizer: the model's :class:`FeatureVectorizer` (:meth:`~FeatureVectorizer.encode_items`).
        version_field: the column holding each row's cache version (``ppm_item_version``), None = none.
        sid_version_field: the column holding each row's ``sid_version`` (models with semantic ids), None = none.
        max_items: most items held.
        refresh_s: background refresh interval in seconds (0 or None: no background refresh).
        clock: monotonic clock (tests).

    Raises:
        ValueError: ``max_items < 1``.
    """

    def __init__(self, fetch: Callable[[list[int]], pd.DataFrame], vectorizer: FeatureVectorizer,
                 version_field: str | None = "ppm_item_version", max_items: int = 500_000,
                 refresh_s: float | None = 60.0, clock: Callable[[], float] = time.monotonic,
                 sid_version_field: str | None = None):
        if max_items < 1:
            raise ValueError(f"item cache max_items must be >= 1, got {max_items}")
        self._fetch, self.vectorizer, self.version_field = fetch, vectorizer, version_field
        self.sid_version_field = sid_version_field
        self.max_items, self.refresh_s, self._clock = int(max_items), refresh_s, clock
        self._snap = _Snapshot({}, {}, np.zeros(0, bool), np.zeros(0, object), clock(), 0.0)
        self._extra: dict[int, tuple[dict[str, np.ndarray], bool, str | None, str | None]] = {}
        self._lock = threading.Lock()  # guards _extra and snapshot swaps, never held during a Feast read
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.refreshes = 0

    # ---- loading -------------------------------------------------------------------------------------------
    def _read(self, ids: list[int], chunk_ids: int = LOAD_CHUNK_IDS,
              pause_s: float = 0.0) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
        """Feast rows of ``ids`` -> (encoded inputs [n, ...], known [n], versions [n] object, sid versions [n]
        object), read ``chunk_ids`` at a time with ``pause_s`` seconds of sleep between reads."""
        parts, known, versions, sids = [], [], [], []
        for s in range(0, len(ids), chunk_ids):
            if s and pause_s:
                time.sleep(pause_s)
            chunk = ids[s:s + chunk_ids]
            df = self._fetch(chunk)
            feats = [c for c in df.columns if c != "item_id"]
            known.append(df[feats].notna().any(axis=1).to_numpy() if feats else np.ones(len(df), bool))
            versions.append(df[self.version_field].to_numpy(dtype=object) if self.version_field in df
                            else np.full(len(df), None, object))
            sids.append(df[self.sid_version_field].to_numpy(dtype=object) if self.sid_version_field in df
                        else np.full(len(df), None, object))
            parts.append(self.vectorizer.encode_items(df))
        if not parts:
            return {}, np.zeros(0, bool), np.zeros(0, object), np.zeros(0, object)
        arrays = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        return arrays, np.concatenate(known), np.concatenate(versions), np.concatenate(sids)

    def load(self, item_ids: Sequence[int], chunk_ids: int = LOAD_CHUNK_IDS, pause_s: float = 0.0) -> dict:
        """(Re)build the snapshot from the online store for ``item_ids`` (deduplicated, at most ``max_items``)
        and swap it in; the items read on a miss since the last load are merged in. Blocking. ``chunk_ids``
        / ``pause_s``: ids per Feast read and the sleep between reads (see :data:`REFRESH_CHUNK_IDS`).

        Returns:
            ``{"items", "known", "seconds", "capped"}`` (``capped``: ids left out by ``max_items``).
        """
        t0 = time.perf_counter()
        with self._lock:
            extra = list(self._extra)
        ids = list(dict.fromkeys([int(i) for i in item_ids] + extra))
        capped = max(0, len(ids) - self.max_items)
        ids = ids[:self.max_items]
        arrays, known, versions, sids = self._read(ids, chunk_ids, pause_s)
        secs = time.perf_counter() - t0
        snap = _Snapshot({i: r for r, i in enumerate(ids)}, arrays, known, versions, self._clock(), secs, sids)
        with self._lock:
            self._snap = snap
            for i in extra:
                self._extra.pop(i, None)
            self.refreshes += 1
        return {"items": len(ids), "known": int(known.sum()), "seconds": round(secs, 3), "capped": capped}

    def refresh(self) -> dict:
        """Re-read every cached item (:meth:`load` of the current snapshot's ids), in slices of
        :data:`REFRESH_CHUNK_IDS` with :data:`REFRESH_PAUSE_S` between them, so serving threads keep running."""
        return self.load(list(self._snap.index), REFRESH_CHUNK_IDS, REFRESH_PAUSE_S)

    def start(self) -> None:
        """Start the background refresh thread (no-op without ``refresh_s`` or when started). The thread holds
        the cache weakly: it ends with :meth:`stop` or when the cache is garbage-collected."""
        if not self.refresh_s or self._thread is not None:
            return
        self._thread = threading.Thread(target=_refresh_loop, args=(weakref.ref(self), self._stop, self.refresh_s),
                                        name="item-cache-refresh", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    # ---- serving -------------------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return len(self._snap.index) + len(self._extra)

    @property
    def age_s(self) -> float:
        """Seconds since the snapshot was loaded."""
        return self._clock() - self._snap.loaded_at

    def get(self, item_ids: Sequence[int]) -> ItemBatch:
        """The encoded item inputs of ``item_ids`` (request order, duplicates kept): cached rows gathered, the
        rest read from Feast now (and kept until the next refresh when the online store has them)."""
        snap = self._snap
        ids = [int(i) for i in item_ids]
        rows = np.fromiter((snap.index.get(i, -1) for i in ids), dtype=np.int64, count=len(ids))
        miss_pos = np.flatnonzero(rows < 0)
        out = {k: v[np.maximum(rows, 0)] for k, v in snap.arrays.items()}
        known = snap.known[np.maximum(rows, 0)] if len(snap.known) else np.zeros(len(ids), bool)
        versions = snap.versions[np.maximum(rows, 0)] if len(snap.versions) else np.full(len(ids), None, object)
        sids = (snap.sid_versions[np.maximum(rows, 0)] if snap.sid_versions is not None and len(snap.sid_versions)
                else np.full(len(ids), None, object))
        read = 0
        if len(miss_pos):
            out, known, versions, sids, read = self._fill_misses(ids, miss_pos, out, known, versions, sids)
        return ItemBatch(out, known, {v for v in versions if v is not None}, read, {v for v in sids if v is not None})

    def _fill_misses(self, ids, miss_pos, out, known, versions, sids):
        with self._lock:
            cached = {i: self._extra[i] for i in {ids[p] for p in miss_pos} if i in self._extra}
        need = list(dict.fromkeys(ids[p] for p in miss_pos if ids[p] not in cached))
        need_set = set(need)
        if need:
            arrays, k_new, v_new, s_new = self._read(need)
            fresh = {i: ({n: a[j] for n, a in arrays.items()}, bool(k_new[j]), v_new[j], s_new[j])
                     for j, i in enumerate(need)}
            with self._lock:
                room = self.max_items - len(self._snap.index) - len(self._extra)
                for i, row in fresh.items():
                    if row[1] and room > 0:  # only ids the online store has: an unknown id may be pushed later
                        self._extra[i] = row
                        room -= 1
            cached.update(fresh)
        if not out:  # empty snapshot: build the arrays from the rows read
            first = next(iter(cached.values()))[0]
            out = {n: np.zeros((len(ids), *np.shape(v)), dtype=np.asarray(v).dtype) for n, v in first.items()}
        # (the gathered arrays are fancy-indexed copies of the snapshot's: writing into them is safe)
        read = 0
        for p in miss_pos:
            arrays, k, v, sv = cached[ids[p]]
            for n, a in arrays.items():
                out[n][p] = a
            known[p], versions[p], sids[p] = k, v, sv
            read += ids[p] in need_set
        return out, known, versions, sids, read
