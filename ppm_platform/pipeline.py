"""One function per pipeline stage (DESIGN.md §3). Each reads its inputs from and writes its outputs to the
artifact folder of :class:`~ppm_platform.config.Settings`, and returns a JSON-able dict of figures that the
orchestrator (the Dagster assets in ``dagster_project/``) attaches as metadata. Each result is also saved
to ``artifacts/runs/<stage>.json`` so the CLI can print a summary without Dagster.

This module never imports Dagster: the same stages can run under any orchestrator.
"""

from __future__ import annotations

import functools
import logging
import time
from datetime import date, datetime
from pathlib import Path
from typing import Callable

import pandas as pd

from ppm_platform.config import Settings
from ppm_platform.data import catalog
from ppm_platform.encoders.factory import encoder_settings
from ppm_platform.io import read_json, write_json_atomic
from ppm_platform.runtime import Progress

log = logging.getLogger("ppm_platform.pipeline")


def _spark_stage(stage: Callable) -> Callable:
    """Decorator for stages that run Spark jobs (``stage(settings, spark, ...)``): the driver JVM's free heap
    goes back to the OS when the stage ends, whether it succeeded or failed
    (:func:`ppm_platform.features.spark.release_heap`)."""

    @functools.wraps(stage)
    def run(settings: Settings, spark, *args, **kwargs):
        from ppm_platform.features.spark import release_heap

        try:
            return stage(settings, spark, *args, **kwargs)
        finally:
            if spark is not None:  # None: a caller that fails before any Spark work (input checks)
                release_heap(spark)

    return run


def _record(settings: Settings, stage: str, result: dict) -> dict:
    write_json_atomic(result, settings.artifacts_dir / "runs" / f"{stage}.json")
    return result


def stage_result(settings: Settings, stage: str) -> dict | None:
    """The last recorded result of ``stage`` (None if it never ran)."""
    p = settings.artifacts_dir / "runs" / f"{stage}.json"
    return read_json(p) if p.exists() else None


# ---- ingest ------------------------------------------------------------------------------------------
def ingest(settings: Settings) -> dict:
    """Canonical tables + quarantine + profile feature tables from ``settings.data_dir`` (MovieLens or a
    canonical-table folder, by ``settings.dataset``)."""
    from ppm_platform.data.ingest import build_profiles, ingest_dataset

    t0 = time.perf_counter()
    results = ingest_dataset(settings)
    out = {name: r.summary() for name, r in results.items()}
    out["profiles"] = build_profiles(settings)
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return _record(settings, "ingest", out)


# ---- Spark features --------------------------------------------------------------------------------
@_spark_stage
def item_multimodal(settings: Settings, spark) -> dict:
    """Frozen text + image encoders over the catalog in Spark -> ``item_multimodal`` feature table. Uses the
    fine-tuned encoders of :func:`text_encoder` / :func:`image_encoder` when they exist (see
    :func:`encoder_settings`); the rows' ``encoder_version`` records which weights produced them."""
    from ppm_platform.features.item_multimodal import compute_item_multimodal

    settings = encoder_settings(settings)
    res = compute_item_multimodal(spark, settings, catalog.path(settings, "items"),
                                  catalog.path(settings, "item_multimodal"))
    return _record(settings, "item_multimodal", res)


# ---- encoder fine-tuning ------------------------------------------------------------------------------
def text_encoder(settings: Settings, progress: Progress = None) -> dict:
    """Query-matching fine-tune of the text encoder on the ``queries`` table; held-out recall@10 / MRR over
    the whole catalog before vs after -> ``models_dir/text_encoder`` (+ ONNX)."""
    from ppm_platform.encoders.finetune.text import finetune_text_encoder

    qpath = catalog.path(settings, "queries")  # optional table (DESIGN.md §2)
    queries = pd.read_parquet(qpath) if qpath.exists() else pd.DataFrame({"query": [], "item_id": []})
    items = pd.read_parquet(catalog.path(settings, "items"))
    res = finetune_text_encoder(settings, queries, items, progress)
    return _record(settings, "text_encoder", res)


def image_encoder(settings: Settings, progress: Progress = None) -> dict:
    """Entity-prediction fine-tune of the image encoder (multi-label categories from the image); held-out
    mAP / F1 of a frozen linear probe vs the fine-tuned encoder -> ``models_dir/image_encoder`` (+ ONNX)."""
    from ppm_platform.encoders.finetune.image import finetune_image_encoder

    items = pd.read_parquet(catalog.path(settings, "items"))
    res = finetune_image_encoder(settings, items, progress)
    return _record(settings, "image_encoder", res)


@_spark_stage
def behavior_sequences(settings: Settings, spark) -> dict:
    """Per (user, click time) the last L clicked items, stamped after the event (leakage rule)."""
    from ppm_platform.features.behavior_sequences import compute_behavior_sequences

    res = compute_behavior_sequences(spark, settings, catalog.path(settings, "interactions"),
                                     catalog.path(settings, "behavior_sequences"))
    return _record(settings, "behavior_sequences", res)


@_spark_stage
def counters(settings: Settings, spark) -> dict:
    """Point-in-time counters of every item and user (Spark) -> the ``item_stats`` and ``user_stats`` feature
    tables (one row per change, stamped by the leakage rule), and the prior of their smoothed rates."""
    from ppm_platform.features.counters import compute_counters

    res = compute_counters(spark, settings, catalog.path(settings, "interactions"))
    return _record(settings, "counters", res)


# ---- PPM ----------------------------------------------------------------------------------------------
def ppm_model(settings: Settings, progress: Progress = None) -> dict:
    """Pre-train the ID-free PPM on the train window; save it with its ``ppm_version``
    (:func:`~ppm_platform.features.ppm_caches.ppm_version_for` of its weights hash and the ``encoder_version``
    of the ME features it was trained on, both recorded too).

    Raises:
        ValueError: ``item_multimodal`` holds rows of several encoder versions (rebuild it first).
    """
    import tempfile

    from ppm_platform.features.ppm_caches import ppm_version_for
    from ppm_platform.model_store import model_version, save_model
    from ppm_platform.training.ppm_train import pretrain_ppm_on_ranks, write_examples

    mm = pd.read_parquet(catalog.path(settings, "item_multimodal"))  # the catalog only
    encoders = sorted(mm["encoder_version"].dropna().astype(str).unique())
    if len(encoders) > 1:  # one PPM, one ME feature space (its ppm_version names one encoder version)
        counts = mm["encoder_version"].value_counts()
        raise ValueError(f"{catalog.path(settings, 'item_multimodal')}: rows of {len(encoders)} encoder versions "
                         f"({', '.join(f'{v} ({int(counts[v])} rows)' for v in encoders)}): rebuild item_multimodal")
    # the as-of join goes to a parquet on disk (DuckDB, memory-limited) and is read back a chunk at a time:
    # memory does not grow with the number of impressions
    settings.artifacts_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".ppm_examples.", dir=settings.artifacts_dir) as tmp:
        t0 = time.perf_counter()
        ex = write_examples(settings, catalog.path(settings, "interactions"), mm,
                            catalog.path(settings, "behavior_sequences"), Path(tmp) / "examples.parquet")
        join_s = time.perf_counter() - t0
        ppm, metrics = pretrain_ppm_on_ranks(settings, ex, progress)
    metrics["examples_join_seconds"] = round(join_s, 2)
    metrics["weights_version"] = model_version(ppm)
    metrics["encoder_version"] = encoders[0] if encoders else None
    metrics["ppm_version"] = ppm_version_for(metrics["weights_version"], metrics["encoder_version"])
    save_model(ppm, ppm.cfg, catalog.path(settings, "ppm"), "ppm", metrics)
    return _record(settings, "ppm_model", metrics)


@_spark_stage
def ppm_item_cache(settings: Settings, spark) -> dict:
    """Frozen PPM item tower over every item's ME feature (Spark) -> ``ppm_item_cache``."""
    from ppm_platform.features.ppm_caches import compute_ppm_item_cache

    res = compute_ppm_item_cache(spark, settings, catalog.path(settings, "item_multimodal"),
                                 catalog.path(settings, "ppm"), catalog.path(settings, "ppm_item_cache"))
    return _record(settings, "ppm_item_cache", res)


@_spark_stage
def ppm_user_cache(settings: Settings, spark) -> dict:
    """Frozen PPM sequence encoder over every behaviour-sequence row (Spark) -> ``ppm_user_cache``."""
    from ppm_platform.features.ppm_caches import compute_ppm_user_cache

    res = compute_ppm_user_cache(spark, settings, catalog.path(settings, "behavior_sequences"),
                                 catalog.path(settings, "ppm_item_cache"), catalog.path(settings, "ppm"),
                                 catalog.path(settings, "ppm_user_cache"))
    return _record(settings, "ppm_user_cache", res)


@_spark_stage
def item_semantic_id(settings: Settings, spark) -> dict:
    """Semantic ids: residual k-means of the frozen item vectors (``semantic_ids.source``: the PPM item cache or
    the ME feature) fitted on the train-window items, the codebook saved (``semantic_id_codebook``), every item
    coded in Spark -> ``item_semantic_id`` (:mod:`ppm_platform.features.semantic_ids`)."""
    from ppm_platform.features.semantic_ids import SOURCE_TABLES, compute_item_semantic_id

    table = SOURCE_TABLES[settings.semantic_ids.source][0]
    res = compute_item_semantic_id(spark, settings, catalog.path(settings, table), catalog.path(settings, "interactions"),
                                   catalog.path(settings, "semantic_id_codebook"),
                                   catalog.path(settings, "item_semantic_id"))
    return _record(settings, "item_semantic_id", res)


# ---- Feast -------------------------------------------------------------------------------------------
def feast_definitions(settings: Settings) -> dict:
    """``feast apply`` of feature_repo/ (entities, feature views, feature services)."""
    from ppm_platform.feature_store import apply_definitions

    return _record(settings, "feast_definitions", apply_definitions(settings))


def training_set(settings: Settings) -> dict:
    """Point-in-time training set: every impression joined through Feast's ``get_historical_features``
    to the ``urm_training`` feature service as of its own timestamp."""
    from ppm_platform.feature_store import write_training_set

    # only the columns the training set carries (entity keys, timestamp, labels): a few bytes per impression
    inter = pd.read_parquet(catalog.path(settings, "interactions"),
                            columns=["user_id", "item_id", "event_timestamp", "click", "order"])
    res = write_training_set(settings, inter, catalog.path(settings, "training_set"), service="urm_training",
                             chunk_rows=settings.urm.training_set_chunk_rows,
                             memory_limit=settings.urm.training_set_memory_limit)
    return _record(settings, "training_set", res)


def online_store(settings: Settings) -> dict:
    """Materialize every feature view into the online store."""
    from ppm_platform.feature_store import materialize

    return _record(settings, "online_store", materialize(settings))


# ---- URM ---------------------------------------------------------------------------------------------
def _train_and_save(settings: Settings, name: str, use_ppm: bool, progress: Progress) -> dict:
    from ppm_platform.features.ppm_caches import ppm_version_of
    from ppm_platform.model_store import resolve_model_dir, save_model
    from ppm_platform.training.urm_train import train_ctr_model_on_ranks

    ppm_dir = resolve_model_dir(catalog.path(settings, "ppm")) if use_ppm else None  # one version, read once
    ppm_version = ppm_version_of(ppm_dir) if use_ppm else None
    # the path, not a DataFrame: the trainer reads it a chunk at a time (bounded memory), on one process or on
    # training.processes ranks; it refuses cache rows of mixed versions or of another version than the PPM it
    # warm-starts from. Semantic ids (urm.semantic_ids) go into the URM only: Base stays the plain IDRec reference
    trained = train_ctr_model_on_ranks(settings, catalog.path(settings, "training_set"), name, use_ppm=use_ppm,
                                       ppm_dir=ppm_dir, ppm_version=ppm_version,
                                       semantic_ids=settings.urm.semantic_ids and use_ppm, progress=progress)
    meta = {
        "metrics": trained.metrics,
        "feature_encoder": trained.vectorizer.to_dict(),  # the model.json key the serving side reads
        # the version of the cache rows it trained on (== the PPM's, checked): what serving compares online
        "ppm_version": trained.cache_version,
        # the codebook of the semantic-id rows it trained on (None: no semantic ids): serving compares it online
        "sid_version": trained.sid_version,
        "user_feature_service": "urm_user" if use_ppm else "idrec_user",
        "item_feature_service": "urm_item",
        "training_feature_service": "urm_training",
    }
    # published complete: the ONNX graphs are exported (parity-checked) into the staged version first
    onnx: dict = {}
    save_model(trained.model, trained.config, catalog.path(settings, name), name, meta,
               finish=_onnx_into(settings, trained.model, trained.vectorizer, onnx))
    test = trained.metrics["test"]["all"]
    out = {"test_click_auc": test["click"]["auc"], "test_order_auc": test["order"]["auc"],
           "test_click_gauc": test["click"]["gauc"], "test_order_gauc": test["order"]["gauc"],
           "test_click_logloss": test["click"]["logloss"], "test_order_logloss": test["order"]["logloss"],
           "rows": trained.metrics["rows"], "train_seconds": trained.metrics["train_seconds"],
           "processes": trained.metrics.get("processes", 1), "launches": trained.metrics.get("launches", 1),
           "resumed_after_epoch": trained.metrics.get("resumed_after_epoch"),
           "epochs": trained.metrics["epochs"], "slices": trained.metrics["test"],
           "ppm_version": meta["ppm_version"], "sid_version": meta["sid_version"],
           "model_id": resolve_model_dir(catalog.path(settings, name)).name,
           "onnx_max_abs_diff": onnx["max_abs_diff"], "onnx_serving_max_abs_diff": onnx["serving"]["max_abs_diff"]}
    return _record(settings, f"{name}_model", out)


def base_model(settings: Settings, progress: Progress = None) -> dict:
    """Train the IDRec-only ``Base`` (IDRec + MMoE, click and order) on the same split; its record also holds
    the ``Popularity`` row on that split (the item's smoothed train-window rate: what Base must beat)."""
    from ppm_platform.training.baselines import popularity_report

    res = _train_and_save(settings, "base", use_ppm=False, progress=progress)
    res["popularity"] = popularity_report(settings, catalog.path(settings, "training_set"))
    return _record(settings, "base_model", res)


def urm_model(settings: Settings, progress: Progress = None) -> dict:
    """Train the URM (IDRec + PPM top warm-started from the pre-trained PPM + MMoE) end-to-end, labelled with
    the ``ppm_version`` of the training set's cache rows.

    Raises:
        ValueError: the training set's cache rows hold mixed versions, or another version than the PPM's
            (:func:`~ppm_platform.training.urm_train.training_set_cache_version`): recompute the caches and
            rebuild the training set.
    """
    return _train_and_save(settings, "urm", use_ppm=True, progress=progress)


def _tail_rows(path: Path, n: int) -> pd.DataFrame:
    """The last ``n`` rows of a parquet file, reading only its last row groups (not the whole table)."""
    from ppm_platform.training.streaming import ParquetChunks

    return ParquetChunks(path, max(n, 1)).tail(n).to_pandas().reset_index(drop=True)


#: the parity record of a version's ONNX graphs, written next to them (:func:`export_onnx` reports it)
ONNX_RECORD = "onnx.json"


def _onnx_into(settings: Settings, model, vectorizer, record: dict) -> Callable[[Path], None]:
    """A :func:`~ppm_platform.model_store.save_model` ``finish`` hook: export ``model``'s ONNX graphs
    (``model.onnx``, ``model_serving.onnx``) into the staged version, parity-checked against torch on the last
    256 rows of the training set (the test split; ValueError above 1e-5, and nothing is published), and
    write their figures to :data:`ONNX_RECORD` there and into ``record``."""

    def finish(stage: Path) -> None:
        from ppm_platform.serving.onnx_export import export_urm_onnx

        sample = _tail_rows(catalog.path(settings, "training_set"), 256)
        res = export_urm_onnx(model, vectorizer.transform(sample), stage / "model.onnx")
        res["parity_rows"] = len(sample)
        for r in (res, res["serving"]):
            r.pop("path")  # the stage's path: the files are named by the version folder
        write_json_atomic(res, stage / ONNX_RECORD)
        record.update(res)

    return finish


def export_onnx(settings: Settings, name: str, force: bool = False) -> dict:
    """The ONNX graphs of the published model ``name`` (``urm``/``base``) and their parity against torch on
    real rows of the test split (max |torch - onnxruntime| <= 1e-5, else ValueError).

    ``urm_model`` / ``base_model`` export the graphs into a version before publishing it, so this reports
    that version's :data:`ONNX_RECORD`. A published version without graphs (a model saved without them), or
    ``force``, gets them exported into a new version (the same weights and ``model.json``), published
    atomically.

    Returns:
        the parity record (``max_abs_diff``, ``opset``, ``serving``, ...) + ``path``, ``model_id``,
        ``exported`` (True when this call exported the graphs).
    """
    from ppm_platform.serving.onnx_export import SERVING_FILE
    from ppm_platform.model_store import load_urm, read_model_json, resolve_model_dir, save_model
    from ppm_platform.features.encoding import FeatureVectorizer

    link = catalog.path(settings, name)
    mdir = resolve_model_dir(link)
    exported = force or not all((mdir / f).is_file() for f in ("model.onnx", SERVING_FILE, ONNX_RECORD))
    if exported:
        model, meta = load_urm(mdir)
        enc = FeatureVectorizer.from_dict(meta["feature_encoder"])
        save_model(model, model.cfg, link, read_model_json(mdir)["kind"], meta,
                   finish=_onnx_into(settings, model, enc, {}))
        mdir = resolve_model_dir(link)
    res = {**read_json(mdir / ONNX_RECORD), "path": str(mdir / "model.onnx"), "model_id": mdir.name,
           "exported": exported}
    return _record(settings, f"{name}_onnx", res)


def ranking_demo(settings: Settings, n_candidates: int = 100, user_id: int | None = None) -> dict:
    """Rank ``n_candidates`` items for one real user from the online store (the most active test user
    unless ``user_id`` is given); candidates are the most popular items, excluding none.

    Returns the user, the top-10 and wall times of the call (ms).
    """
    from ppm_platform.serving.ranker import Ranker

    inter = pd.read_parquet(catalog.path(settings, "interactions"))
    if user_id is None:
        user_id = int(inter.tail(max(len(inter) // 10, 1))["user_id"].value_counts().index[0])
    candidates = [int(i) for i in inter["item_id"].value_counts().index[:n_candidates]]
    ranker = Ranker(settings)
    ranker.rank(user_id, candidates[:5])  # warm-up: first call opens the SQLite connection
    t0 = time.perf_counter()
    res = ranker.rank(user_id, candidates)
    wall_ms = (time.perf_counter() - t0) * 1e3
    items = pd.read_parquet(catalog.path(settings, "items")).set_index("item_id")["title"]
    top = res.scores.head(10).assign(title=lambda d: d["item_id"].map(items))
    out = {"user_id": user_id, "candidates": len(candidates), "scored": int(len(res.scores)),
           "wall_ms": round(wall_ms, 2), "lookup_ms": round(res.lookup_ms, 2), "model_ms": round(res.model_ms, 2),
           "all_finite": bool(res.scores[["click", "order"]].notna().all().all()),
           "top10": top.to_dict(orient="records")}
    # recorded as runs/rank_demo.json: the CLI summary and the ranking_demo check read that name
    return _record(settings, "rank_demo", out)


# ---- evaluation ------------------------------------------------------------------------------------------
def evaluation_report(settings: Settings, progress: Progress = None) -> dict:
    """The paper's Table 2 on the fixed split: train + score Base, QM&EP, PPM, Base+QM&EP and URM
    with ``settings.evaluation.seeds`` seeds, plus the data-efficiency runs; write ``report.json``,
    ``report.md`` and PNG plots under ``settings.reports_dir``.

    Reads the ``training_set``, ``item_multimodal`` and ``ppm_model`` artifacts. Returns the headline
    figures (test click / order AUC per model, lifts, targets) and the paths of the written files.
    """
    from ppm_platform.model_store import load_ppm
    from ppm_platform.evaluation.aggregate import lookup
    from ppm_platform.evaluation.harness import run_evaluation
    from ppm_platform.evaluation.report import write_report

    ts = pd.read_parquet(catalog.path(settings, "training_set"))
    mm = pd.read_parquet(catalog.path(settings, "item_multimodal"))
    ppm, meta = load_ppm(catalog.path(settings, "ppm"))
    report = run_evaluation(settings, ts, mm, ppm, ppm_version=meta.get("ppm_version"), progress=progress)
    paths = write_report(report, settings.reports_dir)
    out: dict = {"seconds": report["seconds"], "n_seeds": report["protocol"]["n_seeds"],
                 "ppm_version": meta.get("ppm_version"), "rows": report["rows"]}
    for m in report["protocol"]["models"]:
        for t in ("click", "order"):
            r = lookup(report, m, "auc", t)
            out[f"test_{t}_auc_{m}"] = r["mean"] if r else None
    out["targets"] = report["targets"]
    out["targets_met"] = sum(t["met"] for t in report["targets"])
    out["paths"] = {k: str(v) for k, v in paths.items()}
    return _record(settings, "evaluation_report", out)


def item_cold_report(settings: Settings, spark, progress: Progress = None) -> dict:
    """The item-cold protocol (:mod:`ppm_platform.evaluation.item_cold`, DESIGN.md §5): for each of
    ``evaluation.item_cold_draws`` seeded draws of held-out items, remove their train-window events and run the
    same stages as the main job (sequences, counters, PPM pre-training, caches, Feast, point-in-time training
    set) under ``<artifacts>/item_cold/draw_<i>`` with the full data's cut points, then the report rows of
    ``evaluation.item_cold_models`` (``evaluation.seeds`` model seeds) with the held-out slice. Writes
    ``reports/item_cold/summary.{json,md}`` and each draw's ``report.{json,md}``.

    Reads the main job's tables and ``item_multimodal`` / profile feature tables (never its models).

    Returns:
        the summary (:func:`~ppm_platform.evaluation.aggregate.combine_draws`) plus ``seconds`` and ``paths``.
    """
    from ppm_platform.features.spark import release_heap
    from ppm_platform.io import write_json_atomic
    from ppm_platform.model_store import load_ppm
    from ppm_platform.evaluation.aggregate import combine_draws
    from ppm_platform.evaluation.harness import run_evaluation
    from ppm_platform.evaluation.item_cold import clean_draw, draw_held_out, draw_settings, prepare_draw
    from ppm_platform.evaluation.report import json_safe, render_summary, write_report
    from ppm_platform.data.split import settings_cutoffs
    from ppm_platform.training.metrics import HELD_OUT_SLICE

    t0 = time.perf_counter()
    ev = settings.evaluation
    say = progress or log.info
    ts = pd.read_parquet(catalog.path(settings, "interactions"), columns=["event_timestamp"])["event_timestamp"]
    valid_start, test_start = settings_cutoffs(ts, settings)
    item_ids = pd.read_parquet(catalog.path(settings, "items"), columns=["item_id"])["item_id"].to_numpy()
    out_dir = settings.reports_dir / "item_cold"
    reports, sizes, draws = [], [], []
    seeds = [settings.seed + i for i in range(ev.item_cold_draws)]
    for i, seed in enumerate(seeds):
        held = draw_held_out(item_ids, ev.item_cold_share, seed)
        d = draw_settings(settings, i, valid_start, test_start)
        prep = prepare_draw(settings, d, held, valid_start)
        say(f"item-cold draw {i} (seed {seed}): {prep['held_out_items']} held-out items, "
            f"{prep['interactions_removed']} train-window events removed")
        try:
            for stage in (behavior_sequences, counters):
                stage(d, spark)
            ppm_model(d, progress)
            ppm_item_cache(d, spark)
            ppm_user_cache(d, spark)
            item_semantic_id(d, spark)
            feast_definitions(d)
            training_set(d)
            ppm, meta = load_ppm(catalog.path(d, "ppm"))
            report = run_evaluation(d, pd.read_parquet(catalog.path(d, "training_set")),
                                    pd.read_parquet(catalog.path(d, "item_multimodal")), ppm,
                                    ppm_version=meta.get("ppm_version"), progress=progress,
                                    held_out_items=set(held.tolist()), models=tuple(ev.item_cold_models),
                                    data_efficiency=False)
        finally:
            release_heap(spark)
        report["draw"] = {"seed": seed, **prep}
        write_report(report, out_dir / f"draw_{i}", title=f"Item-cold protocol, draw {i} (seed {seed})")
        reports.append(report)
        sizes.append(report["slice_sizes"][HELD_OUT_SLICE])
        draws.append(report["draw"])
        clean_draw(d)
    summary = combine_draws(reports, seeds)
    summary.update({"held_out_share": ev.item_cold_share, "held_out_slice_sizes": sizes, "draw_inputs": draws,
                    "valid_start": valid_start.isoformat(), "test_start": test_start.isoformat(),
                    "model_seeds": reports[0]["protocol"]["seeds"] if reports else [],
                    "seconds": round(time.perf_counter() - t0, 1)})
    write_json_atomic(json_safe(summary), out_dir / "summary.json")
    (out_dir / "summary.md").write_text(render_summary(summary, sizes))
    summary["paths"] = {"json": str(out_dir / "summary.json"), "markdown": str(out_dir / "summary.md")}
    return _record(settings, "item_cold_report", summary)


# ---- daily partitions: the incremental path -----------------------------------------------------------
#: Feast feature views that the daily path refreshes (time-varying: the user-level views and the item
#: counters); the other views change with the catalog or the PPM, i.e. with the full (unpartitioned) assets
DAILY_VIEWS = ("user_recent_items", "ppm_user_cache", "user_stats", "item_stats")


def partition_days(settings: Settings, up_to: date) -> list[date]:
    """Every daily partition from ``settings.partitions.start_date`` to ``up_to`` (inclusive), oldest first."""
    from datetime import timedelta

    first = date.fromisoformat(settings.partitions.start_date)
    return [first + timedelta(days=i) for i in range((up_to - first).days + 1)]


def interactions_daily(settings: Settings, day: date) -> dict:
    """Daily partition ``day`` of the interaction log (validated, quarantined, row-accounted)."""
    from ppm_platform.data.ingest import ingest_interactions_day

    res = ingest_interactions_day(settings, day)
    return _record(settings, f"interactions_daily/{day.isoformat()}", {"day": day.isoformat(), **res.summary()})


@_spark_stage
def user_features_daily(settings: Settings, spark, day: date) -> dict:
    """Daily partition ``day`` of the time-varying feature tables: the ``behavior_sequences`` rows whose as-of
    time falls on ``day`` (from the interaction partitions up to its end), their frozen-PPM ``ppm_user_cache``
    rows and the ``user_stats`` / ``item_stats`` counter rows of the day, each replacing ``<table>/<day>.parquet``
    of the same day-partitioned folders the full assets write (a day's file is byte-for-byte the full run's).

    Raises:
        ValueError: an interaction partition on or before ``day`` was never materialized (listed; backfill
            them first), or the PPM item cache is from another ``ppm_version``.
        FileNotFoundError: the full counters never ran (their prior is missing).
    """
    from ppm_platform.data.ingest import interactions_daily_dir
    from ppm_platform.features.behavior_sequences import compute_behavior_sequences
    from ppm_platform.features.counters import compute_counters
    from ppm_platform.features.ppm_caches import compute_ppm_user_cache

    src = interactions_daily_dir(settings)
    missing = [d.isoformat() for d in partition_days(settings, day) if not catalog.day_path(settings, "interactions_daily", d).exists()]
    if missing:
        raise ValueError(f"user_features_daily {day}: {len(missing)} interactions_daily partition(s) on or before it "
                         f"are not materialized ({', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}); "
                         f"backfill interactions_daily from {missing[0]} to {day} first")
    seq = compute_behavior_sequences(spark, settings, src, catalog.path(settings, "behavior_sequences"), day=day)
    cache = compute_ppm_user_cache(spark, settings, catalog.day_path(settings, "behavior_sequences", day),
                                   catalog.path(settings, "ppm_item_cache"), catalog.path(settings, "ppm"),
                                   catalog.path(settings, "ppm_user_cache"), day=day)
    stats = compute_counters(spark, settings, src, day=day)
    out = {"day": day.isoformat(), "behavior_sequences_rows": seq["rows"], "users": seq["users"],
           "ppm_user_cache_rows": cache["rows"], "ppm_version": cache["ppm_version"],
           "user_stats_rows": stats["user_stats"]["rows"], "item_stats_rows": stats["item_stats"]["rows"],
           "seconds": round(seq["seconds"] + cache["seconds"] + stats["seconds"], 3)}
    return _record(settings, f"user_features_daily/{day.isoformat()}", out)


def online_user_features(settings: Settings, end: datetime, start: datetime | None = None) -> dict:
    """Write the rows of the (re)processed partitions ``[start, end)`` (tz-aware; ``start`` default
    ``end - 1 day``) of :data:`DAILY_VIEWS` to the online store, whatever the views' ``most_recent_end_time``.

    Each view gets one Feast ``materialize(lo, hi)`` (the latest row per entity with ``lo <= ts <= hi``) with
    ``lo = min(start, last)`` and ``hi = max(end, last)``, ``last`` the view's ``most_recent_end_time``:

    * from ``start``, not from ``last`` (Feast's ``materialize_incremental``): a full ``online_store`` run at
      mid-day moves ``last`` past rows of the day written after it, and a day re-run for late events lies
      wholly before ``last``; both were left out of the online store for good;
    * up to ``last`` when it is later than ``end`` (a backfill or re-run of an older day): an entity's online
      row is then the latest row as of ``last`` again, never an older one (Feast's SQLite store overwrites
      whatever the timestamp; these views take no pushes, so every online row came from a materialize to at
      most ``last``). The cost is that of materializing ``[start, last]``;
    * down to ``last`` when it is earlier than ``start`` (days never brought online); a view never
      materialized starts at ``settings.partitions.start_date``.

    Rows are written whatever the stored timestamp (:func:`~ppm_platform.feature_store.overwrite_online_rows`):
    a late event changes the content of the user's later rows of the day, not their timestamps, which Feast's
    Redis store would skip. Runs of this and of ``online_store`` should not overlap (the later end wins only
    when the runs are ordered).

    Returns:
        ``{"start", "end", "views": {view: {"action": "materialize", "from", "to", "previous_end"}},
        "seconds"}``.

    Raises:
        ValueError: ``start`` is not before ``end``.
    """
    from datetime import timedelta, timezone

    from ppm_platform.feature_store import get_store, limit_duckdb_memory, overwrite_online_rows

    def utc(t: datetime | None) -> datetime | None:
        return t if t is None or t.tzinfo else t.replace(tzinfo=timezone.utc)

    end = utc(end)
    start = utc(start) if start is not None else end - timedelta(days=1)
    if start >= end:
        raise ValueError(f"online_user_features: start {start.isoformat()} is not before end {end.isoformat()}")
    t0 = time.perf_counter()
    store = overwrite_online_rows(get_store(settings))
    first = datetime.fromisoformat(settings.partitions.start_date).replace(tzinfo=timezone.utc)
    views: dict[str, dict] = {}
    with limit_duckdb_memory(settings, settings.materialize_memory_limit):  # Feast's DuckDB windows
        for name in DAILY_VIEWS:
            last = utc(store.get_feature_view(name).most_recent_end_time)
            lo, hi = (min(first, start), end) if last is None else (min(start, last), max(end, last))
            store.materialize(start_date=lo, end_date=hi, feature_views=[name])
            views[name] = {"action": "materialize", "from": lo.isoformat(), "to": hi.isoformat(),
                           "previous_end": last.isoformat() if last else None}
    out = {"start": start.isoformat(), "end": end.isoformat(), "views": views,
           "seconds": round(time.perf_counter() - t0, 3)}
    return _record(settings, "online_user_features", out)
