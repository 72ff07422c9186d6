"""Choose the trained fallbacks for unseen ids on validation (issue #14 §2): Base (and URM) trained on the
``training_set`` artifact over a grid of ``urm.min_count`` (ids with fewer train impressions share the OOV
row) x ``urm.id_dropout`` (share of training rows whose user / item id is replaced by OOV), with
``urm.content_dropout`` as configured. Prints one JSON document with the **validation** AUC of every grid
point (the test split is not read) and the point with the best mean of validation click and order AUC.

Usage: ``PPM_ARTIFACTS_DIR=... python benchmarks/select_fallbacks.py [--models Base,URM] [--out FILE]``
(needs a finished main run: training set, PPM model). The committed run is
``benchmarks/results/fallback_selection.json``; config.py's defaults are its choice.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from itertools import product

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="Base,URM")
    ap.add_argument("--min-counts", default="1,2,5")
    ap.add_argument("--id-dropouts", default="0,0.1,0.2")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args()

    import pandas as pd

    from ppm_platform.config import Settings
    from ppm_platform.training.artifacts import load_ppm
    from ppm_platform.training.urm_train import train_ctr_model

    settings = Settings.from_env()
    df = pd.read_parquet(settings.artifacts_dir / "training_set.parquet")
    ppm, meta = load_ppm(settings.models_dir / "ppm")
    grid = []
    t0 = time.perf_counter()
    for model, mc, p in product(args.models.split(","), [int(x) for x in args.min_counts.split(",")],
                                [float(x) for x in args.id_dropouts.split(",")]):
        s = settings.model_copy(update={"urm": settings.urm.model_copy(update={"min_count": mc, "id_dropout": p})})
        t = time.perf_counter()
        tr = train_ctr_model(s, df, use_ppm=model == "URM", ppm=ppm if model == "URM" else None)
        v = tr.metrics["valid"]
        point = {"model": model, "min_count": mc, "id_dropout": p,
                 "valid_click_auc": v["all"]["click"]["auc"], "valid_order_auc": v["all"]["order"]["auc"],
                 "valid_new_users_click_auc": v["new_users"]["click"]["auc"],
                 "valid_cold_items_click_auc": v["cold_items"]["click"]["auc"],
                 "best_epoch": max(tr.metrics["epochs"], key=lambda h: h["valid_click_auc"])["epoch"],
                 "n_users_vocab": tr.encoder.n_users - 2,
                 "n_items_vocab": tr.encoder.n_items - 2, "seconds": round(time.perf_counter() - t, 1)}
        grid.append(point)
        print(json.dumps(point), flush=True)
    best = {}
    for model in args.models.split(","):
        pts = [g for g in grid if g["model"] == model]
        b = max(pts, key=lambda g: (g["valid_click_auc"] + g["valid_order_auc"]) / 2)
        best[model] = {k: b[k] for k in ("min_count", "id_dropout", "valid_click_auc", "valid_order_auc")}
    doc = {"benchmark": "select_fallbacks", "selection": "max mean(valid click AUC, valid order AUC); test not read",
           "seed": settings.seed, "content_dropout": settings.urm.content_dropout, "epochs": settings.urm.epochs,
           "lr": settings.urm.lr, "ppm_version": meta.get("ppm_version"), "rows": len(df), "grid": grid,
           "best": best, "seconds": round(time.perf_counter() - t0, 1),
           "machine": {"cores": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
                       "python": platform.python_version()}}
    text = json.dumps(doc, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
