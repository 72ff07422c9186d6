"""Online ranking: one Feast online lookup of the user row, the candidates' inputs from the in-process item
cache (filled from the Feast online store, :mod:`ppm_platform.serving.item_cache`), one onnxruntime run of the
serving graph (the user row broadcast inside it).

No encoder and no Transformer run here: PPM's heavy parts were run offline and their outputs are read from
the online store like any other feature (DESIGN.md §4), which is why plugging PPM in adds no model latency
beyond the light top. Only the features the model reads are read (:func:`model_feature_refs`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ppm_platform.config import Settings
from ppm_platform.data import catalog
from ppm_platform.features.encoding import FeatureVectorizer

#: the version fields the Ranker reads besides the model's inputs (DESIGN.md §4 version rule)
USER_VERSION_FIELD, ITEM_VERSION_FIELD = "ppm_user_version", "ppm_item_version"
#: the codebook version of the ``item_semantic_id`` rows (read for a model that embeds semantic ids)
SID_VERSION_FIELD = "sid_version"


def model_feature_refs(store, service: str, vectorizer: FeatureVectorizer, entity: str, use_ppm: bool) -> list[str]:
    """The ``"view:feature"`` references of feature service ``service`` that a model with ``vectorizer`` reads for
    ``entity`` (``"user"`` / ``"item"``): its vectorizer's columns, the PPM cache columns and their version field
    when ``use_ppm``, the ``sid_version`` when the model embeds semantic ids; nothing else (e.g. ``hist_age_s``, ``hist_len``, ``release_year``, the counters' rates
    are never fetched online).

    Raises:
        KeyError: a column the vectorizer needs is in no view of the service (named).
    """
    if entity == "user":
        need = [*vectorizer.user_columns(), *(("ppm_user_seq", "ppm_seq_len", USER_VERSION_FIELD) if use_ppm else ())]
        key = "user_id"
    else:
        need = [*vectorizer.item_columns(), *(("ppm_item_vec", ITEM_VERSION_FIELD) if use_ppm else ()),
                *((SID_VERSION_FIELD,) if vectorizer.sid_levels else ())]
        key = "item_id"
    where: dict[str, str] = {}
    for proj in store.get_feature_service(service, allow_cache=True).feature_view_projections:
        for f in proj.features:
            where.setdefault(f.name, proj.name)
    missing = [c for c in need if c != key and c not in where]
    if missing:
        raise KeyError(f"feature service {service!r} has no view with {missing}: the model reads them")
    return [f"{where[c]}:{c}" for c in need if c != key]


class VersionMismatchError(RuntimeError):
    """The cached PPM features were produced by a different PPM than the one the URM was trained with, or the
    online semantic ids by another codebook than the one it was trained on."""


@dataclass
class RankResult:
    """Scores for one request.

    Attributes:
        user_id: the request's user.
        scores: one row per candidate, in descending click probability: ``item_id`` (int64), ``click``,
            ``order`` (float32 probabilities), ``known`` (bool: the item has a row in the online store).
        lookup_ms: feature read wall time (ms): the user's Feast lookup + the candidates from the item cache
            (or Feast); model_ms: encoding the user row + onnxruntime (ms).
        user_known: the user has a row in the online store (False = cold-start user, scored from padding).
        unknown_item_ids: candidates with no online row at all (scored with the trained OOV id, zero-impression
            counters and the learned no-content input).
    """

    user_id: int
    scores: pd.DataFrame
    lookup_ms: float
    model_ms: float
    user_known: bool = True
    unknown_item_ids: list[int] = field(default_factory=list)

    @property
    def total_ms(self) -> float:
        return self.lookup_ms + self.model_ms


class Ranker:
    """Scores candidate items for a user with the exported URM (or Base) ONNX model.

    Request path (DESIGN.md §4): one Feast ``get_online_features`` of the user's features (only those the model
    reads, from the user feature service recorded in ``model.json``), the candidates' encoded inputs from the
    :class:`~ppm_platform.serving.item_cache.ItemFeatureCache` (filled from the Feast online store; an id not
    cached is read from Feast in the request), the user row encoded once
    (:meth:`FeatureVectorizer.encode_user`, the same code as training's :meth:`FeatureVectorizer.transform`) and one
    onnxruntime run of ``model_serving.onnx``, which broadcasts the user row to the candidates inside the graph.

    Cold start (defined behaviour, never an error): an unknown user or item (no row in the online store) is
    scored with the trained out-of-vocabulary ID row, unknown side features, zero-impression counters, an
    empty history and, for an item, the learned no-content input -- the same tensors a cold entity gets
    offline -- and is flagged in :class:`RankResult` (``user_known``, ``unknown_item_ids``). Known items the
    URM never saw in training (new items pushed by :mod:`ppm_platform.serving.new_item`) get the OOV id but
    their real genres and PPM item vector.

    Args:
        settings: platform settings (locate the Feast repo and the model artifacts; ``settings.serving``:
            item cache on/off, size, refresh interval).
        model_name: ``urm`` (default) or ``base`` (the IDRec-only baseline).
        store: an existing ``feast.FeatureStore`` (default: :func:`ppm_platform.feature_store.get_store`).
        user_service / item_service: override the feature references (default: the model's own, from the
            feature services recorded in ``model.json``): another service name, or a list of
            ``"view:feature"`` references.
        item_cache: override ``settings.serving.item_cache`` (False: the candidates are read from Feast per
            request).

    The model is read from the version published at ``models/<model_name>`` when the Ranker is built
    (:func:`~ppm_platform.model_store.resolve_model_dir`: all files from one version folder); a Ranker
    never changes model; the HTTP service swaps in a new Ranker when another version is published
    (:mod:`ppm_platform.serving.reload`).

    Raises:
        FileNotFoundError: the model artifact or its ONNX export does not exist yet.
    """

    def __init__(self, settings: Settings, model_name: str = "urm", store=None,
                 user_service: "str | list[str] | None" = None, item_service: "str | list[str] | None" = None,
                 item_cache: bool | None = None):
        from ppm_platform.feature_store import get_store
        from ppm_platform.io import read_json
        from ppm_platform.serving.onnx_export import SERVING_FILE, OnnxScorer
        from ppm_platform.model_store import CONFIG_FILE, resolve_model_dir

        hint = f"materialize the '{model_name}_model' asset first (ppm run)"
        try:  # every file below from one version: the published link may move while this runs
            model_dir = resolve_model_dir(catalog.model_dir(settings, model_name))
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{e}: {hint}") from None
        meta_path, onnx_path = model_dir / CONFIG_FILE, model_dir / "model.onnx"
        for p in (meta_path, onnx_path):
            if not p.exists():
                raise FileNotFoundError(f"{p} not found: {hint}")
        doc = read_json(meta_path)
        meta = doc["metadata"]
        self.model_name = model_name
        #: the version folder loaded (``models/<name>.versions/<id>``), its id and the weights hash
        self.model_dir: Path = model_dir
        self.model_id: str = model_dir.name
        self.model_version: str | None = doc.get("version")
        self.vectorizer = FeatureVectorizer.from_dict(meta["feature_encoder"])
        self.ppm_version: str | None = meta.get("ppm_version")
        #: the codebook of the semantic ids it was trained on (None: the model embeds none)
        self.sid_version: str | None = meta.get("sid_version")
        self.store = store if store is not None else get_store(settings)
        use_ppm = self.vectorizer.ppm_dim > 0
        self.user_service = user_service or meta["user_feature_service"]
        self.item_service = item_service or meta["item_feature_service"]
        self.user_refs = (self.user_service if isinstance(self.user_service, list) else
                          model_feature_refs(self.store, self.user_service, self.vectorizer, "user", use_ppm))
        self.item_refs = (self.item_service if isinstance(self.item_service, list) else
                          model_feature_refs(self.store, self.item_service, self.vectorizer, "item", use_ppm))
        #: the batch-form graph (offline scoring, parity) and the serving graph (user row broadcast inside)
        self.scorer = OnnxScorer(Path(onnx_path))
        serving_path = model_dir / SERVING_FILE
        self.serving_scorer = OnnxScorer(serving_path) if serving_path.exists() else None
        #: every ppm_*_version value read from the online store so far (reported by /health)
        self.cache_versions_seen: set[str] = set()
        sv = settings.serving
        self.item_cache = None
        if sv.item_cache if item_cache is None else item_cache:
            from ppm_platform.serving.item_cache import ItemFeatureCache

            self.item_cache = ItemFeatureCache(self._fetch_items, self.vectorizer,
                                               ITEM_VERSION_FIELD if use_ppm else None, sv.item_cache_max_items,
                                               sv.item_cache_refresh_s,
                                               sid_version_field=SID_VERSION_FIELD if self.vectorizer.sid_levels
                                               else None)
            self.item_cache.load(catalog_item_ids(settings, self.vectorizer))
            self.item_cache.start()

    def close(self) -> None:
        """Stop the item cache's refresh thread."""
        if self.item_cache is not None:
            self.item_cache.stop()

    def _fetch_items(self, item_ids: list[int]) -> pd.DataFrame:
        from ppm_platform.feature_store import read_online_items

        return read_online_items(self.store, item_ids, service=self.item_refs)

    def check_versions(self, user_row: dict, item_versions: "pd.DataFrame | set[str]",
                       sid_versions: "set[str] | None" = None) -> None:
        """Refuse to score features cached by another PPM than the URM's (DESIGN.md §4 version rule), or
        semantic ids coded by another codebook than the one the model trained on (a refit under the same PPM
        gives other codes).

        Args:
            user_row: the user's online features (its ``ppm_user_version``, when read).
            item_versions: the candidates' rows (their ``ppm_item_version`` and ``sid_version`` columns) or the
                set of their PPM versions.
            sid_versions: the candidates' ``sid_version`` values (when ``item_versions`` is a set).

        Records every PPM version read in :attr:`cache_versions_seen` (a Base model reads no PPM cache: it never
        refuses on those).

        Raises:
            VersionMismatchError: naming both versions.
        """
        found = set()
        if user_row.get(USER_VERSION_FIELD) is not None:
            found.add(user_row[USER_VERSION_FIELD])
        if isinstance(item_versions, pd.DataFrame):
            if ITEM_VERSION_FIELD in item_versions:
                found |= {v for v in item_versions[ITEM_VERSION_FIELD] if v is not None}
        else:
            found |= set(item_versions)
        self.cache_versions_seen |= found
        sids = set(sid_versions or ())
        if isinstance(item_versions, pd.DataFrame) and SID_VERSION_FIELD in item_versions:
            sids |= {v for v in item_versions[SID_VERSION_FIELD] if v is not None and v == v}
        if self.sid_version is not None and (bad_sid := sids - {self.sid_version}):
            raise VersionMismatchError(
                f"{self.model_name} was trained on semantic ids of sid_version {self.sid_version} but the online "
                f"item_semantic_id rows hold {sorted(bad_sid)}: materialize the matching item_semantic_id, or "
                "retrain the model")
        if self.ppm_version is None:
            return
        bad = found - {self.ppm_version}
        if bad:
            raise VersionMismatchError(
                f"URM was trained with ppm_version {self.ppm_version} but the online PPM caches hold {sorted(bad)}: "
                "recompute ppm_item_cache/ppm_user_cache and materialize, or retrain the URM")

    def lookup_user(self, user_id: int) -> dict:
        """The user's online features the model reads (values None for an unknown user)."""
        from ppm_platform.feature_store import read_online_user

        return read_online_user(self.store, int(user_id), service=self.user_refs)

    def lookup(self, user_id: int, item_ids: list[int]) -> tuple[dict, pd.DataFrame]:
        """The online features the model reads of the user (dict) and of the items (DataFrame, request order),
        both read from Feast (no item cache)."""
        return self.lookup_user(user_id), self._fetch_items([int(i) for i in item_ids])

    def probe(self, n_items: int = 5) -> dict:
        """Look up one user and ``n_items`` items the model was trained on (from Feast, not the cache) and check
        their cache versions. Used by the HTTP service at start-up and by ``GET /health``.

        Returns:
            ``{"status": "ok" | "version_mismatch", "error": str | None, "cache_versions_seen": [...]}``.
        """
        users = [int(k) for k in list(self.vectorizer.users)[:1]] or [0]
        items = [int(k) for k in list(self.vectorizer.items)[:n_items]] or [0]
        user, item_rows = self.lookup(users[0], items)
        try:
            self.check_versions(user, item_rows)
            return {"status": "ok", "error": None, "cache_versions_seen": sorted(self.cache_versions_seen)}
        except VersionMismatchError as e:
            return {"status": "version_mismatch", "error": str(e),
                    "cache_versions_seen": sorted(self.cache_versions_seen)}

    def rank(self, user_id: int, item_ids: list[int]) -> RankResult:
        """Score ``item_ids`` for ``user_id`` from online features (see the class docstring).

        Unknown users/items are scored with the trained fallbacks (cold start) and flagged, never rejected.

        Raises:
            ValueError: ``item_ids`` is empty.
            VersionMismatchError: see :meth:`check_versions`.
        """
        if not item_ids:
            raise ValueError("no candidate item ids")
        ids = [int(i) for i in item_ids]
        t0 = time.perf_counter()
        user = self.lookup_user(user_id)
        if self.item_cache is not None:
            batch = self.item_cache.get(ids)
            item_x, known, versions, sid_versions = batch.inputs, batch.known, batch.versions, batch.sid_versions
        else:
            rows = self._fetch_items(ids)
            feats = [c for c in rows.columns if c != "item_id"]
            known = rows[feats].notna().any(axis=1).to_numpy() if feats else np.ones(len(rows), bool)
            versions = {v for v in rows.get(ITEM_VERSION_FIELD, []) if v is not None}
            sid_versions = {v for v in rows.get(SID_VERSION_FIELD, []) if v is not None}
            item_x = self.vectorizer.encode_items(rows)
        t1 = time.perf_counter()
        self.check_versions(user, versions, sid_versions)
        user_x = self.vectorizer.encode_user(user)
        if self.serving_scorer is not None:
            probs = self.serving_scorer.predict({**user_x, **item_x})
        else:  # an export without the serving graph: the batch form, user row broadcast here
            probs = self.scorer.predict({**{k: np.broadcast_to(v, (len(ids), *v.shape[1:])) for k, v in user_x.items()},
                                         **item_x})
        t2 = time.perf_counter()
        user_known = any(v is not None for k, v in user.items() if k != "user_id")
        scores = pd.DataFrame({"item_id": np.asarray(ids, dtype=np.int64), "click": probs[:, 0],
                               "order": probs[:, 1], "known": known})
        scores = scores.sort_values("click", ascending=False, kind="stable").reset_index(drop=True)
        unknown = [i for i, k in zip(ids, known) if not k]
        return RankResult(int(user_id), scores, (t1 - t0) * 1e3, (t2 - t1) * 1e3, user_known, unknown)


def catalog_item_ids(settings: Settings, vectorizer: FeatureVectorizer) -> list[int]:
    """The ids the item cache loads at start: the canonical items table of the artifacts when there is one,
    else the model's item vocabulary."""
    path = catalog.path(settings, "items")
    if path.exists():
        return pd.read_parquet(path, columns=["item_id"])["item_id"].astype("int64").tolist()
    return [int(k) for k in vectorizer.items]
