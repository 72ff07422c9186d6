"""CTR metrics: AUC and logloss from scikit-learn, GAUC (per-user AUC weighted by impressions)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import log_loss, roc_auc_score


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
