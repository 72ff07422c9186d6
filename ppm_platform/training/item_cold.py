"""The item-cold protocol (issue #14, DESIGN.md §5): cold start measured where it can be seen.

The cold-items slice of the standard split has about 590 test impressions, too few to separate models. Here
a seeded share (``evaluation.item_cold_share``, 20 %) of the catalog is *held out*: their train-window events
are removed from the interactions, as if those items launched when the validation window starts, and the same
pipeline runs on that data with the full data's split cut points. Counters, behaviour sequences, vocabularies
and PPM pre-training then all treat them as new; their content features and caches are computed as for any
item (the ME features are the full run's: the encoders never saw clicks). AUC is reported on their test
impressions (about 2,000 on MovieLens-100K), per draw and as the spread over ``evaluation.item_cold_draws``
draws.

This module holds the protocol's pure parts (the draw, the data of one draw, the combined summary); the run
itself is :func:`ppm_platform.pipeline.item_cold_report` (it calls the pipeline's stages). No Dagster here.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from ppm_platform.config import Settings

#: feature tables of the full run a draw reuses (content and profiles: no click ever went into them)
REUSED_FEATURES = ("item_multimodal", "item_profile", "user_profile")
REUSED_TABLES = ("items", "users", "queries")


def draw_held_out(item_ids: np.ndarray, share: float, seed: int) -> np.ndarray:
    """A seeded ``share`` of ``item_ids`` (sorted int64), the draw's held-out items.

    Raises:
        ValueError: ``share`` outside (0, 1).
    """
    if not 0 < share < 1:
        raise ValueError(f"item_cold_share must be in (0, 1), got {share}")
    ids = np.unique(np.asarray(item_ids, dtype=np.int64))
    k = max(1, int(round(len(ids) * share)))
    return np.sort(np.random.default_rng(seed).choice(ids, size=k, replace=False))


def draw_settings(settings: Settings, draw: int, valid_start: pd.Timestamp, test_start: pd.Timestamp) -> Settings:
    """The settings of draw ``draw``: artifacts under ``<artifacts>/item_cold/draw_<i>``, the full data's split
    cut points fixed, everything else as ``settings``."""
    s = settings.model_copy(deep=True)
    s.artifacts_dir = settings.artifacts_dir / "item_cold" / f"draw_{draw}"
    s.split.valid_start, s.split.test_start = valid_start.to_pydatetime(), test_start.to_pydatetime()
    return s.ensure_dirs()


def prepare_draw(settings: Settings, draw: Settings, held_out: np.ndarray, valid_start: pd.Timestamp) -> dict:
    """Write draw ``draw``'s inputs from the full run's artifacts (``settings``): the canonical tables with the
    held-out items' train-window events (``event_timestamp < valid_start``) removed from the interactions, and
    the reused content / profile feature tables with the held-out items' rows re-stamped to ``valid_start``
    when older (they "launch" then).

    Returns:
        ``{"held_out_items", "held_out_item_ids", "interactions_removed", "interactions_kept"}``.

    Raises:
        FileNotFoundError: a table or feature table of the full run is missing (run the main job first).
    """
    from ppm_platform.data.schemas import FEATURE_TABLES, INTERACTIONS
    from ppm_platform.io import write_parquet_atomic

    for name in REUSED_TABLES:
        src = settings.tables_dir / f"{name}.parquet"
        if src.exists() or name != "queries":
            shutil.copyfile(src, draw.tables_dir / f"{name}.parquet")
    inter = pd.read_parquet(settings.tables_dir / "interactions.parquet")
    drop = inter["item_id"].isin(set(held_out.tolist())) & (inter["event_timestamp"] < valid_start)
    write_parquet_atomic(inter[~drop], draw.tables_dir / "interactions.parquet", INTERACTIONS)
    held = set(held_out.tolist())
    for name in REUSED_FEATURES:
        df = pd.read_parquet(settings.features_dir / f"{name}.parquet")
        if "item_id" in df.columns:
            m = df["item_id"].isin(held) & (df["event_timestamp"] < valid_start)
            df.loc[m, "event_timestamp"] = valid_start
        write_parquet_atomic(df, draw.features_dir / f"{name}.parquet", FEATURE_TABLES[name])
    return {"held_out_items": int(len(held_out)), "held_out_item_ids": [int(i) for i in held_out],
            "interactions_removed": int(drop.sum()),
            "interactions_kept": int((~drop).sum())}


def _mean(v: list[float]) -> float:
    v = [x for x in v if not math.isnan(x)]
    return float(np.mean(v)) if v else float("nan")


def _std(v: list[float]) -> float:
    v = [x for x in v if not math.isnan(x)]
    return float(np.std(v, ddof=1)) if len(v) > 1 else 0.0


def combine_draws(reports: list[dict], draw_seeds: list[int]) -> dict:
    """The protocol's summary over the draws' evaluation reports: per model and task, test AUC on the held-out
    items (and on all impressions) per draw (the mean over that draw's model seeds) with the mean and the std
    over draws; and the URM - Base lift on the held-out items per draw (mean and std of its per-seed paired
    differences) with the mean and std over draws.

    Returns:
        ``{"draws", "draw_seeds", "models", "auc": {model: {task: {slice: {"per_draw", "mean", "std_over_draws"}}}},
        "lift_urm_base": {task: {"per_draw", "per_draw_seed_std", "mean", "std_over_draws"}}, "target"}``.
    """
    from ppm_platform.training.evaluation import TARGET_COLD_LIFT, lookup, paired_lift
    from ppm_platform.models import TASKS
    from ppm_platform.training.metrics import HELD_OUT_SLICE

    models = [m for m in reports[0]["protocol"]["models"]] if reports else []
    out: dict = {"draws": len(reports), "draw_seeds": draw_seeds, "models": models, "auc": {}, "lift_urm_base": {}}
    for m in models:
        out["auc"][m] = {}
        for t in TASKS:
            out["auc"][m][t] = {}
            for sl in ("all", HELD_OUT_SLICE):
                per = [(lookup(r, m, "auc", t, sl) or {"mean": float("nan")})["mean"] for r in reports]
                out["auc"][m][t][sl] = {"per_draw": per, "mean": _mean(per), "std_over_draws": _std(per)}
    if {"URM", "Base"} <= set(models):
        for t in TASKS:
            lifts = [paired_lift(r, "URM", "Base", t, HELD_OUT_SLICE) for r in reports]
            per = [x["mean"] for x in lifts]
            out["lift_urm_base"][t] = {"per_draw": per, "per_draw_seed_std": [x["std"] for x in lifts],
                                       "mean": _mean(per), "std_over_draws": _std(per)}
        lift = out["lift_urm_base"]["click"]["mean"]
        out["target"] = {"target": "URM - Base >= +0.03 on held-out items (click AUC, mean over draws)",
                         "measured": lift, "required": TARGET_COLD_LIFT, "gap": lift - TARGET_COLD_LIFT,
                         "met": bool(not math.isnan(lift) and lift >= TARGET_COLD_LIFT)}
    return out


def render_summary(summary: dict, sizes: list[dict]) -> str:
    """Markdown of :func:`combine_draws` (``sizes``: each draw's held-out slice size)."""
    from ppm_platform.models import TASKS
    from ppm_platform.training.metrics import HELD_OUT_SLICE

    L = ["# Item-cold protocol", "",
         f"{summary['draws']} draws (held-out-item seeds {summary['draw_seeds']}); held-out test impressions per draw: "
         + ", ".join(str(s["impressions"]) for s in sizes) + ". Test AUC per draw = mean over the draw's model "
         "seeds; ± = std over draws.", "",
         "| Model | " + " | ".join(f"{t} AUC, held-out items" for t in TASKS) + " | "
         + " | ".join(f"{t} AUC, all" for t in TASKS) + " | per-draw click AUC, held-out |",
         "|---|---|---|---|---|---|"]

    def f(c: dict) -> str:
        return "–" if math.isnan(c["mean"]) else f"{c['mean']:.4f} ± {c['std_over_draws']:.4f}"

    for m in summary["models"]:
        a = summary["auc"][m]
        per = ", ".join("–" if math.isnan(x) else f"{x:.4f}" for x in a["click"][HELD_OUT_SLICE]["per_draw"])
        L.append(f"| {m} | " + " | ".join(f(a[t][HELD_OUT_SLICE]) for t in TASKS) + " | "
                 + " | ".join(f(a[t]["all"]) for t in TASKS) + f" | {per} |")
    if summary["lift_urm_base"]:
        lc, lo = (summary["lift_urm_base"][t] for t in TASKS)
        L.append(f"| **URM − Base** | {lc['mean']:+.4f} ± {lc['std_over_draws']:.4f} | "
                 f"{lo['mean']:+.4f} ± {lo['std_over_draws']:.4f} | | | "
                 + ", ".join(f"{x:+.4f} (seed std {s:.4f})" for x, s in zip(lc["per_draw"], lc["per_draw_seed_std"]))
                 + " |")
        t = summary["target"]
        L += ["", f"Target: {t['target']}: measured {t['measured']:+.4f}, required {t['required']:+.4f}, gap "
                  f"{t['gap']:+.4f}: **{'met' if t['met'] else 'missed'}**."]
    return "\n".join(L) + "\n"


def clean_draw(draw: Settings) -> None:
    """Remove a draw's bulky intermediates (feature tables, training set, Feast online store) once its report is
    written; its report, tables and models stay."""
    for p in (draw.features_dir, draw.artifacts_dir / "training_set.parquet", draw.feast_dir):
        if Path(p).is_dir():
            shutil.rmtree(p, ignore_errors=True)
        elif Path(p).exists():
            Path(p).unlink()
