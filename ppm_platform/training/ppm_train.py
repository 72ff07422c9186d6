"""PPM pre-training (ID-free, click task) on the train window.

Each training example is an impression ``(user, item, t, click)`` of the train window joined as of ``t`` to
the user's behaviour-sequence row (the last L clicks strictly before ``t``, DESIGN.md §4) -- the same
``feature_ts <= event_ts`` semantics as Feast's point-in-time join, done here with DuckDB's ``ASOF JOIN``
because PPM is pre-trained before the feature views exist (DESIGN.md §3 asset graph).

Items enter only through their multi-modal (ME) features: no ID embedding anywhere, so PPM scores
cold items as well as warm ones.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ppm_platform.config import Settings
from ppm_platform.training.metrics import auc, logloss
from ppm_platform.training.split import assign_split

log = logging.getLogger("ppm_platform.training")


def asof_sequences(interactions: pd.DataFrame, sequences_path: Path) -> pd.DataFrame:
    """Attach to each impression the latest behaviour-sequence row with ``row_ts <= event_timestamp``.

    Returns ``interactions`` (same order) plus ``hist_item_ids``, ``hist_age_s`` and ``hist_len``
    (null when the user had no click before the impression).
    """
    con = duckdb.connect()
    try:
        con.register("imp", interactions.assign(_row=np.arange(len(interactions))))
        out = con.execute(
            f"""SELECT imp.*, s.hist_item_ids, s.hist_age_s, s.hist_len
                FROM imp ASOF LEFT JOIN read_parquet('{sequences_path}') s
                  ON imp.user_id = s.user_id AND imp.event_timestamp >= s.event_timestamp
                ORDER BY imp._row""").df()
    finally:
        con.close()
    return out.drop(columns="_row")


@dataclass
class PPMExamples:
    """Dense arrays for PPM training. ``me`` row 0 is the all-zero padding item.

    Attributes:
        me: float32 [N_items + 1, me_dim] ME features by row; target/hist refer to rows.
        target: int64 [B]; hist: int64 [B, L] (0 = padding); age_s: float32 [B, L]; mask: float32 [B, L];
        click: float32 [B]; split: object [B] (train/valid/test).
    """

    me: np.ndarray
    target: np.ndarray
    hist: np.ndarray
    age_s: np.ndarray
    mask: np.ndarray
    click: np.ndarray
    split: np.ndarray


def build_examples(settings: Settings, interactions: pd.DataFrame, item_multimodal: pd.DataFrame,
                   sequences_path: Path) -> PPMExamples:
    """Join impressions to sequences as of their time and index everything into the ME table.

    Raises:
        KeyError: an impression or history refers to an item without an ME feature row.
    """
    from ppm_platform.features.item_multimodal import me_matrix
    from ppm_platform.features.ppm_caches import PAD_ITEM_ID, pad_history

    item_ids, me = me_matrix(item_multimodal)
    row_of = {int(i): r + 1 for r, i in enumerate(item_ids)}
    me = np.vstack([np.zeros((1, me.shape[1]), np.float32), me]).astype(np.float32)
    df = asof_sequences(interactions, sequences_path)
    L = settings.sequence.max_len
    try:
        target = np.fromiter((row_of[int(i)] for i in df["item_id"]), np.int64, len(df))
    except KeyError as e:
        raise KeyError(f"item_id {e.args[0]} has no item_multimodal row") from None
    ids, age, mask = pad_history(list(df["hist_item_ids"]), list(df["hist_age_s"]), L)
    try:
        hist = np.vectorize(lambda i: 0 if i == PAD_ITEM_ID else row_of[int(i)], otypes=[np.int64])(ids)
    except KeyError as e:
        raise KeyError(f"history item_id {e.args[0]} has no item_multimodal row") from None
    split = assign_split(df["event_timestamp"], settings.split.train_frac, settings.split.valid_frac).to_numpy()
    return PPMExamples(me, target, hist, age, mask,
                       df["click"].to_numpy(np.float32), split)


def _ppm_logits(ppm, me_t: torch.Tensor, target: torch.Tensor, hist: torch.Tensor, age: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
    """PPM's full forward, computed through the item tower once per step over the whole catalog (cheaper
    than B x L tower calls; identical result)."""
    item_vecs = ppm.encode_items(me_t)
    seq = ppm.encode_sequence(item_vecs[hist], age, mask)
    return ppm.logit_from_cache(item_vecs[target], seq, mask)


def predict_ppm(ppm, ex: PPMExamples, rows: np.ndarray, batch_size: int = 2048) -> np.ndarray:
    """Click probabilities float64 [len(rows)] of a (frozen) PPM on the given example rows."""
    ppm.eval()
    me_t = torch.from_numpy(ex.me)
    out = []
    with torch.inference_mode():
        item_vecs = ppm.encode_items(me_t)
        for s in range(0, len(rows), batch_size):
            b = rows[s:s + batch_size]
            mask = torch.from_numpy(ex.mask[b])
            seq = ppm.encode_sequence(item_vecs[torch.from_numpy(ex.hist[b])], torch.from_numpy(ex.age_s[b]), mask)
            out.append(torch.sigmoid(ppm.logit_from_cache(item_vecs[torch.from_numpy(ex.target[b])], seq, mask)))
    return torch.cat(out).double().numpy() if out else np.zeros(0)


def pretrain_ppm(settings: Settings, ex: PPMExamples, progress=None) -> tuple[object, dict]:
    """Pre-train PPM on the click labels of the train window; monitor validation AUC each epoch and keep
    the best epoch's weights.

    Args:
        progress: optional callable(str) for one line per epoch (Dagster log / CLI).

    Returns:
        (PPM in eval mode, metrics dict with per-epoch train loss and valid AUC, seconds, row counts).
    """
    from ppm_platform.models.ppm import PPM, PPMConfig

    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    p = settings.ppm
    cfg = PPMConfig(me_dim=ex.me.shape[1], d_model=p.d_model, n_layers=p.n_layers, n_heads=p.n_heads,
                    ff_dim=p.ff_dim, max_len=settings.sequence.max_len, n_time_buckets=p.n_time_buckets,
                    readout_hidden=p.readout_hidden, dropout=p.dropout)
    ppm = PPM(cfg)
    opt = torch.optim.AdamW(ppm.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    train_rows = np.flatnonzero(ex.split == "train")
    valid_rows = np.flatnonzero(ex.split == "valid")
    me_t = torch.from_numpy(ex.me)
    t0 = time.perf_counter()
    history, best = [], (-1.0, None)
    for epoch in range(p.epochs):
        ppm.train()
        perm = rng.permutation(train_rows)
        losses = []
        # progress bar with rate and ETA on a TTY; silent when stderr is not a terminal (tqdm disable=None)
        for s in tqdm(range(0, len(perm), p.batch_size), desc=f"PPM epoch {epoch + 1}/{p.epochs}", unit="batch",
                      disable=None, leave=False):
            b = perm[s:s + p.batch_size]
            logits = _ppm_logits(ppm, me_t, torch.from_numpy(ex.target[b]), torch.from_numpy(ex.hist[b]),
                                 torch.from_numpy(ex.age_s[b]), torch.from_numpy(ex.mask[b]))
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.from_numpy(ex.click[b]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        v_auc = auc(ex.click[valid_rows], predict_ppm(ppm, ex, valid_rows)) if len(valid_rows) else float("nan")
        history.append({"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "valid_click_auc": v_auc})
        if progress:
            progress(f"PPM epoch {epoch + 1}/{p.epochs}: train loss {np.mean(losses):.4f}, valid click AUC {v_auc:.4f}")
        if not np.isnan(v_auc) and v_auc > best[0]:
            best = (v_auc, {k: v.detach().clone() for k, v in ppm.state_dict().items()})
    if best[1] is not None:
        ppm.load_state_dict(best[1])
    ppm.eval()
    v_prob = predict_ppm(ppm, ex, valid_rows)
    metrics = {
        "train_rows": int(len(train_rows)), "valid_rows": int(len(valid_rows)),
        "seconds": round(time.perf_counter() - t0, 1), "epochs": history,
        "valid_click_auc": auc(ex.click[valid_rows], v_prob) if len(valid_rows) else float("nan"),
        "valid_click_logloss": logloss(ex.click[valid_rows], v_prob) if len(valid_rows) else float("nan"),
        "config": cfg.__dict__,
    }
    return ppm, metrics
