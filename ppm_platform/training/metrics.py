"""CTR metrics and the evaluation slices: AUC and logloss from scikit-learn, GAUC (per-user AUC weighted by
impressions), and the one definition of the test slices (all / cold items / warm items / new users, DESIGN.md
§5) that the trainers' metrics and the evaluation report both use."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import log_loss, roc_auc_score

from ppm_platform.models import TASKS

#: Cold-item threshold of the evaluation protocol (DESIGN.md §5): <= this many training impressions.
COLD_ITEM_MAX_TRAIN_IMPRESSIONS = 10
#: slices of DESIGN.md §5, in report order; :data:`HELD_OUT_SLICE` is added on the item-cold protocol's runs
SLICES: tuple[str, ...] = ("all", "cold_items", "warm_items", "new_users")
#: the item-cold protocol's slice: test impressions of the items whose train-window events were removed
HELD_OUT_SLICE = "held_out_items"


@dataclass
class GAUCResult:
    """GAUC and how many users it had to skip (single-class users have no AUC)."""

    gauc: float
    users_used: int
    users_skipped: int
    impressions_used: int


def auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """ROC AUC (``sklearn.metrics.roc_auc_score``); NaN when ``y_true`` has a single class."""
    y_true = np.asarray(y_true)
    if len(np.unique(y_true)) < 2:
        return float("nan")
    return float(roc_auc_score(y_true, y_score))


def logloss(y_true: np.ndarray, y_prob: np.ndarray) -> float:
    """Binary cross-entropy in nats (``sklearn.metrics.log_loss``, probabilities clipped to [1e-7, 1-1e-7])."""
    p = np.clip(np.asarray(y_prob, dtype=np.float64), 1e-7, 1 - 1e-7)
    return float(log_loss(np.asarray(y_true), p, labels=[0, 1]))


def gauc(user_ids: np.ndarray, y_true: np.ndarray, y_score: np.ndarray) -> GAUCResult:
    """Group AUC: per-user AUC weighted by the user's impression count (Zhou et al., DIN, KDD'18 §6.1).

    Users whose impressions are all one class are skipped and counted in ``users_skipped``.
    """
    df = pd.DataFrame({"u": np.asarray(user_ids), "y": np.asarray(y_true), "s": np.asarray(y_score)})
    num, den, used, skipped = 0.0, 0, 0, 0
    for _, g in df.groupby("u", sort=False):
        if g["y"].nunique() < 2:
            skipped += 1
            continue
        num += roc_auc_score(g["y"], g["s"]) * len(g)
        den += len(g)
        used += 1
    return GAUCResult(num / den if den else float("nan"), used, skipped, den)


def task_metrics(user_ids: np.ndarray, y_true: np.ndarray, y_prob: np.ndarray) -> dict:
    """AUC, GAUC, logloss and counts for one task on one slice."""
    g = gauc(user_ids, y_true, y_prob)
    return {"auc": auc(y_true, y_prob), "gauc": g.gauc, "logloss": logloss(y_true, y_prob),
            "impressions": int(len(y_true)), "positives": int(np.sum(y_true)),
            "gauc_users": g.users_used, "gauc_users_skipped": g.users_skipped}


def slice_masks(test: pd.DataFrame, item_counts: pd.Series, train_users: set,
                held_out_items: set | None = None) -> dict[str, np.ndarray]:
    """Boolean masks (``[len(test)]``) of the slices of DESIGN.md §5 over ``test`` rows: ``all``;
    ``cold_items`` (items with <= :data:`COLD_ITEM_MAX_TRAIN_IMPRESSIONS` train impressions, from
    ``item_counts`` indexed by item id); ``warm_items``; ``new_users`` (not in ``train_users``); plus
    :data:`HELD_OUT_SLICE` when ``held_out_items`` is given."""
    n_train = test["item_id"].map(item_counts).fillna(0).to_numpy()
    out = {
        "all": np.ones(len(test), bool),
        "cold_items": n_train <= COLD_ITEM_MAX_TRAIN_IMPRESSIONS,
        "warm_items": n_train > COLD_ITEM_MAX_TRAIN_IMPRESSIONS,
        "new_users": ~test["user_id"].isin(train_users).to_numpy(),
    }
    if held_out_items is not None:
        out[HELD_OUT_SLICE] = test["item_id"].isin(held_out_items).to_numpy()
    return out


def evaluate_slices(test: pd.DataFrame, probs: np.ndarray, train: pd.DataFrame,
                    held_out_items: set | None = None) -> dict:
    """Per-task :func:`task_metrics` on the slices of :func:`slice_masks`, the slices taken from the ``train``
    rows (``item_id``, ``user_id``).

    Args:
        test: the scored rows (``user_id``, ``item_id``, ``click``, ``order``).
        probs: float ``[len(test), 2]`` click / order probabilities.

    Returns:
        ``{slice: {"click": metrics, "order": metrics, "impressions": n}}`` (no task entries on an empty slice).
    """
    return evaluate_slices_counts(test, probs, train["item_id"].value_counts(), set(train["user_id"]), held_out_items)


def evaluate_slices_counts(test: pd.DataFrame, probs: np.ndarray, item_counts: pd.Series, train_users: set,
                           held_out_items: set | None = None) -> dict:
    """:func:`evaluate_slices` from the train split's impressions per item (``item_counts``, indexed by
    item id) and its set of user ids, instead of the train rows themselves (what a streamed trainer keeps)."""
    y = test[["click", "order"]].to_numpy(dtype=np.float32)
    users = test["user_id"].to_numpy()
    out = {}
    for name, m in slice_masks(test, item_counts, train_users, held_out_items).items():
        out[name] = {t: task_metrics(users[m], y[m, k], probs[m, k]) for k, t in enumerate(TASKS)} if m.any() else {}
        out[name]["impressions"] = int(m.sum())
    return out
