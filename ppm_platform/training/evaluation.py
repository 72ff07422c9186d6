"""Evaluation harness: the PPM paper's Table 2 on the fixed protocol of DESIGN.md §5, after the baselines a
practitioner runs first.

Rows (the last five are Gao et al., "PPM: A Pre-trained Plug-in Model for Click-through Rate Prediction",
WWW'24 companion, Table 2):

============== ==============================================================================================
``Popularity`` the item's smoothed train-window click / order rate, no model
               (:func:`~ppm_platform.training.baselines.popularity_scores`)
``GBDT``       gradient-boosted trees on the counters, side features and categories, no PPM
               (:func:`~ppm_platform.training.baselines.train_gbdt`; grid selected on validation)
``Base``       IDRec + MMoE (:func:`~ppm_platform.training.urm_train.train_ctr_model`, ``use_ppm=False``)
``QM&EP``      the item's frozen ME features alone (:class:`~ppm_platform.models.qmep.QMEP`), trained here
``PPM``        the pre-trained ID-free PPM scored directly
               (:func:`~ppm_platform.training.ppm_train.predict_ppm`); it has a click head only, so its click
               probability is also its order score
``Base+QM&EP`` IDRec with the ME features as extra inputs, two-stage (:class:`~ppm_platform.models.qmep.BaseQMEP`)
``URM``        IDRec + PPM top (warm-started readout over the cached PPM features) + MMoE
============== ==============================================================================================

Protocol: global time split by ``event_timestamp`` (80 / 10 / 10 %); vocabularies are fitted on the train
rows; every trained row keeps the epoch with the best **validation** click AUC (the test split is only
scored). ``n`` seeds (``Settings.seed + i``) vary the downstream training (initialisation and batch order);
the PPM pre-training and its caches are the ``ppm_model`` asset's (one pre-trained PPM), so the ``PPM`` row
has a single run. Metrics per task (click, order): AUC and logloss (scikit-learn), GAUC (per-user AUC
weighted by impressions, single-class users skipped and counted), on the slices of
:func:`~ppm_platform.training.urm_train.evaluate_slices`. Data efficiency: Base and URM trained on the most
recent ``recent_fraction`` of the train window vs all of it (PPM stays pre-trained on the full window).

Outputs (:func:`write_report`): ``report.json`` (one record per number: model, train window, split, slice,
task, metric, mean, std, seed count, per-seed values), ``report.md`` (Table-2 layout with the URM - Base
lifts and the issue's targets marked met / missed) and two PNGs (matplotlib ``Agg``). The item-cold
protocol (:mod:`ppm_platform.training.item_cold`) runs this harness on each held-out-item draw.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ppm_platform.config import Settings
from ppm_platform.training.batch import FeatureEncoder, labels
from ppm_platform.models import TASKS
from ppm_platform.training.metrics import HELD_OUT_SLICE, SLICES, evaluate_slices, slice_masks
from ppm_platform.training.split import settings_cutoffs, split_labels
from ppm_platform.training.urm_train import fit_multitask, predict_rows

log = logging.getLogger("ppm_platform.evaluation")

#: Table-2 rows, in the paper's order.
MODELS: tuple[str, ...] = ("Popularity", "GBDT", "Base", "QM&EP", "PPM", "Base+QM&EP", "URM")
#: rows with one run (no seed applies): the deterministic baselines and the single pre-trained PPM
SINGLE_RUN_MODELS = ("Popularity", "GBDT", "PPM")
METRICS: tuple[str, ...] = ("auc", "gauc", "logloss", "gauc_users", "gauc_users_skipped")
FULL, RECENT = "100%", "recent"
#: The paper's Table 2 (JD.com data; click / order AUC) for reference in the markdown report.
PAPER_TABLE2 = {"Base": (0.7252, 0.7612), "URM": (0.7343, 0.7722)}
#: Targets of issue #4 (goals, not assertions): click AUC lift on all, click AUC lift on cold items.
TARGET_CLICK_LIFT = 0.010
TARGET_COLD_LIFT = 0.03
REPORT_SCHEMA_VERSION = 1
Progress = Callable[[str], None] | None


# ---- ME inputs ------------------------------------------------------------------------------------------
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


def _split_rows(df: pd.DataFrame, settings: Settings) -> dict[str, np.ndarray]:
    split = split_labels(df["event_timestamp"], settings).to_numpy()
    rows = {s: np.flatnonzero(split == s) for s in ("train", "valid", "test")}
    for s, r in rows.items():
        if len(r) == 0:
            raise ValueError(f"the {s} split is empty ({len(df)} rows in the training set)")
    return rows


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
        :func:`~ppm_platform.training.urm_train.evaluate_slices`).

    Raises:
        ValueError: unknown ``kind`` or an empty split.
    """
    from ppm_platform.models.qmep import QMEP, BaseQMEP, MEConfig

    if kind not in ("QM&EP", "Base+QM&EP"):
        raise ValueError(f"kind must be 'QM&EP' or 'Base+QM&EP', got {kind!r}")
    torch.manual_seed(settings.seed)
    t0 = time.perf_counter()
    rows = _split_rows(df, settings)
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
        from ppm_platform.training.urm_train import fit_encoder, training_inputs

        enc = fit_encoder(settings, df.iloc[rows["train"]], 0)
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
    rows = _split_rows(df, settings)
    y = labels(df)
    ex = PPMExamples(me.me_table, me.target_row, me.hist_row, me.hist_age_s, me.hist_mask, y[:, 0],
                     np.empty(len(df), dtype=object))
    probs = {}
    for s in ("valid", "test"):
        p = predict_ppm(ppm, ex, rows[s])
        probs[s] = np.stack([p, p], axis=1)
    return {**_scored(df, rows, probs, held_out_items), "epochs": [], "train_seconds": round(time.perf_counter() - t0, 1)}


# ---- the harness ----------------------------------------------------------------------------------------
def _check_ppm_version(df: pd.DataFrame, ppm_version: str | None) -> None:
    if ppm_version is None:
        return
    for col in ("ppm_user_version", "ppm_item_version"):
        if col in df.columns:
            seen = set(df[col].dropna().astype(str).unique())
            if seen - {ppm_version}:
                raise ValueError(f"training set column {col} holds ppm_version(s) {sorted(seen)[:3]} but the PPM "
                                 f"being evaluated is {ppm_version}: re-materialize the caches and training_set")


def run_evaluation(settings: Settings, training_set: pd.DataFrame, item_multimodal: pd.DataFrame, ppm,
                   ppm_version: str | None = None, progress: Progress = None,
                   held_out_items: set | None = None, models: tuple[str, ...] | None = None,
                   data_efficiency: bool | None = None) -> dict:
    """Train and score the configured report rows (``settings.evaluation``): the baselines (Popularity, GBDT,
    one run each), then the Table-2 rows with ``seeds`` seeds, plus the data-efficiency runs, and aggregate
    everything into one report dict (see :func:`aggregate`).

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
    models = tuple(ev.models if models is None else models)
    data_efficiency = ev.data_efficiency if data_efficiency is None else data_efficiency
    unknown = set(models) - set(MODELS)
    if unknown:
        raise ValueError(f"evaluation.models: unknown model(s) {sorted(unknown)}; choose from {MODELS}")
    if ev.seeds < 1:
        raise ValueError(f"evaluation.seeds must be >= 1, got {ev.seeds}")
    df = training_set.reset_index(drop=True)
    _check_ppm_version(df, ppm_version)
    epochs = ev.epochs or settings.urm.epochs
    rows = _split_rows(df, settings)
    need_me = any(m in models for m in ("QM&EP", "PPM", "Base+QM&EP"))
    me = me_inputs(df, item_multimodal, settings.sequence.max_len) if need_me else None
    say = progress or (lambda m: log.info(m))
    runs: list[dict] = []
    train_df = df.iloc[rows["train"]]

    def scored(probs: dict[str, np.ndarray]) -> dict:
        return {s: evaluate_slices(df.iloc[rows[s]], probs[s], train_df, held_out_items) for s in ("valid", "test")}

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
        record("Popularity", FULL, None, {**scored(probs), "epochs": [],
                                          "train_seconds": round(time.perf_counter() - tp, 1)})
    if "GBDT" in models:
        g = train_gbdt(settings, df, rows, progress)
        record("GBDT", FULL, None, {**scored(g["probs"]), "epochs": [], "train_seconds": g["train_seconds"]},
               selected=g["selected"], grid=g["grid"])
    if "PPM" in models:
        record("PPM", FULL, None, score_ppm(settings, df, me, ppm, held_out_items))
    for i in range(ev.seeds):
        seed = settings.seed + i
        s = settings.model_copy(update={"seed": seed, "urm": settings.urm.model_copy(update={"epochs": epochs})})
        for model in models:
            if model in ("Base", "URM"):
                tr = train_ctr_model(s, df, use_ppm=model == "URM", ppm=ppm if model == "URM" else None,
                                     progress=progress, held_out_items=held_out_items)
                record(model, FULL, seed, tr.metrics)
            elif model in ("QM&EP", "Base+QM&EP"):
                record(model, FULL, seed, train_me_model(s, df, me, model, epochs, progress, held_out_items))
        if data_efficiency:
            for model in ("Base", "URM"):
                tr = train_ctr_model(s, df, use_ppm=model == "URM", ppm=ppm if model == "URM" else None,
                                     progress=progress, recent_train_fraction=ev.recent_fraction,
                                     held_out_items=held_out_items)
                record(model, RECENT, seed, tr.metrics)
    slices = [*SLICES, *([HELD_OUT_SLICE] if held_out_items is not None else [])]
    report = aggregate(runs, slices)
    y = labels(df)
    report["protocol"] = {
        "split": {"train_frac": settings.split.train_frac, "valid_frac": settings.split.valid_frac,
                  "by": "event_timestamp (global)",
                  **dict(zip(("valid_start", "test_start"),
                             (str(c) for c in settings_cutoffs(df["event_timestamp"], settings))))},
        "seeds": [settings.seed + i for i in range(ev.seeds)], "n_seeds": ev.seeds, "epochs": epochs,
        "models": list(models), "slices": slices, "data_efficiency": data_efficiency,
        "recent_fraction": ev.recent_fraction, "ppm_version": ppm_version,
        "selection": "best epoch by validation click AUC; GBDT: grid point by validation AUC per task, trees "
                     "early-stopped on validation; test only scored",
        "ppm_note": "one pre-trained PPM (the ppm_model asset) and its caches; seeds vary downstream training "
                    "(init + batch order) only, so the PPM row has 1 run; PPM's click probability is its "
                    "order score (click head only)",
        "baselines_note": "Popularity: the item's smoothed train-window rate (prior strength "
                          f"{settings.counters.prior_strength:g} impressions); Popularity and GBDT are "
                          "deterministic (1 run)",
        "features": {"counters_windows_days": list(settings.counters.windows_days) if settings.urm.use_counters
                     else None, "min_count": settings.urm.min_count, "id_dropout": settings.urm.id_dropout,
                     "content_dropout": settings.urm.content_dropout},
        "gbdt_grid": {"learning_rate": list(ev.gbdt_learning_rates), "max_leaf_nodes": list(ev.gbdt_max_leaf_nodes),
                      "max_iter": ev.gbdt_max_iter, "early_stopping": "on the validation split, 30 rounds"},
        "cold_item_max_train_impressions": 10, "std": "sample std (ddof=1) over seeds; 0 for 1 run",
    }
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


# ---- aggregation ------------------------------------------------------------------------------------------
def _std(v: list[float]) -> float:
    v = [x for x in v if not math.isnan(x)]
    return float(np.std(v, ddof=1)) if len(v) > 1 else 0.0


def _mean(v: list[float]) -> float:
    v = [x for x in v if not math.isnan(x)]
    return float(np.mean(v)) if v else float("nan")


def aggregate(runs: list[dict], slices: list[str] | tuple[str, ...] = SLICES) -> dict:
    """Turn per-seed runs into records: one per (model, train_window, split, slice, task, metric) with
    ``mean``, ``std`` (sample, over seeds), ``n_seeds`` and the per-seed ``values`` (in run order, i.e. seed
    order, so two models' values pair up by seed).

    Args:
        runs: ``[{"model", "train_window", "seed", "valid": slices, "test": slices, ...}]``.
        slices: the slice names to aggregate.

    Returns:
        ``{"schema_version", "records": [...], "runs": [...]}`` (runs without their slice tables).
    """
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in runs:
        groups.setdefault((r["model"], r["train_window"]), []).append(r)
    records = []
    for (model, window), rs in groups.items():
        for split in ("valid", "test"):
            for slice_name in slices:
                for task in TASKS:
                    for metric in METRICS:
                        vals = [float(r[split].get(slice_name, {}).get(task, {}).get(metric, float("nan")))
                                for r in rs]
                        records.append({"model": model, "train_window": window, "split": split,
                                        "slice": slice_name, "task": task, "metric": metric,
                                        "mean": _mean(vals), "std": _std(vals), "n_seeds": len(rs),
                                        "values": vals})
    slim = [{k: v for k, v in r.items() if k not in ("valid", "test")} for r in runs]
    return {"schema_version": REPORT_SCHEMA_VERSION, "records": records, "runs": slim}


def lookup(report: dict, model: str, metric: str = "auc", task: str = "click", slice_name: str = "all",
           split: str = "test", window: str = FULL) -> dict | None:
    """The record of one number in a report (None when that model / window was not run)."""
    for r in report["records"]:
        if (r["model"], r["train_window"], r["split"], r["slice"], r["task"], r["metric"]) == \
                (model, window, split, slice_name, task, metric):
            return r
    return None


def paired_lift(report: dict, a: str, b: str, task: str = "click", slice_name: str = "all",
                window_a: str = FULL, window_b: str = FULL, metric: str = "auc") -> dict:
    """``a - b`` on test ``metric``: ``{"mean", "std", "n"}`` of the per-seed paired differences when both rows
    have the same number (> 1) of runs (seed i with seed i), else the difference of the means with std 0
    (a single-run row such as GBDT). NaN mean when either row is missing."""
    ra = lookup(report, a, metric, task, slice_name, window=window_a)
    rb = lookup(report, b, metric, task, slice_name, window=window_b)
    if ra is None or rb is None:
        return {"mean": float("nan"), "std": 0.0, "n": 0}
    if ra["n_seeds"] == rb["n_seeds"] > 1:
        d = [x - y for x, y in zip(ra["values"], rb["values"])]
        return {"mean": _mean(d), "std": _std(d), "n": len(d)}
    return {"mean": ra["mean"] - rb["mean"], "std": 0.0, "n": 1}


def targets(report: dict) -> list[dict]:
    """The goals of issue #14 on the test split (goals, not assertions), each
    ``{"target", "measured", "std", "required", "gap", "met", "what"}`` with ``gap = measured - required``
    (>= 0: met). A lift "≥ X, ≥ 2 std" requires ``max(X, 2 std)`` of the per-seed paired differences
    (:func:`paired_lift`). Targets whose rows were not run are left out."""
    models = set(report["protocol"]["models"])
    specs = []
    if {"Base", "GBDT"} <= models:
        specs.append(("Base >= GBDT - 0.005 (click AUC)", paired_lift(report, "Base", "GBDT"), -0.005, False))
    if {"Base", "Popularity"} <= models:
        specs.append(("Base >= Popularity + 0.02 (click AUC)", paired_lift(report, "Base", "Popularity"), 0.02, False))
    if {"Base", "URM"} <= models:
        for task in TASKS:
            specs.append((f"URM - Base >= +0.010, >= 2 std ({task} AUC)", paired_lift(report, "URM", "Base", task),
                          TARGET_CLICK_LIFT, True))
        if HELD_OUT_SLICE in report["protocol"].get("slices", ()):
            specs.append((f"URM - Base >= +0.03 on held-out items (click AUC)",
                          paired_lift(report, "URM", "Base", "click", HELD_OUT_SLICE), TARGET_COLD_LIFT, False))
        if report["protocol"].get("data_efficiency"):
            for task in TASKS:
                specs.append((f"URM@recent >= Base@100% ({task} AUC)",
                              paired_lift(report, "URM", "Base", task, window_a=RECENT), 0.0, False))
    out = []
    for name, lift, required, two_std in specs:
        need = max(required, 2 * lift["std"]) if two_std else required
        ok = not math.isnan(lift["mean"]) and lift["mean"] >= need
        out.append({"target": name, "measured": lift["mean"], "std": lift["std"], "required": need,
                    "gap": lift["mean"] - need, "met": bool(ok),
                    "what": "mean of per-seed paired differences" if lift["n"] > 1 else "difference of means"})
    return out


# ---- rendering ----------------------------------------------------------------------------------------
def _fmt(r: dict | None, digits: int = 4) -> str:
    if r is None or math.isnan(r["mean"]):
        return "–"
    s = f"{r['mean']:.{digits}f}"
    return s + (f" ± {r['std']:.{digits}f}" if r["n_seeds"] > 1 else "")


def _lift(report: dict, metric: str, task: str, slice_name: str = "all", window: str = FULL) -> str:
    lift = paired_lift(report, "URM", "Base", task, slice_name, window, window, metric)
    if math.isnan(lift["mean"]):
        return "–"
    return f"{lift['mean']:+.4f}" + (f" ± {lift['std']:.4f}" if lift["n"] > 1 else "")


def _slices(report: dict) -> list[str]:
    return list(report["protocol"].get("slices", SLICES))


def render_markdown(report: dict, plots: dict[str, str] | None = None, title: str | None = None) -> str:
    """``report.md``: the baselines then the Table-2 rows (click / order AUC, GAUC, logloss, mean ± std over
    seeds) with the URM - Base lift (mean ± std of the per-seed paired differences), AUC by slice, data
    efficiency, the targets met / missed with their gap, and the protocol. ``plots`` maps a title to a PNG
    file name to link."""
    p = report["protocol"]
    models = [m for m in MODELS if m in p["models"]]
    slices = _slices(report)
    L = [f"# {title or 'PPM evaluation report (paper Table 2 on MovieLens-100K)'}", ""]
    L.append(f"Test split, {report['rows']['test']} impressions; train {report['rows']['train']}, "
             f"valid {report['rows']['valid']}. Seeds {p['seeds']} (mean ± sample std); "
             f"{p['epochs']} epochs, best epoch on validation click AUC. PPM version `{p['ppm_version']}`.")
    L += ["", "## Table 2 (test, all impressions)", "",
          "| Model | Click AUC | Order AUC | Click GAUC | Order GAUC | Click logloss | Order logloss | runs |",
          "|---|---|---|---|---|---|---|---|"]
    for m in models:
        cells = [_fmt(lookup(report, m, met, t)) for met in ("auc", "gauc", "logloss") for t in TASKS]
        n = (lookup(report, m) or {}).get("n_seeds", 0)
        L.append(f"| {m} | " + " | ".join(cells) + f" | {n} |")
    if "URM" in models and "Base" in models:
        L.append("| **URM − Base** | " + " | ".join(_lift(report, met, t) for met in ("auc", "gauc", "logloss")
                                                 for t in TASKS) + " | |")
    L.append(f"| paper (JD.com): Base / URM | {PAPER_TABLE2['Base'][0]} / {PAPER_TABLE2['URM'][0]} | "
             f"{PAPER_TABLE2['Base'][1]} / {PAPER_TABLE2['URM'][1]} | | | | | |")
    L += ["", "GAUC skips users whose test impressions are all one class: "
          + ", ".join(f"{t} {int(lookup(report, models[0], 'gauc_users_skipped', t)['mean'])} skipped / "
                      f"{int(lookup(report, models[0], 'gauc_users', t)['mean'])} used" for t in TASKS) + "."]
    for task in TASKS:
        L += ["", f"## {task.capitalize()} AUC by slice (test)", "",
              "| Model | " + " | ".join(f"{s} ({report['slice_sizes'][s]['impressions']} imp.)" for s in slices) + " |",
              "|---|" + "---|" * len(slices)]
        for m in models:
            L.append(f"| {m} | " + " | ".join(_fmt(lookup(report, m, "auc", task, s)) for s in slices) + " |")
        if "URM" in models and "Base" in models:
            L.append("| **URM − Base** | " + " | ".join(_lift(report, "auc", task, s) for s in slices) + " |")
    if p["data_efficiency"]:
        frac = int(round(p["recent_fraction"] * 100))
        L += ["", f"## Data efficiency (test, all): most recent {frac} % of the train window vs 100 %", "",
              f"| Model | Click AUC @{frac} % | Click AUC @100 % | Order AUC @{frac} % | Order AUC @100 % |",
              "|---|---|---|---|---|"]
        for m in ("Base", "URM"):
            L.append(f"| {m} | " + " | ".join(_fmt(lookup(report, m, "auc", t, window=w))
                                              for t in TASKS for w in (RECENT, FULL)) + " |")
    if any(r["model"] == "GBDT" for r in report["runs"]):
        sel = next(r for r in report["runs"] if r["model"] == "GBDT")["selected"]
        L += ["", "GBDT selected on validation AUC: " + "; ".join(
            f"{t} learning_rate {v['learning_rate']}, max_leaf_nodes {v['max_leaf_nodes']}, {v['n_iter']} trees "
            f"(valid AUC {v['valid_auc']:.4f})" for t, v in sel.items()) + "."]
    L += ["", "## Targets (goals of issue #14; test AUC, not assertions)", "",
          "| Target | Measured | Std | Required | Gap | Status |", "|---|---|---|---|---|---|"]
    for t in report["targets"]:
        L.append(f"| {t['target']} | {t['measured']:+.4f} | {t['std']:.4f} | {t['required']:+.4f} | {t['gap']:+.4f} | "
                 f"{'met' if t['met'] else 'missed'} |")
    sizes = report["slice_sizes"]
    L += ["", "## Protocol", "",
          f"- Split: global time split by event_timestamp, {p['split']['train_frac']:.0%} / "
          f"{p['split']['valid_frac']:.0%} / rest (validation from {p['split'].get('valid_start', '?')}, test from "
          f"{p['split'].get('test_start', '?')}); vocabularies fitted on train rows.",
          f"- Slices: cold_items = test items with <= {p['cold_item_max_train_impressions']} training impressions "
          f"({sizes['cold_items']['impressions']} impressions on {sizes['cold_items']['items']} items); new_users = "
          f"no training impressions ({sizes['new_users']['impressions']} impressions)"
          + (f"; {HELD_OUT_SLICE} = the item-cold protocol's held-out items ({sizes[HELD_OUT_SLICE]['impressions']} "
             f"impressions on {sizes[HELD_OUT_SLICE]['items']} items)" if HELD_OUT_SLICE in sizes else "") + ".",
          f"- {p['ppm_note']}; {p.get('baselines_note', '')}.",
          f"- Selection: {p['selection']}.",
          "- Data-efficiency runs: cold / new-user slices are relative to the rows each run trained on.",
          f"- Harness wall time: {report.get('seconds', float('nan')):.0f} s."]
    for title_, name in (plots or {}).items():
        L += ["", f"![{title_}]({name})"]
    return "\n".join(L) + "\n"


def _bar_plots(report: dict, out_dir: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = report["protocol"]
    models = [m for m in MODELS if m in p["models"]]
    slices = _slices(report)
    paths = {}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), dpi=100, sharey=True)
    width = 0.8 / max(len(models), 1)
    for ax, task in zip(axes, TASKS):
        for j, m in enumerate(models):
            recs = [lookup(report, m, "auc", task, s) for s in slices]
            ax.bar(np.arange(len(slices)) + j * width, [r["mean"] for r in recs], width,
                   yerr=[r["std"] for r in recs], capsize=2, label=m)
        ax.set_xticks(np.arange(len(slices)) + width * (len(models) - 1) / 2, slices)
        ax.set_title(f"test {task} AUC by slice")
        ax.set_ylim(0.45, None)
        ax.axhline(0.5, color="gray", lw=0.8, ls=":")
    axes[0].set_ylabel("AUC (mean ± std over seeds)")
    axes[1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    paths["auc_by_model_and_slice"] = out_dir / "auc_by_model_slice.png"
    fig.savefig(paths["auc_by_model_and_slice"])
    plt.close(fig)
    if p["data_efficiency"]:
        frac = int(round(p["recent_fraction"] * 100))
        fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
        labels_, means, stds = [], [], []
        for t in TASKS:
            for m in ("Base", "URM"):
                for w, wl in ((RECENT, f"{frac}%"), (FULL, "100%")):
                    r = lookup(report, m, "auc", t, window=w)
                    labels_.append(f"{m}\n@{wl}\n{t}")
                    means.append(r["mean"] if r else float("nan"))
                    stds.append(r["std"] if r else 0.0)
        colors = ["tab:blue", "tab:cyan", "tab:red", "tab:pink"] * 2
        ax.bar(range(len(means)), means, yerr=stds, capsize=3, color=colors)
        ax.set_xticks(range(len(means)), labels_, fontsize=7)
        base_full = lookup(report, "Base", "auc", "click")
        if base_full:
            ax.axhline(base_full["mean"], color="tab:blue", lw=0.8, ls="--", label="Base@100% click")
        ax.set_ylim(max(0.45, np.nanmin(means) - 0.03) if means else 0.45, None)
        ax.set_ylabel("test AUC (all)")
        ax.set_title("data efficiency: Base and URM on the recent window vs the full window")
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths["data_efficiency"] = out_dir / "data_efficiency.png"
        fig.savefig(paths["data_efficiency"])
        plt.close(fig)
    return paths


def markdown_image(path: Path, alt: str) -> str:
    """Markdown with ``path`` (PNG) embedded as a base64 data URI, so a Dagster ``MetadataValue.md`` shows it."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(Path(path).read_bytes()).decode()})"


def write_report(report: dict, out_dir: Path, title: str | None = None) -> dict[str, Path]:
    """Write ``report.json``, the PNG plots and ``report.md`` (linking the plots; headed ``title``) into ``out_dir``.

    Returns:
        ``{"json": ..., "markdown": ..., "auc_by_model_and_slice": ..., "data_efficiency": ...}`` paths.
    """
    from ppm_platform.io import write_json_atomic

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = _bar_plots(report, out_dir)
    md = render_markdown(report, {k.replace("_", " "): p.name for k, p in plots.items()}, title)
    write_json_atomic(json_safe(report), out_dir / "report.json")
    (out_dir / "report.md").write_text(md)
    return {"json": out_dir / "report.json", "markdown": out_dir / "report.md", **plots}


def json_safe(o):
    """NaN -> None so report.json is strict JSON."""
    if isinstance(o, float):
        return None if math.isnan(o) else o
    if isinstance(o, dict):
        return {k: json_safe(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [json_safe(v) for v in o]
    return o


def load_report(path: Path) -> dict:
    """Read a ``report.json`` back (None -> NaN is not restored; numbers stay as written)."""
    return json.loads(Path(path).read_text())
