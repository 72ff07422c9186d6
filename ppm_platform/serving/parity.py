"""Train/serve parity: the score served from the online store vs the score from the offline point-in-time
features as of the same time, for sampled (user, item) pairs.

Like is compared with like by joining the offline features **as of the online store's materialization
time** (``as_of``, default now): Feast's point-in-time join then picks, per entity, the latest feature row
with ``feature_ts <= as_of``, which is exactly the row ``materialize(end=as_of)`` loaded into the online
store. The offline rows go through :meth:`FeatureVectorizer.transform` (training's path); the online rows
through :meth:`Ranker.rank` (Feast ``get_online_features`` + :meth:`FeatureVectorizer.transform_request`);
both are scored by the same ONNX session, so any difference is feature skew: a stale or missing online
row, a Feast type round trip, or an encoding difference between the two paths.

Pairs pushed online only (e.g. a new item from :mod:`ppm_platform.serving.new_item` before its batch
table is rebuilt) have no offline row yet; sample from the interactions, which never contain them.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd

from ppm_platform.config import Settings
from ppm_platform.data import catalog


def sample_pairs(settings: Settings, n: int, seed: int | None = None) -> pd.DataFrame:
    """Up to ``n`` distinct (user_id, item_id) pairs drawn uniformly from the interactions table.

    Returns:
        int64 columns ``user_id``, ``item_id`` (fewer rows when the data has fewer distinct pairs).

    Raises:
        FileNotFoundError: the interactions table has not been ingested.
    """
    path = catalog.path(settings, "interactions")
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: materialize the 'interactions' asset first")
    pairs = pd.read_parquet(path, columns=["user_id", "item_id"]).drop_duplicates()
    k = min(int(n), len(pairs))
    out = pairs.sample(k, random_state=settings.seed if seed is None else seed) if k < len(pairs) else pairs
    return out.astype("int64").reset_index(drop=True)


def check_parity(settings: Settings, n_pairs: int | None = None, atol: float | None = None,
                 model_name: str = "urm", as_of: datetime | None = None, ranker=None,
                 pairs: pd.DataFrame | None = None) -> dict[str, Any]:
    """Compare online-served and offline point-in-time scores on sampled (user, item) pairs.

    Args:
        n_pairs: pairs to sample (default ``settings.serving.parity_pairs``); ignored if ``pairs`` is given.
        atol: largest allowed ``|online - offline|`` on the click and order probabilities (default
            ``settings.serving.parity_atol`` = 1e-5).
        model_name: the exported model to score with (``urm`` / ``base``).
        as_of: the offline join time (UTC); default now, i.e. the state the online store was materialized
            to by :func:`ppm_platform.feature_store.materialize` (whose default end is also "now").
        ranker: an existing :class:`~ppm_platform.serving.ranker.Ranker` (default: built from settings).
        pairs: explicit ``user_id``/``item_id`` pairs instead of sampling.

    Returns:
        ``{"pairs", "users", "max_abs_diff", "mean_abs_diff", "pairs_above_atol", "atol", "passed",
        "as_of", "seconds", "worst": [{"user_id", "item_id", "online_click", "offline_click", "diff"}, ...5]}``.

    Raises:
        VersionMismatchError: the online caches hold another ``ppm_version`` than the model's.
        FileNotFoundError: the model, its ONNX export or the interactions table is missing.
    """
    from ppm_platform.feature_store import get_training_frame
    from ppm_platform.serving.ranker import Ranker

    t0 = time.perf_counter()
    atol = settings.serving.parity_atol if atol is None else float(atol)
    ranker = ranker or Ranker(settings, model_name)
    if pairs is None:
        pairs = sample_pairs(settings, settings.serving.parity_pairs if n_pairs is None else n_pairs)
    pairs = pairs[["user_id", "item_id"]].astype("int64").reset_index(drop=True)
    if pairs.empty:
        raise ValueError("no (user, item) pairs to compare")
    as_of = as_of or datetime.now(timezone.utc)

    # offline: point-in-time join as of `as_of` through the training feature service, training's transform
    entity = pairs.assign(event_timestamp=pd.Timestamp(as_of))
    frame = get_training_frame(settings, entity, service="urm_training", store=ranker.store)
    offline = ranker.scorer.predict(ranker.vectorizer.transform(frame))

    # online: one Ranker call per user, exactly the serving path
    online = np.full((len(pairs), 2), np.nan, dtype=np.float32)
    for user_id, grp in pairs.groupby("user_id", sort=False):
        res = ranker.rank(int(user_id), grp["item_id"].tolist())
        by_item = res.scores.drop_duplicates("item_id").set_index("item_id")
        online[grp.index.to_numpy()] = by_item.loc[grp["item_id"].to_numpy(), ["click", "order"]].to_numpy()

    diff = np.abs(online.astype(np.float64) - offline.astype(np.float64)).max(axis=1)
    diff = np.where(np.isfinite(diff), diff, np.inf)
    worst = np.argsort(-diff, kind="stable")[:5]
    max_diff = float(diff.max())
    return {
        "pairs": int(len(pairs)), "users": int(pairs["user_id"].nunique()),
        "max_abs_diff": max_diff, "mean_abs_diff": float(diff.mean()),
        "pairs_above_atol": int((diff > atol).sum()), "atol": atol, "passed": bool(max_diff <= atol),
        "as_of": as_of.isoformat(), "model": ranker.model_name,
        "seconds": round(time.perf_counter() - t0, 3),
        "worst": [{"user_id": int(pairs.at[i, "user_id"]), "item_id": int(pairs.at[i, "item_id"]),
                   "online_click": float(online[i, 0]), "offline_click": float(offline[i, 0]),
                   "diff": float(diff[i])} for i in worst],
    }
