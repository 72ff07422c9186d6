"""One training process vs N data-parallel ranks (``training.processes``) on a finished run's data: prints one
JSON document (committed runs: ``benchmarks/results/``; ``docs/scale.md`` quotes only those).

For the PPM pre-training (its as-of examples written from the run's tables) and the Base and URM training (the
run's point-in-time ``training_set``), with the same seed, epochs and global batch, each process count in
``--processes``: seconds of SGD per epoch (``train_s``, validation scoring apart: ``valid_s``), the kept epoch's
validation click AUC and the test click AUC, the wall time of the whole call (N ranks: the ``torchrun``
launch on this machine included, ``training.local_mode``), and the 1-minute load average before and after.
Ratios are against the single process of the same run. Goals are reported, never asserted.

Usage: ``PPM_ARTIFACTS_DIR=<finished run> python benchmarks/distributed_training.py [--epochs 2]
[--processes 1,2] [--models ppm,base,urm] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, machine  # noqa: E402

GOAL_EPOCH_RATIO = 0.65  # 2 ranks vs 1 process, seconds of SGD per epoch, idle 2-core machine
GOAL_AUC_TOL = 0.01


def _settings(base, processes: int, epochs: int):
    return base.model_copy(update={
        "training": base.training.model_copy(update={"processes": processes, "local_mode": True, "checkpoints": False}),
        "ppm": base.ppm.model_copy(update={"epochs": epochs}),
        "urm": base.urm.model_copy(update={"epochs": epochs})}, deep=True)


def _summary(epochs: list[dict], wall_s: float, load_before: float, extra: dict) -> dict:
    return {"train_s_per_epoch": round(float(np.mean([e["train_s"] for e in epochs])), 2),
            "valid_s_per_epoch": round(float(np.mean([e["valid_s"] for e in epochs])), 2),
            "kept_valid_click_auc": round(max(e["valid_click_auc"] for e in epochs), 4),
            "wall_s": round(wall_s, 1), "load_avg_1m_before": load_before,
            "load_avg_1m_after": round(os.getloadavg()[0], 2), **extra}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--processes", default="1,2")
    ap.add_argument("--models", default="ppm,base,urm")
    ap.add_argument("--out")
    args = ap.parse_args()

    import pandas as pd

    from ppm_platform.config import Settings
    from ppm_platform.data import catalog
    from ppm_platform.features.ppm_caches import ppm_version_of
    from ppm_platform.model_store import resolve_model_dir
    from ppm_platform.training.ppm_train import pretrain_ppm_on_ranks, write_examples
    from ppm_platform.training.urm_train import train_ctr_model_on_ranks

    base = Settings.from_env()
    procs = [int(p) for p in args.processes.split(",")]
    models = args.models.split(",")
    out: dict = {"machine": machine(), "dataset": base.dataset, "epochs": args.epochs, "processes": procs,
                 "torch_threads_per_rank": base.urm.threads, "results": {}}
    ts_path = catalog.path(base, "training_set")
    ppm_dir = resolve_model_dir(catalog.path(base, "ppm"))
    with tempfile.TemporaryDirectory(prefix=".bench_dist.", dir=base.artifacts_dir) as tmp:
        if "ppm" in models:
            mm = pd.read_parquet(catalog.path(base, "item_multimodal"))
            ex = write_examples(base, catalog.path(base, "interactions"), mm, catalog.path(base, "behavior_sequences"),
                                Path(tmp) / "examples.parquet")
            for p in procs:
                load, t0 = round(os.getloadavg()[0], 2), time.perf_counter()
                _, m = pretrain_ppm_on_ranks(_settings(base, p, args.epochs), ex)
                out["results"].setdefault("ppm", {})[str(p)] = _summary(
                    m["epochs"], time.perf_counter() - t0, load, {"train_rows": m["train_rows"]})
        for name, use_ppm in (("base", False), ("urm", True)):
            if name not in models:
                continue
            for p in procs:
                s = _settings(base, p, args.epochs)
                load, t0 = round(os.getloadavg()[0], 2), time.perf_counter()
                tr = train_ctr_model_on_ranks(s, ts_path, name, use_ppm=use_ppm, ppm_dir=ppm_dir if use_ppm else None,
                                              ppm_version=ppm_version_of(ppm_dir) if use_ppm else None,
                                              semantic_ids=False)
                out["results"].setdefault(name, {})[str(p)] = _summary(
                    tr.metrics["epochs"], time.perf_counter() - t0, load,
                    {"test_click_auc": round(tr.metrics["test"]["all"]["click"]["auc"], 4),
                     "train_rows": tr.metrics["rows"]["train"]})
    for name, r in out["results"].items():
        one = r.get("1")
        for p, v in r.items():
            if one and p != "1":
                v["train_s_ratio_vs_1"] = round(v["train_s_per_epoch"] / one["train_s_per_epoch"], 3)
                v["valid_auc_diff_vs_1"] = round(v["kept_valid_click_auc"] - one["kept_valid_click_auc"], 4)
                v["goal_epoch_ratio_met"] = v["train_s_ratio_vs_1"] <= GOAL_EPOCH_RATIO
                v["goal_auc_met"] = abs(v["valid_auc_diff_vs_1"]) <= GOAL_AUC_TOL
    out["goals"] = {"train_s_ratio_vs_1_max": GOAL_EPOCH_RATIO, "valid_auc_abs_diff_max": GOAL_AUC_TOL}
    out["machine"]["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    emit(out, args.out)


if __name__ == "__main__":
    main()
