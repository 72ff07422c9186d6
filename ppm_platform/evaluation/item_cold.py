"""The item-cold protocol (DESIGN.md §5): cold start measured where it can be seen.

The cold-items slice of the standard split has too few test impressions to separate models. Here
a seeded share (``evaluation.item_cold_share``, 20 %) of the catalog is *held out*: their train-window events
are removed from the interactions, as if those items launched when the validation window starts, and the same
pipeline runs on that data with the full data's split cut points. Counters, behaviour sequences, vocabularies
and PPM pre-training then all treat them as new; their content features and caches are computed as for any
item (the ME features are the full run's: the encoders never saw clicks). AUC is reported on their test
impressions (several times the cold slice; sizes in docs/evaluation.md), per draw and as the spread over
``evaluation.item_cold_draws`` draws.

This module holds the data side of a draw (which items, its settings, its inputs, its clean-up); the summary
over draws is :func:`ppm_platform.evaluation.aggregate.combine_draws` and its markdown
:func:`ppm_platform.evaluation.report.render_summary`; the run itself is
:func:`ppm_platform.pipeline.item_cold_report` (it calls the pipeline's stages). No Dagster here.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from ppm_platform.config import Settings
from ppm_platform.data import catalog

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
    from ppm_platform.data.schemas import INTERACTIONS
    from ppm_platform.io import write_parquet_atomic

    for name in REUSED_TABLES:
        src = catalog.path(settings, name)
        if src.exists() or name != "queries":
            shutil.copyfile(src, catalog.path(draw, name))
    inter = pd.read_parquet(catalog.path(settings, "interactions"))
    drop = inter["item_id"].isin(set(held_out.tolist())) & (inter["event_timestamp"] < valid_start)
    write_parquet_atomic(inter[~drop], catalog.path(draw, "interactions"), INTERACTIONS)
    held = set(held_out.tolist())
    for name in REUSED_FEATURES:
        df = pd.read_parquet(catalog.path(settings, name))
        if "item_id" in df.columns:
            m = df["item_id"].isin(held) & (df["event_timestamp"] < valid_start)
            df.loc[m, "event_timestamp"] = valid_start
        write_parquet_atomic(df, catalog.path(draw, name), catalog.schema(draw, name))
    return {"held_out_items": int(len(held_out)), "held_out_item_ids": [int(i) for i in held_out],
            "interactions_removed": int(drop.sum()),
            "interactions_kept": int((~drop).sum())}


def clean_draw(draw: Settings) -> None:
    """Remove a draw's bulky intermediates (feature tables, training set, Feast online store) once its report is
    written; its report, tables and models stay."""
    for p in (draw.features_dir, catalog.path(draw, "training_set"), draw.feast_dir):
        if Path(p).is_dir():
            shutil.rmtree(p, ignore_errors=True)
        elif Path(p).exists():
            Path(p).unlink()
