"""Per-seed runs -> the report's numbers: mean and sample std over seeds per record, the paired (seed i with
seed i) differences between two rows, the targets met / missed, and the item-cold protocol's summary over
its draws. Pure functions of plain dicts (no training, no I/O).
"""

from __future__ import annotations

import math

import numpy as np

from ppm_platform.evaluation.protocol import (
    FULL,
    METRICS,
    RECENT,
    REPORT_SCHEMA_VERSION,
    TARGET_CLICK_LIFT,
    TARGET_COLD_LIFT,
    TARGET_SID_COLD_LIFT,
    TARGET_SID_LIFT,
)
from ppm_platform.models import TASKS
from ppm_platform.training.metrics import HELD_OUT_SLICE, SLICES


def mean(v: list[float]) -> float:
    """Mean of the non-NaN values (NaN when there is none)."""
    v = [x for x in v if not math.isnan(x)]
    return float(np.mean(v)) if v else float("nan")


def std(v: list[float]) -> float:
    """Sample std (``ddof=1``) of the non-NaN values; 0 for fewer than two."""
    v = [x for x in v if not math.isnan(x)]
    return float(np.std(v, ddof=1)) if len(v) > 1 else 0.0


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
                                        "mean": mean(vals), "std": std(vals), "n_seeds": len(rs),
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
        return {"mean": mean(d), "std": std(d), "n": len(d)}
    return {"mean": ra["mean"] - rb["mean"], "std": 0.0, "n": 1}


def targets(report: dict) -> list[dict]:
    """The report's goals on the test split (goals, not assertions), each
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
            specs.append(("URM - Base >= +0.03 on held-out items (click AUC)",
                          paired_lift(report, "URM", "Base", "click", HELD_OUT_SLICE), TARGET_COLD_LIFT, False))
        if report["protocol"].get("data_efficiency"):
            for task in TASKS:
                specs.append((f"URM@recent >= Base@100% ({task} AUC)",
                              paired_lift(report, "URM", "Base", task, window_a=RECENT), 0.0, False))
    if {"URM", "URM+SID"} <= models:
        specs.append(("URM+SID - URM >= +0.005, >= 2 std (click AUC)", paired_lift(report, "URM+SID", "URM"),
                      TARGET_SID_LIFT, True))
        if HELD_OUT_SLICE in report["protocol"].get("slices", ()):
            specs.append(("URM+SID - URM >= +0.01, >= 2 std on held-out items (click AUC)",
                          paired_lift(report, "URM+SID", "URM", "click", HELD_OUT_SLICE), TARGET_SID_COLD_LIFT, True))
    out = []
    for name, lift, required, two_std in specs:
        need = max(required, 2 * lift["std"]) if two_std else required
        ok = not math.isnan(lift["mean"]) and lift["mean"] >= need
        out.append({"target": name, "measured": lift["mean"], "std": lift["std"], "required": need,
                    "gap": lift["mean"] - need, "met": bool(ok),
                    "what": "mean of per-seed paired differences" if lift["n"] > 1 else "difference of means"})
    return out


#: the paired lifts the item-cold summary reports on the held-out items (when both rows ran)
DRAW_LIFTS = (("URM", "Base"), ("URM+SID", "URM"), ("Base+SID", "Base"))


def combine_draws(reports: list[dict], draw_seeds: list[int]) -> dict:
    """The item-cold protocol's summary over the draws' evaluation reports: per model and task, test AUC on the
    held-out items (and on all impressions) per draw (the mean over that draw's model seeds) with the mean and
    the std over draws; and the URM - Base lift (and, when both ran, URM+SID - URM and Base+SID - Base) on the
    held-out items per draw (mean and std of its per-seed paired differences) with the mean and std over draws.

    Returns:
        ``{"draws", "draw_seeds", "models", "auc": {model: {task: {slice: {"per_draw", "mean", "std_over_draws"}}}},
        "lift_urm_base": {task: {"per_draw", "per_draw_seed_std", "mean", "std_over_draws"}}, "target",
        "lifts": {"A - B": {task: {...}}}}`` (``lifts`` holds every lift, ``lift_urm_base`` is its URM - Base).
    """
    models = [m for m in reports[0]["protocol"]["models"]] if reports else []
    out: dict = {"draws": len(reports), "draw_seeds": draw_seeds, "models": models, "auc": {}, "lift_urm_base": {}}
    for m in models:
        out["auc"][m] = {}
        for t in TASKS:
            out["auc"][m][t] = {}
            for sl in ("all", HELD_OUT_SLICE):
                per = [(lookup(r, m, "auc", t, sl) or {"mean": float("nan")})["mean"] for r in reports]
                out["auc"][m][t][sl] = {"per_draw": per, "mean": mean(per), "std_over_draws": std(per)}
    out["lifts"] = {}
    for a, b in DRAW_LIFTS:
        if {a, b} <= set(models):
            out["lifts"][f"{a} - {b}"] = {}
            for t in TASKS:
                lifts = [paired_lift(r, a, b, t, HELD_OUT_SLICE) for r in reports]
                per = [x["mean"] for x in lifts]
                out["lifts"][f"{a} - {b}"][t] = {"per_draw": per, "per_draw_seed_std": [x["std"] for x in lifts],
                                                 "mean": mean(per), "std_over_draws": std(per)}
    if {"URM", "Base"} <= set(models):
        out["lift_urm_base"] = out["lifts"]["URM - Base"]
        lift = out["lift_urm_base"]["click"]["mean"]
        out["target"] = {"target": "URM - Base >= +0.03 on held-out items (click AUC, mean over draws)",
                         "measured": lift, "required": TARGET_COLD_LIFT, "gap": lift - TARGET_COLD_LIFT,
                         "met": bool(not math.isnan(lift) and lift >= TARGET_COLD_LIFT)}
    if "URM+SID - URM" in out["lifts"]:
        lift = out["lifts"]["URM+SID - URM"]["click"]["mean"]
        out["target_sid"] = {"target": "URM+SID - URM >= +0.01 on held-out items (click AUC, mean over draws)",
                             "measured": lift, "required": TARGET_SID_COLD_LIFT, "gap": lift - TARGET_SID_COLD_LIFT,
                             "met": bool(not math.isnan(lift) and lift >= TARGET_SID_COLD_LIFT)}
    return out
