"""New-item path: make a just-created item rankable with its content features right away.

For a new catalog item (title, categories, optional image), :func:`add_new_item`

1. computes its ME feature with the same frozen encoders (fine-tuned when they exist:
   :func:`ppm_platform.encoders.factory.encoder_settings`) and the same code as the Spark job
   (:func:`ppm_platform.features.item_multimodal.encode_items_frame`: MiniLM text of
   :func:`~ppm_platform.data.item_content.item_text` + EfficientNet-Lite0 image, ``has_image``);
2. computes its PPM item-cache vector with the frozen PPM item tower of the serving URM's ``ppm_version``
   (:func:`ppm_platform.features.ppm_caches.encode_item_frame`, the Spark job's function);
3. assigns its semantic-id codes from the stored codebook (:mod:`ppm_platform.features.semantic_ids`, the
   centroids the ``item_semantic_id`` job fitted; when that job has run), from the vector just computed;
4. writes the ``item_multimodal``, ``item_profile``, ``ppm_item_cache`` (and ``item_semantic_id``) rows to the
   online store as a push to the Feast push sources ``<view>_push`` would (``feature_repo/features.py::PUSH_VIEWS``;
   Feast docs "Push source": https://docs.feast.dev/reference/data-sources/push), one
   ``FeatureStore.write_to_online_store`` per view with the push sources resolved from the cached registry
   (:func:`push_item_rows`).

The item is then served like any other: ``Ranker.rank`` reads its genres and PPM vector from Feast. The URM
has no ID embedding for it (OOV id, like every item first seen after training), so its score comes from the
content side: exactly the cold-start case PPM's ID-free features exist for. The rows are pushed to the
online store only (``PushMode.ONLINE``); the next batch run of the feature tables (which reads the items
table) adds them offline.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from ppm_platform.config import Settings
from ppm_platform.data import catalog
from ppm_platform.encoders.factory import encoder_settings


def build_new_item_rows(settings: Settings, item_id: int, title: str, categories: Sequence[str],
                        image_path: str | Path | None = None, release_year: int | None = None,
                        created_at: datetime | None = None) -> dict[str, pd.DataFrame]:
    """The feature rows of a new item (no I/O to the feature store).

    Args:
        image_path: the item's image (local path or ``file://`` URI; relative paths are taken relative to the
            catalog root ``settings.data_dir``). It is checked exactly like an ingested image
            (:func:`ppm_platform.data.validation.check_image`): inside the catalog root after resolving
            symlinks, an existing non-empty file, at most ``MAX_IMAGE_PIXELS`` pixels, decodable.

    Returns:
        ``{"item_multimodal": 1 row (text_emb f32[text_dim], image_emb f32[image_dim], has_image, encoder_version),
        "ppm_item_cache": 1 row (ppm_item_vec f32[d], ppm_item_version), "item_profile": 1 row
        (categories, release_year)}`` and, once the ``item_semantic_id`` job has written its table and
        codebook, ``"item_semantic_id": 1 row (sid_1..sid_L int64, sid_version)``, each with ``item_id`` and
        ``event_timestamp`` (= ``created_at``, default now, UTC).

    Raises:
        ValueError: ``image_path`` is refused (the message names the path and the reason, e.g. "image path
            escapes the catalog root", "image too large (> 64,000,000 px)", "image file missing").
        FileNotFoundError: no PPM model has been trained.
        ValueError: the encoders' version differs from the one the PPM was pre-trained on (the item vector
            would not mean the same thing), or the ME width differs from the PPM's ``me_dim``; the semantic-id
            codebook was fitted on vectors of another version (refit it: materialize ``item_semantic_id``).
    """
    from ppm_platform.data.validation import check_image
    from ppm_platform.features.item_multimodal import encode_items_frame
    from ppm_platform.features.ppm_caches import encode_item_frame, get_ppm, ppm_version_of, weights_version_of
    from ppm_platform.model_store import CONFIG_FILE, read_model_json

    if image_path is not None:  # the ingest's own image check (catalog root, pixel limit, decodable)
        reason = check_image(str(image_path), settings.data_dir)
        if reason is not None:
            raise ValueError(f"new item {item_id}: image {str(image_path)!r} refused: {reason} "
                             f"(catalog root {settings.data_dir})")
    ppm_dir = catalog.path(settings, "ppm")
    if not (ppm_dir / CONFIG_FILE).exists():
        raise FileNotFoundError(f"{ppm_dir} has no PPM: materialize the 'ppm_model' asset first")
    ts = pd.Timestamp(created_at or datetime.now(timezone.utc))
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    items = pd.DataFrame({"item_id": [int(item_id)], "title": [title], "categories": [list(categories)],
                          "image_uri": [str(image_path) if image_path is not None else None],
                          "created_at": [ts]})
    mm = encode_items_frame(items, encoder_settings(settings))  # the encoders the item_multimodal job used
    trained_on = (read_model_json(ppm_dir).get("metadata") or {}).get("encoder_version")
    if trained_on and mm["encoder_version"].iloc[0] != trained_on:
        raise ValueError(f"new item {item_id}: encoders are {mm['encoder_version'].iloc[0]} but the PPM was "
                         f"pre-trained on ME features of {trained_on}; configure the same encoders")
    version = ppm_version_of(ppm_dir)
    # stamped like the batch item cache: the PPM's weights with the row's encoders (== ``version``, checked above)
    cache = encode_item_frame(mm, get_ppm(ppm_dir, version), weights_version_of(ppm_dir))
    profile = pd.DataFrame({"item_id": [int(item_id)], "event_timestamp": [ts],
                            "categories": [list(categories)],
                            "release_year": pd.array([release_year], dtype="Int64")})
    mm["event_timestamp"] = ts
    cache["event_timestamp"] = ts
    rows = {"item_multimodal": mm, "ppm_item_cache": cache, "item_profile": profile}
    sid = semantic_id_rows(settings, rows)
    if sid is not None:
        rows["item_semantic_id"] = sid
    return rows


def semantic_id_rows(settings: Settings, rows: dict[str, pd.DataFrame]) -> pd.DataFrame | None:
    """The ``item_semantic_id`` row of a new item coded from the stored codebook (the one the batch job fitted;
    loaded once per process), from its ``ppm_item_cache`` or ``item_multimodal`` row by the codebook's source;
    None when the semantic-id job never ran (no table, no codebook: the view is not registered either).

    Raises:
        ValueError: the row's vector is of another version than the codebook was fitted on.
    """
    from ppm_platform.features.semantic_ids import CODEBOOK_FILE, SOURCE_TABLES, code_frame, get_codebook

    folder = catalog.path(settings, "semantic_id_codebook")
    if not (folder / CODEBOOK_FILE).exists() or not catalog.path(settings, "item_semantic_id").exists():
        return None
    cb = get_codebook(folder)
    return code_frame(rows[SOURCE_TABLES[cb.source][0]], cb)


def push_item_rows(store, rows: dict[str, pd.DataFrame]) -> None:
    """Write feature rows to the online store as a push to the ``<view>_push`` push sources would
    (``PushMode.ONLINE``: online only), with one ``write_to_online_store`` per feature view.

    Args:
        store: a ``feast.FeatureStore``.
        rows: view name -> its rows (the frames of :func:`build_new_item_rows`); each frame is written to every
            feature view (stream views included) whose stream source is the push source ``<view>_push``.

    What ``store.push`` adds per call and this leaves out: it resolves the push source by listing every view,
    and after writing it lists the feature services with the registry cache off (to recompute the
    ``precompute_online`` services), which re-reads the registry file and so makes every later registry
    lookup, this function's and the next request's, convert all views and services from protobuf again. Here
    the push sources are resolved from the cached registry and the ``precompute_online`` services that read a
    written view (none in ``feature_repo/features.py``) are recomputed with Feast's
    ``precompute_feature_service``, as a push does.

    Raises:
        KeyError: a view has no push source (see ``feature_repo/features.py::PUSH_VIEWS``); raised before any
            row is written.
    """
    from feast.data_source import PushSource

    views = [*store.list_feature_views(allow_cache=True), *store.list_stream_feature_views(allow_cache=True)]
    targets: dict[str, list[str]] = {}
    for view in rows:
        source = f"{view}_push"
        targets[view] = sorted({fv.name for fv in views
                                if isinstance(fv.stream_source, PushSource) and fv.stream_source.name == source})
        if not targets[view]:
            raise KeyError(f"view {view!r} has no push source {source!r} in the Feast registry "
                           "(feature_repo/features.py::PUSH_VIEWS; re-apply the definitions)")
    written = set()
    for view, df in rows.items():
        for name in targets[view]:
            store.write_to_online_store(name, df)
            written.add(name)
    for svc in store.registry.list_feature_services(store.project, allow_cache=True):
        if svc.precompute_online and any(p.name in written for p in svc.feature_view_projections):
            store.precompute_feature_service(svc.name)


def add_new_item(settings: Settings, item_id: int, title: str, categories: Sequence[str],
                 image_path: str | Path | None = None, release_year: int | None = None,
                 store=None, created_at: datetime | None = None) -> dict[str, Any]:
    """Encode a new item and push its content features online so the Ranker can score it right away.

    Args:
        item_id: the new item's id (an existing id is overwritten online with the new rows).
        title / categories / image_path / release_year: the canonical ``items`` fields (image optional:
            ``has_image = 0`` and a zero image embedding without one, as in the batch job).
        store: a ``feast.FeatureStore`` (default :func:`ppm_platform.feature_store.get_store`).

    Returns:
        ``{"item_id", "ppm_version", "encoder_version", "has_image", "sid_version", "sid", "encode_ms",
        "push_ms", "total_ms"}`` (``sid``: its codes, level 1 first; None / [] without semantic ids; wall times in
        ms, the encoding including the codes; the first call in a process also loads the encoders, the PPM and
        the codebook).

    Raises:
        see :func:`build_new_item_rows` and :func:`push_item_rows`.
    """
    from ppm_platform.feature_store import get_store

    t0 = time.perf_counter()
    rows = build_new_item_rows(settings, item_id, title, categories, image_path, release_year, created_at)
    t1 = time.perf_counter()
    push_item_rows(store if store is not None else get_store(settings), rows)
    t2 = time.perf_counter()
    sid = rows.get("item_semantic_id")
    return {"item_id": int(item_id), "ppm_version": str(rows["ppm_item_cache"]["ppm_item_version"].iloc[0]),
            "encoder_version": str(rows["item_multimodal"]["encoder_version"].iloc[0]),
            "has_image": int(rows["item_multimodal"]["has_image"].iloc[0]),
            "sid_version": None if sid is None else str(sid["sid_version"].iloc[0]),
            "sid": [] if sid is None else [int(sid[c].iloc[0]) for c in sid.columns if c.startswith("sid_")
                                           and c != "sid_version"],
            "encode_ms": round((t1 - t0) * 1e3, 2), "push_ms": round((t2 - t1) * 1e3, 2),
            "total_ms": round((t2 - t0) * 1e3, 2)}
