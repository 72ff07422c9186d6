"""The rankers a practitioner runs before any neural model (DESIGN.md §5): the evaluation report's
first two rows, on the same point-in-time training set and split as every other row.

* ``Popularity`` (:func:`popularity_scores`): no model; each test impression is scored by its item's smoothed
  click / order rate over the train window, ``(count + m p) / (impressions + m)`` with ``p`` the train
  window's rate and ``m`` = ``counters.prior_strength`` (an item unseen in training gets ``p``).
* ``GBDT`` (:func:`train_gbdt`): scikit-learn's ``HistGradientBoostingClassifier`` (histogram gradient
  boosting, as LightGBM; scikit-learn user guide §1.11.1) on the features Base reads minus the ID embeddings
  and sequences: the user and item counters (``user_dense`` / ``item_dense`` of
  :class:`~ppm_platform.features.encoding.FeatureVectorizer`), the user side features as categoricals, the item's
  category multi-hot and content flag; no PPM. One classifier per task, early-stopped on the validation split
  and selected on validation AUC over the grid of ``settings.evaluation`` (learning rate x max_leaf_nodes).

Both are deterministic (one run each; seeds do not apply). No I/O in here.
"""

from __future__ import annotations

import time
from itertools import product

import numpy as np
import pandas as pd

from ppm_platform.config import Settings
from ppm_platform.models import TASKS
from ppm_platform.features.encoding import FeatureVectorizer
from ppm_platform.training.batch import labels


def popularity_scores(train: pd.DataFrame, rows: pd.DataFrame, strength: float) -> np.ndarray:
    """Per row of ``rows`` its item's smoothed click and order rate over ``train`` (float64 ``[len(rows), 2]``).

    Args:
        train: the train-window impressions (``item_id``, ``click``, ``order``).
        rows: the impressions to score (``item_id``).
        strength: prior weight ``m`` in impressions (> 0).
    """
    if strength <= 0:
        raise ValueError(f"prior strength must be > 0, got {strength}")
    g = train.groupby("item_id")[["click", "order"]].agg(["sum", "count"])
    out = np.empty((len(rows), 2))
    for k, t in enumerate(TASKS):
        prior = float(train[t].mean()) if len(train) else 0.5
        rate = (g[(t, "sum")] + strength * prior) / (g[(t, "count")] + strength)
        out[:, k] = rows["item_id"].map(rate).fillna(prior).to_numpy(dtype=float)
    return out


def gbdt_matrix(enc: FeatureVectorizer, x: dict[str, np.ndarray]) -> tuple[np.ndarray, list[int]]:
    """The GBDT feature matrix float32 ``[B, F]`` of encoded inputs ``x`` and the column indices of its
    categorical features (the user side features' vocabulary indices)."""
    side = x["user_side"].astype(np.float32)
    cols = [x["user_dense"], x["item_dense"], x["item_genres"], x["item_content"][:, None], side]
    mat = np.concatenate(cols, axis=1).astype(np.float32)
    first_side = mat.shape[1] - side.shape[1]
    return mat, list(range(first_side, mat.shape[1]))


def train_gbdt(settings: Settings, df: pd.DataFrame, rows: dict[str, np.ndarray], progress=None) -> dict:
    """Fit and score ``GBDT`` on the training set ``df`` split into ``rows`` (``train`` / ``valid`` / ``test``
    index arrays).

    For each task, every grid point (``evaluation.gbdt_learning_rates`` x ``evaluation.gbdt_max_leaf_nodes``)
    is fitted on the train rows with early stopping on the validation rows (``X_val``; at most
    ``evaluation.gbdt_max_iter`` trees, ``n_iter_no_change`` 30); the point with the best validation AUC is
    kept. The test rows are only scored.

    Returns:
        ``{"probs": {"valid": [V, 2], "test": [T, 2]}, "selected": {task: {"learning_rate",
        "max_leaf_nodes", "n_iter", "valid_auc"}}, "grid": [...], "train_seconds"}``.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier

    from ppm_platform.training.metrics import auc
    from ppm_platform.training.urm_train import fit_vectorizer

    t0 = time.perf_counter()
    ev = settings.evaluation
    enc = fit_vectorizer(settings, df.iloc[rows["train"]], 0)
    mat, cat = gbdt_matrix(enc, enc.transform(df))
    y = labels(df)
    probs = {s: np.zeros((len(rows[s]), 2)) for s in ("valid", "test")}
    selected, grid = {}, []
    for k, task in enumerate(TASKS):
        best = None
        for lr, leaves in product(ev.gbdt_learning_rates, ev.gbdt_max_leaf_nodes):
            m = HistGradientBoostingClassifier(learning_rate=lr, max_leaf_nodes=leaves, max_iter=ev.gbdt_max_iter,
                                               early_stopping=True, n_iter_no_change=30, categorical_features=cat,
                                               random_state=settings.seed)
            m.fit(mat[rows["train"]], y[rows["train"], k], X_val=mat[rows["valid"]], y_val=y[rows["valid"], k])
            v = auc(y[rows["valid"], k], m.predict_proba(mat[rows["valid"]])[:, 1])
            grid.append({"task": task, "learning_rate": lr, "max_leaf_nodes": leaves, "n_iter": int(m.n_iter_),
                         "valid_auc": v})
            if progress:
                progress(f"GBDT {task}: learning_rate {lr}, max_leaf_nodes {leaves}: {m.n_iter_} trees, "
                         f"valid AUC {v:.4f}")
            if best is None or v > best[0]:
                best = (v, m, grid[-1])
        _, model, sel = best
        selected[task] = sel
        for s in probs:
            probs[s][:, k] = model.predict_proba(mat[rows[s]])[:, 1]
    return {"probs": probs, "selected": selected, "grid": grid, "train_seconds": round(time.perf_counter() - t0, 1)}


def popularity_report(settings: Settings, training_set_path) -> dict:
    """The ``Popularity`` row on the training-set parquet at ``training_set_path`` (only its key, time and label
    columns are read): metrics by slice and task on the test split, as the trained models report them.

    Returns:
        ``{"test_click_auc", "test_order_auc", "test_click_gauc", "slices"}``.
    """
    from ppm_platform.data.split import split_labels
    from ppm_platform.training.metrics import evaluate_slices

    df = pd.read_parquet(training_set_path, columns=["user_id", "item_id", "event_timestamp", "click", "order"])
    split = split_labels(df["event_timestamp"], settings).to_numpy()
    train, test = df[split == "train"], df[split == "test"].reset_index(drop=True)
    slices = evaluate_slices(test, popularity_scores(train, test, settings.counters.prior_strength), train)
    a = slices["all"]
    return {"test_click_auc": a["click"]["auc"], "test_order_auc": a["order"]["auc"],
            "test_click_gauc": a["click"]["gauc"], "slices": slices}
