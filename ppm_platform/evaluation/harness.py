"""The evaluation harness: trains and scores every row of the report (:mod:`ppm_platform.evaluation`) on the
fixed protocol (:mod:`~ppm_platform.evaluation.protocol`) and hands the per-seed runs to
:func:`~ppm_platform.evaluation.aggregate.aggregate`.

Base and URM are trained by the pipeline's own trainer (:func:`~ppm_platform.training.urm_train.train_ctr_model`);
QM&EP and Base+QM&EP go through the same multi-task loop on the catalog's ME rows; PPM is the pre-trained
model scored as it is. The item-cold protocol (:mod:`ppm_platform.evaluation.item_cold`) runs this harness on
each held-out-item draw.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ppm_platform.config import Settings
from ppm_platform.evaluation.aggregate import aggregate, targets
from ppm_platform.evaluation.protocol import (
    CTR_ROWS,
    FULL,
    RECENT,
    check_ppm_version,
    protocol_record,
    report_models,
    report_slices,
    seeds,
    split_rows,
)
from ppm_platform.models import TASKS
from ppm_platform.training.batch import labels
from ppm_platform.training.metrics import evaluate_slices, slice_masks
from ppm_platform.runtime import Progress
from ppm_platform.training.urm_train import fit_multitask, predict_rows

log = logging.getLogger("ppm_platform.evaluation")


@dataclass
class MEInputs:
    """Training-set rows indexed into the catalog's ME matrix (row 0 = the all-zero padding item).

    Attributes:
        me_table: float32 ``[N_items + 1, me_dim]`` ME features (``features.item_multimodal.me_matrix``).
        target_row: int64 ``[B]`` row of each impression's item.
        hist_row: int64 ``[B, L]`` rows of the clicked items (most recent first; 0 at padding).
        hist_age_s: float32 ``[B, L]`` age of each behaviour in seconds at the sequence row's as-of time.
        hist_mask: float32 ``[B, L]`` 1 = real behaviour.
    """

    me_table: np.ndarray
    target_row: np.ndarray
    hist_row: np.ndarray
    hist_age_s: np.ndarray
    hist_mask: np.ndarray


def me_inputs(training_set: pd.DataFrame, item_multimodal: pd.DataFrame, max_len: int) -> MEInputs:
    """Index the point-in-time training set (its ``hist_item_ids`` / ``hist_age_s``, already joined as of
    each impression) into the ME matrix of ``item_multimodal``.

    Raises:
        KeyError: an impression's item or a history item has no ``item_multimodal`` row (the id and the
            training-set row position are named).
    """
    from ppm_platform.features.ppm_caches import pad_history
    from ppm_platform.training.me_index import MEIndex

    index = MEIndex.of(item_multimodal)
    target = index.rows(training_set["item_id"].to_numpy(np.int64))
    ids, age, mask = pad_history(list(training_set["hist_item_ids"]), list(training_set["hist_age_s"]), max_len)
    return MEInputs(index.table, target, index.history_rows(ids, mask), age, mask)


def _scored(df: pd.DataFrame, rows: dict[str, np.ndarray], probs: dict[str, np.ndarray],
            held_out_items: set | None = None) -> dict:
    train_df = df.iloc[rows["train"]]
    return {s: evaluate_slices(df.iloc[rows[s]], probs[s], train_df, held_out_items) for s in ("valid", "test")}


def train_me_model(settings: Settings, df: pd.DataFrame, me: MEInputs, kind: str, epochs: int,
                   progress: Progress = None, held_out_items: set | None = None) -> dict:
    """Train and score ``QM&EP`` (:class:`~ppm_platform.models.qmep.QMEP`) or ``Base+QM&EP``
    (:class:`~ppm_platform.models.qmep.BaseQMEP`) on the fixed split with ``settings.seed``.

    Args:
        df: the training set, index 0..n-1 (rows aligned with ``me``).
        kind: ``"QM&EP"`` or ``"Base+QM&EP"``.
        epochs: training epochs (best one kept on validation click AUC).

    Returns:
        ``{"valid": slices, "test": slices, "epochs": history, "train_seconds": s}`` (slices as
        :func:`~ppm_platform.training.metrics.evaluate_slices`).

    Raises:
        ValueError: unknown ``kind`` or an empty split.
    """
    from ppm_platform.models.qmep import QMEP, BaseQMEP, MEConfig

    if kind not in ("QM&EP", "Base+QM&EP"):
        raise ValueError(f"kind must be 'QM&EP' or 'Base+QM&EP', got {kind!r}")
    torch.manual_seed(settings.seed)
    t0 = time.perf_counter()
    rows = split_rows(df, settings)
    y = labels(df)
    me_cfg = MEConfig.from_settings(settings, me_dim=me.me_table.shape[1])
    me_t = torch.from_numpy(me.me_table)
    tgt, hist, mask = (torch.from_numpy(a) for a in (me.target_row, me.hist_row, me.hist_mask))
    if kind == "QM&EP":
        model: torch.nn.Module = QMEP(me_cfg)

        def logits_of(b: np.ndarray) -> torch.Tensor:
            bt = torch.from_numpy(b)
            return model.forward_catalog(me_t, tgt[bt], hist[bt], mask[bt])
    else:
        from ppm_platform.models.urm import IDREC_INPUT_NAMES, URMConfig
        from ppm_platform.training.urm_train import fit_vectorizer, training_inputs

        enc = fit_vectorizer(settings, df.iloc[rows["train"]], 0)
        x = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in enc.transform(df).items()
             if k in IDREC_INPUT_NAMES}
        model = BaseQMEP(URMConfig.from_settings(settings, enc), me_cfg)

        gen = torch.Generator().manual_seed(settings.seed)

        def logits_of(b: np.ndarray) -> torch.Tensor:
            bt = torch.from_numpy(b)
            ids = [x[n][bt] for n in IDREC_INPUT_NAMES]
            if model.training:  # the same ID / content dropout as Base / URM, training only
                ids = training_inputs(ids, settings, gen)
            return model.forward_catalog(*ids, me_t, tgt[bt], hist[bt], mask[bt])
    history = fit_multitask(model, logits_of, y, rows, settings, epochs, kind, progress)
    probs = {s: predict_rows(model, logits_of, rows[s]) for s in ("valid", "test")}
    return {**_scored(df, rows, probs, held_out_items), "epochs": history,
            "train_seconds": round(time.perf_counter() - t0, 1)}


def score_ppm(settings: Settings, df: pd.DataFrame, me: MEInputs, ppm, held_out_items: set | None = None) -> dict:
    """Score the pre-trained PPM directly (:func:`~ppm_platform.training.ppm_train.predict_ppm`: item tower +
    Transformer + readout + head on the raw ME features). PPM has a click head only: its click probability
    is used for both tasks. Returns ``{"valid": slices, "test": slices, "epochs": [], "train_seconds": s}``."""
    from ppm_platform.training.ppm_train import PPMExamples, predict_ppm

    t0 = time.perf_counter()
    rows = split_rows(df, settings)
    y = labels(df)
    ex = PPMExamples(me.me_table, me.target_row, me.hist_row, me.hist_age_s, me.hist_mask, y[:, 0],
                     np.empty(len(df), dtype=object))
    probs = {}
    for s in ("valid", "test"):
        p = predict_ppm(ppm, ex, rows[s])
        probs[s] = np.stack([p, p], axis=1)
    return {**_scored(df, rows, probs, held_out_items), "epochs": [], "train_seconds": round(time.perf_counter() - t0, 1)}

def run_evaluation(settings: Settings, training_set: pd.DataFrame, item_multimodal: pd.DataFrame, ppm,
                   ppm_version: str | None = None, progress: Progress = None,
                   held_out_items: set | None = None, models: tuple[str, ...] | None = None,
                   data_efficiency: bool | None = None) -> dict:
    """Train and score the configured report rows (``settings.evaluation``): the baselines (Popularity, GBDT,
    one run each), then the Table-2 rows with ``seeds`` seeds, plus the data-efficiency runs, and aggregate
    everything into one report dict (see :func:`~ppm_platform.evaluation.aggregate.aggregate`).

    Args:
        training_set: the point-in-time training set (``training_set`` asset; one row per impression).
        item_multimodal: the ``item_multimodal`` feature table (ME features per item).
        ppm: the pre-trained PPM of the ``ppm_model`` asset (used by ``PPM`` and ``URM``).
        ppm_version: its version; when given, the training set's cache columns must carry the same one.
        progress: optional callable(str), one line per epoch / run.
        held_out_items: the item-cold protocol's held-out items (adds their slice).
        models / data_efficiency: override ``evaluation.models`` / ``evaluation.data_efficiency``.

    Returns:
        the report dict (``schema_version``, ``protocol``, ``rows``, ``slice_sizes``, ``records``,
        ``runs``, ``targets``, ``seconds``).

    Raises:
        ValueError: an unknown model name, an empty split, a ``ppm_version`` mismatch, seeds < 1.
        KeyError: an item without an ME feature row.
    """
    from ppm_platform.training.baselines import popularity_scores, train_gbdt
    from ppm_platform.training.urm_train import train_ctr_model

    t0 = time.perf_counter()
    ev = settings.evaluation
    models, data_efficiency = report_models(settings, models, data_efficiency)
    df = training_set.reset_index(drop=True)
    check_ppm_version(df, ppm_version)
    epochs = ev.epochs or settings.urm.epochs
    rows = split_rows(df, settings)
    need_me = any(m in models for m in ("QM&EP", "PPM", "Base+QM&EP"))
    me = me_inputs(df, item_multimodal, settings.sequence.max_len) if need_me else None
    say = progress or (lambda m: log.info(m))
    runs: list[dict] = []
    train_df = df.iloc[rows["train"]]

    def record(model: str, window: str, seed: int | None, res: dict, **details) -> None:
        best = max(res["epochs"], key=lambda h: h["valid_click_auc"])["epoch"] if res["epochs"] else None
        runs.append({"model": model, "train_window": window, "seed": seed, "best_epoch": best,
                     "train_seconds": res["train_seconds"], "epochs": res["epochs"],
                     "valid": res["valid"], "test": res["test"], **details})
        t = res["test"]["all"]
        say(f"[{model} @ {window}, seed {seed}] test AUC click {t['click']['auc']:.4f} order {t['order']['auc']:.4f} "
            f"({res['train_seconds']:.0f} s, {time.perf_counter() - t0:.0f} s elapsed)")

    if "Popularity" in models:
        tp = time.perf_counter()
        probs = {s: popularity_scores(train_df, df.iloc[rows[s]], settings.counters.prior_strength)
                 for s in ("valid", "test")}
        record("Popularity", FULL, None, {**_scored(df, rows, probs, held_out_items), "epochs": [],
                                          "train_seconds": round(time.perf_counter() - tp, 1)})
    if "GBDT" in models:
        g = train_gbdt(settings, df, rows, progress)
        record("GBDT", FULL, None, {**_scored(df, rows, g["probs"], held_out_items), "epochs": [],
                                    "train_seconds": g["train_seconds"]},
               selected=g["selected"], grid=g["grid"])
    if "PPM" in models:
        record("PPM", FULL, None, score_ppm(settings, df, me, ppm, held_out_items))
    for seed in seeds(settings):
        s = settings.model_copy(update={"seed": seed, "urm": settings.urm.model_copy(update={"epochs": epochs})})
        for model in models:
            if model in CTR_ROWS:
                use_ppm, sid = CTR_ROWS[model]
                tr = train_ctr_model(s, df, use_ppm=use_ppm, ppm=ppm if use_ppm else None, progress=progress,
                                     held_out_items=held_out_items, semantic_ids=sid)
                record(model, FULL, seed, tr.metrics)
            elif model in ("QM&EP", "Base+QM&EP"):
                record(model, FULL, seed, train_me_model(s, df, me, model, epochs, progress, held_out_items))
        if data_efficiency:
            for model in ("Base", "URM"):
                tr = train_ctr_model(s, df, use_ppm=model == "URM", ppm=ppm if model == "URM" else None,
                                     progress=progress, recent_train_fraction=ev.recent_fraction,
                                     held_out_items=held_out_items, semantic_ids=False)
                record(model, RECENT, seed, tr.metrics)
    slices = report_slices(held_out_items)
    report = aggregate(runs, slices)
    y = labels(df)
    report["protocol"] = protocol_record(settings, df, models, epochs, data_efficiency, ppm_version, slices)
    report["rows"] = {k: int(len(v)) for k, v in rows.items()}
    report["rows"]["train_recent"] = int(round(len(rows["train"]) * ev.recent_fraction))
    test = df.iloc[rows["test"]]
    y_test = y[rows["test"]]
    masks = slice_masks(test, train_df["item_id"].value_counts(), set(train_df["user_id"]), held_out_items)
    report["slice_sizes"] = {
        name: {"impressions": int(m.sum()), "items": int(test.loc[m, "item_id"].nunique()),
               "click_positives": int(y_test[m, 0].sum()), "order_positives": int(y_test[m, 1].sum())}
        for name, m in masks.items()}
    report["label_rate"] = {t: float(y[rows["train"], k].mean()) for k, t in enumerate(TASKS)}
    report["targets"] = targets(report)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    return report


