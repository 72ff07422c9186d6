"""Online ranking: Feast online lookups (1 user row + N item rows) + one onnxruntime run.

No encoder and no Transformer run here: PPM's heavy parts were run offline and their outputs are read from
the online store like any other feature (DESIGN.md §4), which is why plugging PPM in adds no model latency
beyond the light top.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
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
        scores: one row per candidate, in descending click probability: item_id, click, order (float32).
        lookup_ms: Feast online lookup wall time (ms); model_ms: onnxruntime + encoding wall time (ms).
    """

    user_id: int
    scores: pd.DataFrame
    lookup_ms: float
    model_ms: float

    @property
    def total_ms(self) -> float:
        return self.lookup_ms + self.model_ms


class Ranker:
    """Scores candidate items for a user with the exported URM (or Base) ONNX model.

    Args:
        settings: platform settings (locate the Feast repo and the model artifacts).
        model_name: ``urm`` (default) or ``base`` (the IDRec-only baseline).
        store: an existing ``feast.FeatureStore`` (default: :func:`ppm_platform.feature_store.get_store`).

    Raises:
        FileNotFoundError: the model artifact or its ONNX export does not exist yet.
    """

    def __init__(self, settings: Settings, model_name: str = "urm", store=None):
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
        self.user_service: str = meta["user_feature_service"]
        self.item_service: str = meta["item_feature_service"]
        self.scorer = OnnxScorer(Path(onnx_path))
        self.store = store if store is not None else get_store(settings)

    def check_versions(self, user_row: dict, items: pd.DataFrame) -> None:
        """Refuse to score features cached by another PPM than the URM's (DESIGN.md §4 version rule).

        Raises:
            VersionMismatchError: naming both versions.
        """
        if self.ppm_version is None:
            return
        found = set()
        if user_row.get("ppm_user_version") is not None:
            found.add(user_row["ppm_user_version"])
        if "ppm_item_version" in items:
            found |= {v for v in items["ppm_item_version"] if v is not None}
        bad = found - {self.ppm_version}
        if bad:
            raise VersionMismatchError(
                f"URM was trained with ppm_version {self.ppm_version} but the online PPM caches hold {sorted(bad)}: "
                "recompute ppm_item_cache/ppm_user_cache and materialize, or retrain the URM")

    def rank(self, user_id: int, item_ids: list[int]) -> RankResult:
        """Score ``item_ids`` for ``user_id`` from online features.

        Unknown users/items are scored with padding features (cold start: out-of-vocabulary IDs, no
        cached PPM vectors), never rejected.

        Raises:
            ValueError: ``item_ids`` is empty.
            VersionMismatchError: see :meth:`check_versions`.
        """
        from ppm_platform.feature_store import online_item_features, online_user_features

        if not item_ids:
            raise ValueError("no candidate item ids")
        t0 = time.perf_counter()
        user = online_user_features(self.store, int(user_id), service=self.user_service)
        items = online_item_features(self.store, [int(i) for i in item_ids], service=self.item_service)
        t1 = time.perf_counter()
        self.check_versions(user, items)
        frame = items.copy()
        frame["user_id"] = int(user_id)
        for k, v in user.items():
            if k != "user_id":
                frame[k] = [v] * len(frame)
        probs = self.scorer.predict(self.encoder.transform(frame))
        t2 = time.perf_counter()
        scores = pd.DataFrame({"item_id": frame["item_id"].astype("int64"), "click": probs[:, 0], "order": probs[:, 1]})
        scores = scores.sort_values("click", ascending=False, kind="stable").reset_index(drop=True)
        return RankResult(int(user_id), scores, (t1 - t0) * 1e3, (t2 - t1) * 1e3)
