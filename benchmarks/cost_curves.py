"""Cost curves: end-to-end time and peak RSS of the pipeline at growing synthetic scale, broken
down by asset; point-in-time retrieval rows/s of Feast's DuckDB offline store vs the project's ASOF DuckDB
store (:mod:`ppm_platform.feature_store.offline_store`) vs Feast's file (dask) offline store on the same definitions and
entity rows in the same run; materialization rows/s.

For every scale (impressions) it

1. generates a synthetic canonical dataset (:mod:`ppm_platform.data.synthetic`; catalog and users per
   scale below, printed in the JSON),
2. materializes the asset graph up to ``ranking_demo`` with ``ppm run`` (``dagster asset materialize``,
   in a child process, the way a user runs it; the evaluation report with its 3-seed model grid is left
   out) under a psutil sampler that sums the RSS of the whole process tree (Dagster, the Spark JVM, Python
   workers) every 0.5 s and attributes it to the step Dagster is running (in-process executor: one step
   at a time),
3. reads each asset's figures from ``artifacts/runs/<stage>.json`` and its duration from Dagster's log,
4. times ``get_historical_features`` for the same ``--pit-rows`` entity rows (a random sample of the
   impressions) against the ``urm_training`` feature service on Feast's DuckDB store, the ASOF store and the
   file (dask) store (same registry, same parquet), counting entity rows dropped (returned row ids vs sent)
   and checking the ASOF store's and the ``training_set`` stage's features equal Feast's DuckDB store's.

Prints one JSON document (also written to ``<out>/cost_curves.json``) and a PNG plot
(``<out>/cost_curves.png``). Figures are ratios/rates measured in this run; nothing here asserts a time.

Run::

    .venv/bin/python benchmarks/cost_curves.py --scales 1e5,1e6 --out /tmp/cost-curves
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

#: assets whose cost depends on the catalog, not on impressions (fixed here: same catalog at every scale)
CATALOG_ASSETS = {"text_encoder", "image_encoder", "item_multimodal", "ppm_item_cache"}
STEP_START = re.compile(r' - ([a-z0-9_]+) - STEP_START - ')
STEP_DONE = re.compile(r'Finished execution of step "([a-z0-9_]+)" in ([0-9.hms]+)\.')
STEP_FAILED = re.compile(r' - ([a-z0-9_]+) - STEP_FAILURE - ')


def _dur(s: str) -> float:
    """Dagster's ``1m29s`` / ``38.34s`` / ``187ms`` -> seconds."""
    if s.endswith("ms") and "m" not in s[:-2]:
        return float(s[:-2]) / 1e3
    total = 0.0
    for num, unit in re.findall(r"([0-9.]+)([hms])", s):
        total += float(num) * {"h": 3600, "m": 60, "s": 1}[unit]
    return total


def tree_rss(proc: psutil.Process) -> dict[str, int]:
    """RSS (bytes) of ``proc`` plus all its descendants (processes that exit mid-read are skipped), in total
    and by kind: ``spark`` = the Spark JVM and its Python workers (``pyspark.daemon`` / ``pyspark.worker``,
    which Spark keeps alive between jobs), ``driver`` = the rest (the CLI, Dagster and the step's code)."""
    out = {"total": 0, "driver": 0, "spark": 0}
    for p in [proc, *proc.children(recursive=True)]:
        try:
            rss = p.memory_info().rss
            cmd = " ".join(p.cmdline()[:4])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        kind = "spark" if ("java" in cmd or "pyspark." in cmd) else "driver"
        out[kind] += rss
        out["total"] += rss
    return out


def run_pipeline(env: dict[str, str], select: str, log_path: Path) -> dict:
    """``ppm run --select select`` with RSS sampling. Returns wall seconds, peak RSS (GiB), per-step
    seconds (Dagster's), per-step peak RSS (GiB), the exit code and the failed steps.

    Raises:
        RuntimeError: the run failed before its last asset (names the log file). A run whose assets all
            materialized but an asset *check* failed is returned with ``rc`` and ``failed_steps`` set.
    """
    cmd = [sys.executable, "-m", "ppm_platform.cli", "run", "--dagster-log", "--select", select]
    t0 = time.perf_counter()
    with log_path.open("w", buffering=1) as log:
        proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1)
        ps = psutil.Process(proc.pid)
        state = {"step": "startup", "peak": 0, "peak_driver": 0, "step_peak": {}, "step_peak_driver": {},
                 "step_s": {}, "failed": []}
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                rss = tree_rss(ps)
                state["peak"] = max(state["peak"], rss["total"])
                state["peak_driver"] = max(state["peak_driver"], rss["driver"])
                for key, kind in (("step_peak", "total"), ("step_peak_driver", "driver")):
                    sp = state[key]
                    sp[state["step"]] = max(sp.get(state["step"], 0), rss[kind])
                stop.wait(0.5)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        for line in proc.stdout:
            log.write(line)
            if m := STEP_START.search(line):
                state["step"] = m.group(1)
            elif m := STEP_DONE.search(line):
                state["step_s"][m.group(1)] = round(_dur(m.group(2)), 2)
            elif m := STEP_FAILED.search(line):
                state["failed"].append(m.group(1))
        rc = proc.wait()
        stop.set()
        th.join()
    last = select.split(",")[-1].strip("*")
    if rc != 0 and last not in state["step_s"]:
        raise RuntimeError(f"pipeline run failed (exit {rc}, failed steps {state['failed']}); log {log_path}")
    gib = 1024 ** 3
    # asset checks run as their own steps: keep the assets' figures only (checks are named <asset>_<check>)
    assets = {k: v for k, v in state["step_s"].items() if not any(k.startswith(a + "_") for a in state["step_s"])}
    return {"wall_s": round(time.perf_counter() - t0, 1), "peak_rss_gib": round(state["peak"] / gib, 3),
            "peak_driver_rss_gib": round(state["peak_driver"] / gib, 3),
            "step_seconds": assets, "rc": rc, "failed_steps": state["failed"],
            "step_peak_rss_gib": {k: round(v / gib, 3) for k, v in state["step_peak"].items() if k in assets},
            "step_peak_driver_rss_gib": {k: round(v / gib, 3) for k, v in state["step_peak_driver"].items()
                                         if k in assets},
            # asset checks (and start-up): where a tree peak above every asset's comes from
            "other_step_peak_rss_gib": {k: round(v / gib, 3) for k, v in state["step_peak"].items() if k not in assets}}


#: offline stores compared by :func:`pit_compare`: name in the JSON -> Feast ``offline_store.type``
STORES = {"duckdb": "duckdb", "asof": "ppm_platform.feature_store.offline_store.AsofDuckDBOfflineStore", "dask": "dask"}


def _pit_call(settings, store_name: str, ent_path: str, ref_path: str, q) -> None:
    """Child process of :func:`_pit_store`: one ``get_historical_features`` call on ``store_name``."""
    import pandas as pd
    from feast import FeatureStore, RepoConfig

    from ppm_platform.feature_store import repo_config_dict

    ent = pd.read_parquet(ent_path)
    cfg = repo_config_dict(settings)
    cfg["offline_store"] = {"type": STORES[store_name]}
    config = RepoConfig(**cfg)
    config.repo_path = settings.feature_repo_dir
    store = FeatureStore(repo_path=str(settings.feature_repo_dir), config=config)
    fs = store.get_feature_service("urm_training")
    t0 = time.perf_counter()
    try:
        res = store.get_historical_features(entity_df=ent, features=fs).to_df()
    except Exception as e:  # report, do not hide: a store that fails is a data point
        q.put({"error": f"{type(e).__name__}: {e}"[:500]})
        return
    secs = time.perf_counter() - t0
    res[["_row", "hist_len", "ppm_seq_len", "age"]].to_parquet(ref_path)
    q.put({"seconds": round(secs, 2), "rows_per_s": round(len(ent) / secs, 1), "rows_per_min": round(60 * len(ent) / secs),
           "returned_rows": int(len(res)), "dropped": int(len(ent) - res["_row"].nunique())})


def _pit_store(settings, store_name: str, ent_path: Path, ref_path: Path, timeout_s: float, max_rss_gib: float) -> dict:
    """:func:`_pit_call` in a fresh process, killed (and reported so) past ``timeout_s`` seconds or
    ``max_rss_gib`` GiB of RSS: Feast's file (dask) store loads whole feature tables, which at 1e7
    impressions would otherwise run for hours or take the machine's memory."""
    import multiprocessing as mp
    import queue

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_pit_call, args=(settings, store_name, str(ent_path), str(ref_path), q))
    t0, peak = time.perf_counter(), 0
    p.start()
    proc = psutil.Process(p.pid)
    while True:
        try:
            return {**q.get(timeout=1.0), "peak_rss_gib": round(peak / 1024 ** 3, 2)}
        except queue.Empty:
            pass
        try:
            peak = max(peak, sum(c.memory_info().rss for c in [proc, *proc.children(recursive=True)]))
        except psutil.Error:
            pass
        why = (f"killed after {timeout_s:.0f} s (did not finish)" if time.perf_counter() - t0 > timeout_s else
               f"killed at {peak / 1024 ** 3:.1f} GiB RSS (cap {max_rss_gib} GiB)" if peak > max_rss_gib * 1024 ** 3 else
               f"exited with code {p.exitcode} without a result" if not p.is_alive() else None)
        if why:
            p.kill()
            p.join()
            return {"error": why, "seconds": round(time.perf_counter() - t0, 1), "peak_rss_gib": round(peak / 1024 ** 3, 2)}


def _same(a, b) -> bool:
    """Equal features (the scalar columns kept by :func:`_pit_call`) row for row, both sorted by ``_row``."""
    return len(a) == len(b) and all(a[c].astype("Float64").equals(b[c].astype("Float64"))
                                    for c in ("hist_len", "ppm_seq_len", "age"))


def pit_compare(settings, rows: int, seed: int = 0, timeout_s: float = 1800, max_rss_gib: float = 12) -> dict:
    """Point-in-time retrieval of the same ``rows`` entity rows (a random sample of the impressions)
    through feature service ``urm_training`` on each of :data:`STORES`, each one call
    in its own process (bounded by ``timeout_s`` seconds and ``max_rss_gib``), then through the
    ``training_set`` stage's chunked Feast retrieval.

    Returns per store: ``seconds``, ``rows_per_s``, ``rows_per_min``, ``returned_rows``, ``dropped``
    (entity rows sent minus distinct row ids returned) and ``peak_rss_gib``, or ``error`` if the store
    raised or was killed.
    """
    import tempfile

    import pandas as pd

    inter = pd.read_parquet(settings.tables_dir / "interactions.parquet",
                            columns=["user_id", "item_id", "event_timestamp"])
    ent = inter.sample(min(rows, len(inter)), random_state=seed).reset_index(drop=True)
    del inter
    ent["event_timestamp"] = ent["event_timestamp"].dt.floor("us")
    ent["_row"] = range(len(ent))
    out = {"entity_rows": len(ent)}
    with tempfile.TemporaryDirectory(dir=settings.artifacts_dir) as tmp:
        ent.to_parquet(Path(tmp) / "entity.parquet")
        for name in STORES:
            ref_path = Path(tmp) / f"{name}.parquet"
            out[name] = _pit_store(settings, name, Path(tmp) / "entity.parquet", ref_path, timeout_s, max_rss_gib)
            print(f"[cost_curves] PIT {name}: {out[name]}", file=sys.stderr, flush=True)
            if name == "duckdb" and ref_path.exists():
                ref = pd.read_parquet(ref_path).sort_values("_row").reset_index(drop=True)
            if name == "asof" and ref_path.exists() and "ref" in locals():
                one = pd.read_parquet(ref_path).sort_values("_row").reset_index(drop=True)
                out[name]["equal_to_duckdb"] = _same(one, ref)
    # the training_set stage's executor on the same rows: the ASOF store in 250k-row chunks (time windows),
    # streamed to parquet under a 1 GB DuckDB memory limit
    import pyarrow.parquet as pq

    from ppm_platform.feature_store import write_training_set

    with tempfile.TemporaryDirectory(dir=settings.artifacts_dir) as tmp:
        st = write_training_set(settings, ent, Path(tmp) / "ts.parquet", chunk_rows=None, memory_limit="1GB")
        got = pq.read_table(Path(tmp) / "ts.parquet", columns=["_row", "hist_len", "ppm_seq_len", "age"]
                            ).to_pandas().sort_values("_row").reset_index(drop=True)
    same = _same(got, ref) if "ref" in locals() else None
    out["training_set_feast"] = {"seconds": st["seconds"], "rows_per_s": st["rows_per_s"],
                                 "rows_per_min": st["rows_per_min"], "chunks": st["chunks"],
                                 "returned_rows": st["rows"], "dropped": int(len(ent) - got["_row"].nunique()),
                                 "equal_to_one_call": same}
    return out


def _online_rows(settings) -> int:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from ppm_platform.feature_store import load_definitions

    total = 0
    for fv in load_definitions(settings)["feature_views"]:
        key = fv.entity_columns[0].name
        col = pq.read_table(fv.batch_source.path, columns=[key]).column(0)
        total += len(pc.unique(col))
    return total


def _rate(stage: dict) -> float | None:
    """Training rows per second of a Base / URM stage result (train rows x epochs / train seconds)."""
    rows, secs, epochs = stage.get("rows", {}).get("train"), stage.get("train_seconds"), stage.get("epochs")
    return round(rows * len(epochs) / secs, 1) if rows and secs and epochs else None


def scale_shape(n: int, items: int) -> dict:
    """Users / items of a scale: users grow with impressions (about 50 impressions per user, capped at
    100k); the catalog is fixed (``--items``, default 500) at every scale: encoding and encoder fine-tuning
    are per-catalog costs (benchmarks/encode_throughput.py measures them; EfficientNet runs ~1-12 items/s
    on these shared 2 cores), so a catalog growing with impressions would measure the encoders, not the
    platform's impression-driven stages."""
    return {"n_users": int(min(max(n // 50, 500), 100_000)), "n_items": items}


def scale_dir(out: Path, n: int) -> Path:
    """The folder of scale ``n`` (impressions) under ``out``: ``n1e07`` etc."""
    return out / f"n{n:.0e}".replace("+", "")


def scale_env(root: Path) -> dict[str, str]:
    """Environment of the ``ppm run`` of a scale folder (its synthetic ``data/``, ``artifacts/`` and
    ``artifacts/config.json``), the caller's ``PPM_*`` variables removed."""
    data, art = root / "data", root / "artifacts"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PPM_")}
    env.update(PPM_ARTIFACTS_DIR=str(art), PPM_DATASET="canonical", PPM_DATA_DIR=str(data),
               PPM_CONFIG=str(art / "config.json"), PYSPARK_PYTHON=sys.executable, SPARK_LOCAL_IP="127.0.0.1")
    return env


def run_figures(run: dict, settings) -> dict:
    """A scale's figures from a :func:`run_pipeline` result and the stages' ``artifacts/runs/*.json``."""
    from ppm_platform.io import read_json

    stages = {p.stem: read_json(p) for p in sorted((settings.artifacts_dir / "runs").glob("*.json"))}
    online_rows = _online_rows(settings)
    online_s = run["step_seconds"].get("online_store") or stages.get("online_store", {}).get("seconds")
    ts = stages.get("training_set", {})
    return {
        "end_to_end_s": run["wall_s"], "peak_rss_gib": run["peak_rss_gib"],
        "run_rc": run["rc"], "failed_steps": run["failed_steps"],
        "peak_driver_rss_gib": run["peak_driver_rss_gib"],
        "asset_seconds": run["step_seconds"], "asset_peak_rss_gib": run["step_peak_rss_gib"],
        "asset_peak_driver_rss_gib": run["step_peak_driver_rss_gib"],
        "check_step_peak_rss_gib": run["other_step_peak_rss_gib"],
        "training_set": {k: ts.get(k) for k in ("rows", "seconds", "rows_per_s", "rows_per_min", "chunks",
                                                 "chunk_rows")},
        "ppm_train_rows_per_s": stages.get("ppm_model", {}).get("train_rows_per_s"),
        "urm_train_rows_per_s": _rate(stages.get("urm_model", {})),
        "materialize": {"online_rows": online_rows, "seconds": online_s,
                        "rows_per_s": round(online_rows / online_s, 1) if online_s else None},
        "stage_figures": {k: {kk: vv for kk, vv in v.items() if isinstance(vv, (int, float, str))}
                          for k, v in stages.items()},
    }


def merge_runs(entry: dict, run: dict) -> dict:
    """A :func:`run_pipeline` result covering both a scale's earlier, interrupted run (its ``entry``) and
    ``run``, which materialized the rest: times add up (the two runs' walls, not the pause between them),
    peaks are the larger, per-step figures are the union (``run``'s where both have a step)."""
    steps = {**entry["asset_seconds"], **run["step_seconds"]}
    other = {k: v for k, v in {**entry["check_step_peak_rss_gib"], **run["other_step_peak_rss_gib"]}.items()
             if k not in steps}   # an asset the first run left unfinished is a finished step now
    return {"wall_s": round(entry["end_to_end_s"] + run["wall_s"], 1),
            "peak_rss_gib": max(entry["peak_rss_gib"], run["peak_rss_gib"]),
            "peak_driver_rss_gib": max(entry["peak_driver_rss_gib"], run["peak_driver_rss_gib"]),
            "rc": run["rc"], "failed_steps": run["failed_steps"],
            "step_seconds": steps,
            "step_peak_rss_gib": {**entry["asset_peak_rss_gib"], **run["step_peak_rss_gib"]},
            "step_peak_driver_rss_gib": {**entry["asset_peak_driver_rss_gib"], **run["step_peak_driver_rss_gib"]},
            "other_step_peak_rss_gib": other}


def remaining_steps(select: str, done: set[str]) -> list[str]:
    """The assets of Dagster selection ``select`` whose step is not in ``done`` (step = the asset's op:
    ``canonical_tables`` for the four canonical tables)."""
    import dagster as dg

    from dagster_project.definitions import defs

    keys = dg.AssetSelection.from_string(select).resolve(defs.resolve_asset_graph())
    return sorted(k.to_user_string() for k in keys if defs.resolve_assets_def(k).op.name not in done)


def resume(args, settings_cls) -> None:
    """``--resume SCALE_DIR``: materialize what the scale's interrupted run did not (one more ``ppm run``,
    sampled the same way), merge it into that scale's entry of ``--out``/cost_curves.json, run the PIT
    comparison if the entry lacks it, and rewrite the JSON and plot."""
    path = args.out / "cost_curves.json"
    results = json.loads(path.read_text())
    root = args.resume.resolve()
    entry = next((s for s in results["scales"] if scale_dir(args.out, s["impressions"]).resolve() == root), None)
    if entry is None:
        raise SystemExit(f"--resume {root}: no scale of {path} lives there")
    todo = remaining_steps(args.select, set(entry["asset_seconds"]))
    if not todo:
        raise SystemExit(f"--resume {root}: every asset of {args.select!r} already ran")
    env = scale_env(root)
    print(f"[cost_curves] resuming {root}: {todo}", file=sys.stderr, flush=True)
    run = run_pipeline(env, ",".join(todo), root / "dagster_resume.log")
    settings = settings_cls.from_env(env=env)
    runs = entry.get("runs") or [{"select": results["select"], "wall_s": entry["end_to_end_s"], "rc": entry["run_rc"]}]
    entry.update(run_figures(merge_runs(entry, run), settings),
                 runs=[*runs, {"select": ",".join(todo), "wall_s": run["wall_s"], "rc": run["rc"]}])
    path.write_text(json.dumps(results, indent=2))
    if "pit_duckdb_vs_dask" not in entry:
        entry["pit_duckdb_vs_dask"] = pit_compare(settings, args.pit_rows, args.seed, args.pit_timeout, args.pit_max_rss)
    finish(results, args.out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scales", default="1e5,1e6", help="comma-separated impression counts")
    ap.add_argument("--out", default="/tmp/ppm-cost-curves", type=Path)
    ap.add_argument("--pit-rows", default=20_000, type=int, help="entity rows of the DuckDB vs dask PIT comparison")
    ap.add_argument("--pit-timeout", default=1800, type=float, help="seconds one store's PIT call may run")
    ap.add_argument("--pit-max-rss", default=12, type=float, help="GiB of RSS one store's PIT call may take")
    ap.add_argument("--select", default="*ranking_demo")
    ap.add_argument("--epochs", default=1, type=int, help="PPM and URM epochs (1: cost per pass over the data)")
    ap.add_argument("--seed", default=0, type=int)
    ap.add_argument("--items", default=500, type=int, help="catalog size at every scale")
    ap.add_argument("--resume", type=Path, default=None, metavar="SCALE_DIR",
                    help="finish a scale whose run stopped early (e.g. --out/n1e07): run the rest of --select there "
                         "and merge both runs into its entry of --out/cost_curves.json")
    ap.add_argument("--combine", nargs="+", type=Path, default=None, metavar="JSON",
                    help="only merge the scales of earlier cost_curves.json files into --out (no runs)")
    ap.add_argument("--finetune-epochs", default=1, type=int,
                    help="encoder fine-tune epochs (a per-catalog cost, not an impression-driven one)")
    ap.add_argument("--text-steps", default=2, type=int, help="text fine-tune optimizer steps (per-catalog cost)")
    ap.add_argument("--image-items", default=100, type=int, help="items the image fine-tune uses (per-catalog cost)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import typeguard  # Feast's typeguard instrumentation off: it doubles `import feast` (as tests/conftest.py)

    typeguard.typechecked = lambda target=None, **_k: (lambda t: t) if target is None else target
    from ppm_platform.config import Settings
    from ppm_platform.data.synthetic import SyntheticConfig, generate

    args.out.mkdir(parents=True, exist_ok=True)
    if args.combine:
        docs = [json.loads(p.read_text()) for p in args.combine]
        merged = {**docs[0], "scales": sorted((s for d in docs for s in d["scales"]), key=lambda s: s["impressions"]),
                  "combined_from": [str(p) for p in args.combine],
                  "machine": [d["machine"] for d in docs]}
        finish(merged, args.out)
        return
    if args.resume:
        resume(args, Settings)
        return
    results = {"machine": {"cpus": psutil.cpu_count(), "ram_gib": round(psutil.virtual_memory().total / 1024 ** 3, 1),
                           "load_avg_1m_at_start": round(os.getloadavg()[0], 1)},
               "select": args.select, "epochs": args.epochs, "finetune_epochs": args.finetune_epochs,
               "finetune_text_steps": args.text_steps, "finetune_image_items": args.image_items,
               "catalog_items": args.items, "scales": []}
    for tok in args.scales.split(","):
        n = int(float(tok))
        shape = scale_shape(n, args.items)
        root = scale_dir(args.out, n)
        data, art = root / "data", root / "artifacts"
        art.mkdir(parents=True, exist_ok=True)
        syn = generate(SyntheticConfig(n_impressions=n, seed=args.seed, **shape), data)
        (art / "config.json").write_text(json.dumps(
            {"ppm": {"epochs": args.epochs}, "urm": {"epochs": args.epochs},
             "finetune": {"text": {"epochs": args.finetune_epochs, "max_steps": args.text_steps},
                          "image": {"epochs": args.finetune_epochs, "max_items": args.image_items}}}))
        env = scale_env(root)
        print(f"[cost_curves] {n} impressions: {shape} -> {root}", file=sys.stderr, flush=True)
        run = run_pipeline(env, args.select, root / "dagster.log")
        settings = Settings.from_env(env=env)
        entry = {"impressions": n, **shape, "clicks": syn["clicks"], "synth_seconds": syn["seconds"],
                 **run_figures(run, settings)}
        print(f"[cost_curves] {n}: {run['wall_s']} s, peak {run['peak_rss_gib']} GiB; PIT comparison ...",
              file=sys.stderr, flush=True)
        results["scales"].append(entry)
        (args.out / "cost_curves.json").write_text(json.dumps(results, indent=2))  # kept if the comparison dies
        entry["pit_duckdb_vs_dask"] = pit_compare(settings, args.pit_rows, args.seed, args.pit_timeout, args.pit_max_rss)
        (args.out / "cost_curves.json").write_text(json.dumps(results, indent=2))
    finish(results, args.out)


def finish(results: dict, out: Path) -> None:
    """Add the growth exponents, write ``cost_curves.json`` + ``cost_curves.png`` into ``out``, print JSON."""
    import math

    sc = results["scales"]
    for s in sc:  # the impression-driven part: all assets but the per-catalog encoder ones
        s["impression_driven_s"] = round(sum(v for k, v in s["asset_seconds"].items() if k not in CATALOG_ASSETS), 1)
    if len(sc) >= 2:  # growth exponent between consecutive scales: time ~ n^k (k <= 1 = linear or better)
        for key in ("end_to_end_s", "impression_driven_s"):
            results[f"growth_exponent_{key}"] = [
                round(math.log(b[key] / a[key]) / math.log(b["impressions"] / a["impressions"]), 3)
                for a, b in zip(sc, sc[1:])]
    (out / "cost_curves.json").write_text(json.dumps(results, indent=2))
    plot(results, out / "cost_curves.png")
    print(json.dumps(results, indent=2))


def plot(results: dict, path: Path) -> None:
    """Three panels: end-to-end seconds and peak RSS vs impressions (log-log), and per-asset seconds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sc = results["scales"]
    n = [s["impressions"] for s in sc]
    fig, ax = plt.subplots(1, 3, figsize=(16, 4.5))
    ax[0].loglog(n, [s["end_to_end_s"] for s in sc], "o-", label="end to end")
    assets = sorted({a for s in sc for a in s["asset_seconds"]},
                    key=lambda a: -max(s["asset_seconds"].get(a, 0) for s in sc))[:6]
    for a in assets:
        ax[0].loglog(n, [max(s["asset_seconds"].get(a, 0), 1e-2) for s in sc], ".--", label=a)
    ax[0].set(xlabel="impressions", ylabel="seconds", title="time by asset")
    ax[0].legend(fontsize=7)
    ax[1].semilogx(n, [s["peak_rss_gib"] for s in sc], "o-", label="peak RSS (process tree)")
    if all("peak_driver_rss_gib" in s for s in sc):
        ax[1].semilogx(n, [s["peak_driver_rss_gib"] for s in sc], "s--", label="peak RSS without Spark JVM + workers")
        for a in ("ppm_model", "training_set", "urm_model"):
            ax[1].semilogx(n, [s["asset_peak_driver_rss_gib"].get(a, 0) for s in sc], ".:", label=f"{a} (without Spark)")
    ax[1].axhline(4, color="r", ls=":", label="4 GiB goal")
    ax[1].set(xlabel="impressions", ylabel="GiB", title="peak RSS", ylim=(0, None))
    ax[1].legend(fontsize=7)
    stores = [("duckdb", "Feast DuckDB store (1 call)"), ("asof", "ASOF DuckDB store (1 call)"),
              ("dask", "Feast file (dask) store (1 call)"),
              ("training_set_feast", "training_set: ASOF store, streamed, 1 GB cap")]
    w = 0.8 / len(stores)
    for k, (store, label) in enumerate(stores):
        vals = [s["pit_duckdb_vs_dask"].get(store, {}).get("rows_per_min", 0) or 0 for s in sc]
        ax[2].bar([i + k * w for i in range(len(sc))], vals, w, label=label)
    ax[2].axhline(1.5e6, color="r", ls=":", label="1.5 M rows/min goal")
    ax[2].set_yscale("log")
    ax[2].set_xticks([i + 0.4 - w / 2 for i in range(len(sc))], [f"{x:.0e}" for x in n])
    ax[2].set(xlabel="impressions", ylabel="entity rows / min (log)", title="point-in-time retrieval")
    ax[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
