"""Choose CTR-model settings on validation: Base and URM trained on the ``training_set`` artifact
for every point of a grid over ``urm.*`` settings, e.g. the trained fallbacks for unseen ids (``urm.min_count``:
ids with fewer train impressions share the OOV row; ``urm.id_dropout``: share of training rows whose user /
item id is replaced by OOV) or the optimizer (``urm.lr``, ``urm.emb_dim``). Prints one JSON document with the
**validation** AUC (all, cold items, new users) of every point; the test split is never read. The chosen
point maximizes the mean over the models of mean(valid click AUC, valid order AUC).

Usage::

    PPM_ARTIFACTS_DIR=... python benchmarks/select_ctr.py --grid urm.min_count=1,2,5 urm.id_dropout=0,0.1,0.2 \\
        [--models Base,URM] [--out benchmarks/results/<name>.json]

(needs a finished main run: training set, PPM model). The committed runs are under ``benchmarks/results/``
(``select_ctr_*.json``); config.py's defaults are their choices (docs/evaluation.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
import time
from itertools import product

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmarks' shared helpers
from _common import emit, machine  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def parse_grid(items: list[str]) -> dict[str, list]:
    """``["urm.lr=1e-3,5e-4", ...]`` -> ``{"lr": [0.001, 0.0005], ...}`` (only ``urm.`` keys).

    Raises:
        SystemExit: a malformed item or a key outside ``urm.``.
    """
    grid = {}
    for it in items:
        key, _, vals = it.partition("=")
        if not vals or not key.startswith("urm."):
            raise SystemExit(f"--grid item {it!r}: expected urm.<field>=v1,v2,...")
        grid[key[4:]] = [_value(v) for v in vals.split(",")]
    return grid


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--grid", nargs="+", required=True, help="urm.<field>=v1,v2 ... (the product is run)")
    ap.add_argument("--models", default="Base,URM")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args()

    import pandas as pd

    from ppm_platform.config import Settings
    from ppm_platform.model_store import load_ppm
    from ppm_platform.training.urm_train import train_ctr_model

    settings = Settings.from_env()
    grid = parse_grid(args.grid)
    models = args.models.split(",")
    df = pd.read_parquet(settings.artifacts_dir / "training_set.parquet")
    ppm, meta = load_ppm(settings.models_dir / "ppm")
    points = []
    t0 = time.perf_counter()
    for values in product(*grid.values()):
        point = dict(zip(grid, values))
        s = settings.model_copy(update={"urm": settings.urm.model_copy(update=point)})
        res = {"point": point, "models": {}}
        for model in models:
            t = time.perf_counter()
            tr = train_ctr_model(s, df, use_ppm=model == "URM", ppm=ppm if model == "URM" else None)
            v = tr.metrics["valid"]
            res["models"][model] = {
                "valid_click_auc": v["all"]["click"]["auc"], "valid_order_auc": v["all"]["order"]["auc"],
                "valid_cold_items_click_auc": v["cold_items"]["click"]["auc"],
                "valid_new_users_click_auc": v["new_users"]["click"]["auc"],
                "best_epoch": max(tr.metrics["epochs"], key=lambda h: h["valid_click_auc"])["epoch"],
                "users_in_vocab": tr.vectorizer.n_users - 2, "items_in_vocab": tr.vectorizer.n_items - 2,
                "seconds": round(time.perf_counter() - t, 1)}
        res["score"] = sum((m["valid_click_auc"] + m["valid_order_auc"]) / 2 for m in res["models"].values()) / len(models)
        points.append(res)
        print(json.dumps(res), flush=True)
    best = max(points, key=lambda p: p["score"])
    doc = {"benchmark": "select_ctr", "grid": {f"urm.{k}": v for k, v in grid.items()}, "models": models,
           "selection": "max over points of the models' mean of mean(valid click AUC, valid order AUC); test not read",
           "fixed": {k: v for k, v in settings.urm.model_dump().items() if k not in grid},
           "seed": settings.seed, "ppm_version": meta.get("ppm_version"), "rows": len(df), "points": points,
           "best": best["point"], "seconds": round(time.perf_counter() - t0, 1),
           "machine": machine()}
    emit(doc, args.out)


if __name__ == "__main__":
    main()
