"""The evaluation protocol (DESIGN.md §5): what the report compares, on which rows, with which seeds.

Global time split by ``event_timestamp`` (80 / 10 / 10 %); vocabularies are fitted on the train rows; every
trained row keeps the epoch with the best **validation** click AUC (the test split is only scored). ``n``
seeds (``Settings.seed + i``) vary the downstream training (initialisation and batch order); the PPM
pre-training and its caches are the ``ppm_model`` asset's (one pre-trained PPM), so the ``PPM`` row has a
single run. Metrics per task (click, order): AUC and logloss (scikit-learn), GAUC (per-user AUC weighted by
impressions, single-class users skipped and counted), on the slices of
:func:`~ppm_platform.training.metrics.evaluate_slices`. Data efficiency: Base and URM trained on the most
recent ``recent_fraction`` of the train window vs all of it (PPM stays pre-trained on the full window).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ppm_platform.config import Settings
from ppm_platform.training.metrics import COLD_ITEM_MAX_TRAIN_IMPRESSIONS, HELD_OUT_SLICE, SLICES
from ppm_platform.data.split import settings_cutoffs, split_labels

#: Table-2 rows, in the paper's order (the two baselines first), then Base and URM with semantic ids (the
#: item's residual k-means codes embedded as trainable ids, :mod:`ppm_platform.features.semantic_ids`).
MODELS: tuple[str, ...] = ("Popularity", "GBDT", "Base", "QM&EP", "PPM", "Base+QM&EP", "URM", "Base+SID", "URM+SID")
#: the trained CTR rows of :func:`~ppm_platform.training.urm_train.train_ctr_model`: row -> (use_ppm, semantic_ids)
CTR_ROWS = {"Base": (False, False), "URM": (True, False), "Base+SID": (False, True), "URM+SID": (True, True)}
#: rows with one run (no seed applies): the deterministic baselines and the single pre-trained PPM
SINGLE_RUN_MODELS = ("Popularity", "GBDT", "PPM")
#: what each record holds per (model, window, split, slice, task)
METRICS: tuple[str, ...] = ("auc", "gauc", "logloss", "gauc_users", "gauc_users_skipped")
#: train windows: the whole train split, and its most recent ``evaluation.recent_fraction`` (data efficiency)
FULL, RECENT = "100%", "recent"
#: The paper's Table 2 (JD.com data; click / order AUC) for reference in the markdown report.
PAPER_TABLE2 = {"Base": (0.7252, 0.7612), "URM": (0.7343, 0.7722)}
#: Goals the report marks met / missed (not assertions): click AUC lift on all, click AUC lift on cold items.
TARGET_CLICK_LIFT = 0.010
TARGET_COLD_LIFT = 0.03
#: Goals of the semantic ids: URM+SID - URM click AUC lift on all test impressions and on the held-out items.
TARGET_SID_LIFT = 0.005
TARGET_SID_COLD_LIFT = 0.01
REPORT_SCHEMA_VERSION = 1


def report_models(settings: Settings, models: tuple[str, ...] | None = None,
                  data_efficiency: bool | None = None) -> tuple[tuple[str, ...], bool]:
    """The rows to run and whether to add the data-efficiency runs: ``models`` / ``data_efficiency`` when
    given, else ``settings.evaluation``'s.

    Raises:
        ValueError: an unknown model name, or ``evaluation.seeds`` < 1.
    """
    ev = settings.evaluation
    models = tuple(ev.models if models is None else models)
    if unknown := set(models) - set(MODELS):
        raise ValueError(f"evaluation.models: unknown model(s) {sorted(unknown)}; choose from {MODELS}")
    if ev.seeds < 1:
        raise ValueError(f"evaluation.seeds must be >= 1, got {ev.seeds}")
    return models, ev.data_efficiency if data_efficiency is None else data_efficiency


def seeds(settings: Settings) -> list[int]:
    """The model seeds of the seeded rows: ``Settings.seed + i`` for ``i < evaluation.seeds``."""
    return [settings.seed + i for i in range(settings.evaluation.seeds)]


def report_slices(held_out_items: set | None) -> list[str]:
    """The slices of the report: :data:`~ppm_platform.training.metrics.SLICES`, plus the held-out items' slice
    on the item-cold protocol's runs."""
    return [*SLICES, *([HELD_OUT_SLICE] if held_out_items is not None else [])]


def split_rows(df: pd.DataFrame, settings: Settings) -> dict[str, np.ndarray]:
    """Row positions of each split (``train`` / ``valid`` / ``test``) of the time split of ``df``.

    Raises:
        ValueError: a split is empty.
    """
    split = split_labels(df["event_timestamp"], settings).to_numpy()
    rows = {s: np.flatnonzero(split == s) for s in ("train", "valid", "test")}
    for s, r in rows.items():
        if len(r) == 0:
            raise ValueError(f"the {s} split is empty ({len(df)} rows in the training set)")
    return rows


def check_ppm_version(df: pd.DataFrame, ppm_version: str | None) -> None:
    """The training set's PPM cache columns must hold ``ppm_version`` (the PPM being evaluated) only.

    Raises:
        ValueError: a cache column holds another version (re-materialize the caches and the training set).
    """
    if ppm_version is None:
        return
    for col in ("ppm_user_version", "ppm_item_version"):
        if col in df.columns:
            seen = set(df[col].dropna().astype(str).unique())
            if seen - {ppm_version}:
                raise ValueError(f"training set column {col} holds ppm_version(s) {sorted(seen)[:3]} but the PPM "
                                 f"being evaluated is {ppm_version}: re-materialize the caches and training_set")


def protocol_record(settings: Settings, df: pd.DataFrame, models: tuple[str, ...], epochs: int,
                    data_efficiency: bool, ppm_version: str | None, slices: list[str]) -> dict:
    """The ``protocol`` entry of a report: the split and its cut points, seeds, epochs, rows, slices, the data
    efficiency window, the feature settings and GBDT grid, and how models were selected."""
    ev = settings.evaluation
    return {
        "split": {"train_frac": settings.split.train_frac, "valid_frac": settings.split.valid_frac,
                  "by": "event_timestamp (global)",
                  **dict(zip(("valid_start", "test_start"),
                             (str(c) for c in settings_cutoffs(df["event_timestamp"], settings))))},
        "seeds": seeds(settings), "n_seeds": ev.seeds, "epochs": epochs,
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
        "semantic_ids": settings.semantic_ids.model_dump(),
        "gbdt_grid": {"learning_rate": list(ev.gbdt_learning_rates), "max_leaf_nodes": list(ev.gbdt_max_leaf_nodes),
                      "max_iter": ev.gbdt_max_iter, "early_stopping": "on the validation split, 30 rounds"},
        "cold_item_max_train_impressions": COLD_ITEM_MAX_TRAIN_IMPRESSIONS,
        "std": "sample std (ddof=1) over seeds; 0 for 1 run",
    }
