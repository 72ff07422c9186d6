"""Online ranking: Feast online lookups (1 user row + N item rows) + one onnxruntime run.

No encoder and no Transformer run here: PPM's heavy parts were run offline and their outputs are read from
the online store like any other feature (DESIGN.md §4), which is why plugging PPM in adds no model latency
beyond the light top.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ppm_platform.config import Settings
from ppm_platform.training.batch import FeatureEncoder


class VersionMismatchError(RuntimeError):
    """The cached PPM features were produced by a different PPM than the one the URM was trained with."""


@dataclass
class RankResult:
    """Scores for one request.

    Attributes:
        user_id: the request's user.
        scores: one row per candidate, in descending click probability: ``item_id`` (int64), ``click``,
            ``order`` (float32 probabilities), ``known`` (bool: the item has a row in the online store).
        lookup_ms: Feast online lookup wall time (ms); model_ms: feature encoding + onnxruntime wall time (ms).
        user_known: the user has a row in the online store (False = cold-start user, scored from padding).
        unknown_item_ids: candidates with no online row at all (scored with OOV id, no genres, zero PPM vector).
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

    Request path (DESIGN.md §4): two Feast ``get_online_features`` calls (the user's feature service, 1
    row; the item feature service, N rows), :meth:`FeatureEncoder.transform_request` (the user row encoded
    once and broadcast; the same code as training's :meth:`FeatureEncoder.transform`), one onnxruntime run.

    Cold start (defined behaviour, never an error): an unknown user or item (no row in the online store) is
    scored with the out-of-vocabulary ID, no side features, an empty history and zero PPM vectors -- the
    same tensors a cold entity gets offline -- and is flagged in :class:`RankResult` (``user_known``,
    ``unknown_item_ids``). Known items the URM never saw in training (new items pushed by
    :mod:`ppm_platform.serving.new_item`) get the OOV id but their real genres and PPM item vector.

    Args:
        settings: platform settings (locate the Feast repo and the model artifacts).
        model_name: ``urm`` (default) or ``base`` (the IDRec-only baseline).
        store: an existing ``feast.FeatureStore`` (default: :func:`ppm_platform.feature_store.get_store`).
        user_service / item_service: override the feature services recorded in ``model.json``
            (``user_feature_service`` / ``item_feature_service``): another service name, or a list of
            ``"view:feature"`` references (e.g. only the features the model reads).

    Raises:
        FileNotFoundError: the model artifact or its ONNX export does not exist yet.
    """

    def __init__(self, settings: Settings, model_name: str = "urm", store=None,
                 user_service: "str | list[str] | None" = None, item_service: "str | list[str] | None" = None):
        from ppm_platform.feature_store import get_store
        from ppm_platform.serving.onnx_export import OnnxScorer
        from ppm_platform.io import read_json

        model_dir = settings.models_dir / model_name
        meta_path, onnx_path = model_dir / "model.json", model_dir / "model.onnx"
        for p in (meta_path, onnx_path):
            if not p.exists():
                raise FileNotFoundError(f"{p} not found: materialize the '{model_name}_model' and "
                                        f"'{model_name}_onnx' assets first (ppm run)")
        meta = read_json(meta_path)["metadata"]
        self.model_name = model_name
        self.encoder = FeatureEncoder.from_dict(meta["feature_encoder"])
        self.ppm_version: str | None = meta.get("ppm_version")
        self.user_service = user_service or meta["user_feature_service"]
        self.item_service = item_service or meta["item_feature_service"]
        self.scorer = OnnxScorer(Path(onnx_path))
        self.store = store if store is not None else get_store(settings)
        #: every ppm_*_version value read from the online store so far (reported by /health)
        self.cache_versions_seen: set[str] = set()

    def check_versions(self, user_row: dict, items: pd.DataFrame) -> None:
        """Refuse to score features cached by another PPM than the URM's (DESIGN.md §4 version rule).

        Records every version read in :attr:`cache_versions_seen` (also for a Base model, which reads no
        PPM cache and so never refuses).

        Raises:
            VersionMismatchError: naming both versions.
        """
        found = set()
        if user_row.get("ppm_user_version") is not None:
            found.add(user_row["ppm_user_version"])
        if "ppm_item_version" in items:
            found |= {v for v in items["ppm_item_version"] if v is not None}
        self.cache_versions_seen |= found
        if self.ppm_version is None:
            return
        bad = found - {self.ppm_version}
        if bad:
            raise VersionMismatchError(
                f"URM was trained with ppm_version {self.ppm_version} but the online PPM caches hold {sorted(bad)}: "
                "recompute ppm_item_cache/ppm_user_cache and materialize, or retrain the URM")

    def lookup(self, user_id: int, item_ids: list[int]) -> tuple[dict, pd.DataFrame]:
        """The online features of the user (dict) and of the items (DataFrame, request order) from Feast."""
        from ppm_platform.feature_store import online_item_features, online_user_features

        user = online_user_features(self.store, int(user_id), service=self.user_service)
        items = online_item_features(self.store, [int(i) for i in item_ids], service=self.item_service)
        return user, items

    def probe(self, n_items: int = 5) -> dict:
        """Look up one user and ``n_items`` items the model was trained on and check their cache versions.

        Used by the HTTP service at start-up and by ``GET /health``.

        Returns:
            ``{"status": "ok" | "version_mismatch", "error": str | None, "cache_versions_seen": [...]}``.
        """
        users = [int(k) for k in list(self.encoder.users)[:1]] or [0]
        items = [int(k) for k in list(self.encoder.items)[:n_items]] or [0]
        user, item_rows = self.lookup(users[0], items)
        try:
            self.check_versions(user, item_rows)
            return {"status": "ok", "error": None, "cache_versions_seen": sorted(self.cache_versions_seen)}
        except VersionMismatchError as e:
            return {"status": "version_mismatch", "error": str(e),
                    "cache_versions_seen": sorted(self.cache_versions_seen)}

    def rank(self, user_id: int, item_ids: list[int]) -> RankResult:
        """Score ``item_ids`` for ``user_id`` from online features.

        Unknown users/items are scored with padding features (cold start, see the class docstring) and
        flagged, never rejected.

        Raises:
            ValueError: ``item_ids`` is empty.
            VersionMismatchError: see :meth:`check_versions`.
        """
        if not item_ids:
            raise ValueError("no candidate item ids")
        t0 = time.perf_counter()
        user, items = self.lookup(user_id, item_ids)
        t1 = time.perf_counter()
        self.check_versions(user, items)
        probs = self.scorer.predict(self.encoder.transform_request(user, items))
        t2 = time.perf_counter()
        feats = [c for c in items.columns if c != "item_id"]
        known = items[feats].notna().any(axis=1).to_numpy() if feats else np.ones(len(items), bool)
        user_known = any(v is not None for k, v in user.items() if k != "user_id")
        scores = pd.DataFrame({"item_id": items["item_id"].astype("int64"), "click": probs[:, 0],
                               "order": probs[:, 1], "known": known})
        scores = scores.sort_values("click", ascending=False, kind="stable").reset_index(drop=True)
        unknown = [int(i) for i, k in zip(items["item_id"], known) if not k]
        return RankResult(int(user_id), scores, (t1 - t0) * 1e3, (t2 - t1) * 1e3, user_known, unknown)
