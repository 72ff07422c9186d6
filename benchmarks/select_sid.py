"""Choose the semantic-id codebook (centroids per level K, levels L, source vectors) on validation: for every
grid point, fit the residual k-means codebook on the train-window items (``features.semantic_ids``, as the
``item_semantic_id`` asset does), code every item, join the codes point-in-time onto the ``training_set``
artifact (a row sees an item's codes from the item's content time on, as Feast joins the view) and train
URM+SID (one seed). The chosen point maximizes mean(valid click AUC, valid order AUC) of URM+SID; URM and Base
(no codes) and Base+SID at the chosen point are trained beside it for reference.

Prints one JSON document with the **validation** AUC (all, cold items) of every point; the test split is
read only for the chosen point and the reference rows (``chosen_test``), once, after the choice.

Usage::

    PPM_ARTIFACTS_DIR=... python benchmarks/select_sid.py [--points 16:2,64:2,256:2,64:1,64:3] \\
        [--sources ppm,me] [--out benchmarks/results/select_sid.json]

(needs a finished main run: tables, item_multimodal, ppm_item_cache, training set, PPM model).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
import time

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmarks' shared helpers
from _common import emit, machine  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def with_codes(training_set, codes):
    """``training_set`` with the code columns of ``codes`` (``item_semantic_id`` rows) joined point-in-time: a
    row gets an item's codes when its time is at or after the code row's ``event_timestamp``, else nulls."""
    import pandas as pd

    code_cols = [c for c in codes.columns if c.startswith("sid_")]
    df = training_set.drop(columns=[c for c in training_set.columns if c.startswith("sid_")])
    m = df[["item_id", "event_timestamp"]].merge(codes.rename(columns={"event_timestamp": "_sid_ts"}), on="item_id",
                                                 how="left")
    late = ~(m["event_timestamp"] >= m["_sid_ts"])
    for c in code_cols:
        col = m[c].astype("Int64") if c != "sid_version" else m[c].astype(object)
        col[late.to_numpy()] = pd.NA if c != "sid_version" else None
        df[c] = col.to_numpy()
    return df


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--points", default="16:2,64:2,256:2,64:1,64:3", help="K:L pairs (centroids per level : levels)")
    ap.add_argument("--sources", default="ppm,me", help="source vectors: ppm (PPM item cache), me (ME feature)")
    ap.add_argument("--me-point", default="64:2", help="the K:L point run for the sources other than ppm")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args()

    import pandas as pd

    from ppm_platform.config import Settings
    from ppm_platform.data import catalog
    from ppm_platform.features.semantic_ids import (
        SOURCE_TABLES,
        code_frame,
        codebook_quality,
        fit_codebook,
        source_vectors,
        train_window_items,
    )
    from ppm_platform.model_store import load_ppm
    from ppm_platform.training.urm_train import train_ctr_model

    settings = Settings.from_env()
    ts = pd.read_parquet(catalog.path(settings, "training_set"))
    ppm, meta = load_ppm(catalog.path(settings, "ppm"))
    fit_items = train_window_items(settings, catalog.path(settings, "interactions"))
    grid = [tuple(int(x) for x in p.split(":")) for p in args.points.split(",")]
    runs = [("ppm", k, lv) for k, lv in grid] if "ppm" in args.sources.split(",") else []
    runs += [(src, *(int(x) for x in args.me_point.split(":"))) for src in args.sources.split(",") if src != "ppm"]
    t0 = time.perf_counter()

    def fig(tr, split):
        m = tr.metrics[split]
        return {f"{split}_click_auc": m["all"]["click"]["auc"], f"{split}_order_auc": m["all"]["order"]["auc"],
                f"{split}_cold_items_click_auc": m["cold_items"]["click"]["auc"]}

    def train(s, df, use_ppm, sid):
        t = time.perf_counter()
        tr = train_ctr_model(s, df, use_ppm=use_ppm, ppm=ppm if use_ppm else None, semantic_ids=sid)
        return tr, round(time.perf_counter() - t, 1)

    coded: dict = {}
    points = []
    for source, k, levels in runs:
        s = settings.model_copy(update={"semantic_ids": settings.semantic_ids.model_copy(
            update={"source": source, "codebook_size": k, "levels": levels})})
        rows = pd.read_parquet(catalog.path(s, SOURCE_TABLES[source][0]))
        cb = fit_codebook(s, rows, fit_items)
        quality = codebook_quality(cb, source_vectors(rows[rows["item_id"].isin(fit_items)], source))
        df = with_codes(ts, code_frame(rows, cb))
        tr, secs = train(s, df, True, True)
        coded[(source, k, levels)] = (s, df, tr, secs)
        res = {"source": source, "codebook_size": k, "levels": levels, "sid_version": cb.sid_version, **quality,
               "URM+SID": {**fig(tr, "valid"), "seconds": secs}}
        res["score"] = (res["URM+SID"]["valid_click_auc"] + res["URM+SID"]["valid_order_auc"]) / 2
        points.append(res)
        print(json.dumps(res), flush=True)
    best = max(points, key=lambda p: p["score"])
    s_best, df_best, tr_best, secs_best = coded[(best["source"], best["codebook_size"], best["levels"])]
    reference, chosen_test = {}, {}
    for name, use_ppm, sid in (("URM", True, False), ("Base", False, False), ("Base+SID", False, True),
                               ("URM+SID", True, True)):
        # the chosen point's URM+SID is the grid's run (same seed, same rows)
        tr, secs = (tr_best, secs_best) if name == "URM+SID" else train(s_best, df_best, use_ppm, sid)
        reference[name] = {**fig(tr, "valid"), "seconds": secs}
        chosen_test[name] = fig(tr, "test")  # read once, after the choice
        print(json.dumps({name: reference[name]}), flush=True)
    doc = {"benchmark": "select_sid", "points": points,
           "selection": "max over points of URM+SID's mean(valid click AUC, valid order AUC); test read only for the "
                        "chosen point and its reference rows, after the choice",
           "best": {k: best[k] for k in ("source", "codebook_size", "levels")}, "reference_valid": reference,
           "chosen_test": chosen_test,
           "lifts_valid": {"URM+SID - URM": reference["URM+SID"]["valid_click_auc"] - reference["URM"]["valid_click_auc"],
                           "Base+SID - Base": reference["Base+SID"]["valid_click_auc"]
                           - reference["Base"]["valid_click_auc"]},
           "seed": settings.seed, "ppm_version": meta.get("ppm_version"),
           "encoder_version": meta.get("encoder_version"), "rows": len(ts),
           "fitted_items": len(fit_items), "urm": settings.urm.model_dump(mode="json"),
           "seconds": round(time.perf_counter() - t0, 1),
           "machine": machine()}
    emit(doc, args.out)


if __name__ == "__main__":
    main()
