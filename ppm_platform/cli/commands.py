"""The ``ppm`` commands (one click group, ``main``).

``ppm demo``     materialize the main job on the configured dataset, then print the summary
``ppm run``      materialize a selection of assets (Dagster selection syntax)
``ppm backfill`` the daily partitions of a date range in one run
``ppm rank``     rank candidate items for a user (a running ``ppm serve``, else the online store directly)
``ppm serve``    the HTTP ranking service
``ppm summary``  print the figures of the last run
``ppm report``   materialize the evaluation report (paper Table 2) and print it
``ppm doctor``   check the machine and the artifacts (Java, Spark, dataset, encoder weights, Feast, models)
``ppm synth``    write a synthetic canonical dataset

Exit codes (also in ``ppm --help``): :data:`ppm_platform.cli.errors.EXIT_CODES`. Errors print as one line;
``ppm --verbose ...`` prints the traceback too. Heavy libraries are imported inside the command that needs them,
so ``ppm --help`` and ``ppm rank`` against a running server start fast.
"""

from __future__ import annotations

import os
import time

import click

from ppm_platform.cli.errors import (EPILOG as _EPILOG, EXIT_BAD_INPUT, EXIT_ERROR, EXIT_MISSING, EXIT_RUN_FAILED,
                                     EXIT_USAGE, PPMError, PPMGroup)
from ppm_platform.cli.orchestration import DAILY_ASSETS, DEMO_SELECTION, materialize
from ppm_platform.cli.rank import EntityIdType
from ppm_platform.cli.summary import print_summary
from ppm_platform.config import Settings


@click.group(cls=PPMGroup, epilog=_EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Print full tracebacks on errors.")
@click.pass_context
def main(ctx: click.Context, verbose: bool) -> None:
    """ppm-platform: PPM (pre-trained plug-in CTR model) on Spark + Feast + Dagster.

    \b
    Typical session:
      ppm doctor              check Java, Spark, the dataset, weights, Feast and models
      ppm demo                the main job on MovieLens-100K: 22 of the 27 assets, 10-16 min on 2 cores
                              (not the evaluation reports: ppm report; not the daily partitions: ppm backfill)
      ppm rank 234 50 100 181 rank items 50, 100, 181 for user 234 from the online store
      make ui                 the Dagster UI on http://127.0.0.1:3000
    """
    ctx.ensure_object(dict)["verbose"] = verbose


def _settings(profile: str | None = None) -> Settings:
    return Settings.from_env(**({"profile": profile} if profile else {}))


def _materialize(settings: Settings, select: str, label: str, what: str, partition_range: str | None = None,
                 stream_log: bool = False):
    """Run :func:`~ppm_platform.cli.orchestration.materialize` with one line per asset; name the full log at
    the end. Raises :class:`PPMError` (exit 4) naming the failed step or check and the log file."""
    click.echo(f"{label}: materializing {what} through Dagster (one line per asset as it finishes)")
    t0 = time.perf_counter()
    out = materialize(settings, select, partition_range=partition_range, label=label.replace("ppm ", ""),
                      echo=click.echo, stream_log=stream_log)
    p = out.progress
    checks = f", {p.checks_passed} checks passed" + (f", {len(p.checks_failed)} failed" if p.checks_failed else "")
    click.echo(f"{len(p.assets)} assets in {time.perf_counter() - t0:.0f} s{checks}; "
               f"full Dagster/Spark log: {out.log_path}")
    if out.rc != 0:
        raise PPMError(f"{what}: {p.failure()} (dagster exit {out.rc}); full log: {out.log_path}", EXIT_RUN_FAILED)
    return out


@main.command(epilog=_EPILOG)
def demo() -> None:
    """Run the main job on the configured dataset and print the summary (10-13 min on 2 cores).

    The main job is the 21 assets up to the online ranking and the Base baseline (`*ranking_demo,*base_onnx`):
    ingest, encoder fine-tuning, Spark features, PPM + caches, Feast, training set, Base + URM, ONNX, online
    store. Not run: `evaluation_report` and `item_cold_report` (the 3-seed Table 2 harness: `ppm report`) and
    the daily group (`interactions_daily`, `user_features_daily`, `online_user_features`: `ppm backfill`).

    Prints one line per asset as it finishes (seconds and its headline figure), then the summary; the full
    Dagster/Spark log goes to PPM_ARTIFACTS_DIR/logs/demo-<time>.log, named at the end.

    Default: MovieLens-100K from PPM_DATA_DIR with embedded stores (Spark local, DuckDB, SQLite); artifacts
    in PPM_ARTIFACTS_DIR (default ./artifacts). Your own catalog: PPM_DATASET=canonical PPM_DATA_DIR=<folder>
    (docs/byo-catalog.md).
    """
    settings = _settings().ensure_dirs()
    try:
        settings.require_dataset()
    except FileNotFoundError as e:
        raise PPMError(str(e), EXIT_MISSING) from None
    t0 = time.perf_counter()
    _materialize(settings, DEMO_SELECTION, "ppm demo", "the main job (*ranking_demo, *base_onnx)")
    print_summary(settings)
    click.echo(f"\ntotal wall time {time.perf_counter() - t0:.0f} s; artifacts in {settings.artifacts_dir}")


@main.command(epilog=_EPILOG)
@click.option("--select", default="*", show_default=True,
              help="Dagster asset selection: 'urm_model*' (urm_model and everything downstream), "
                   "'*ranking_demo' (it and everything upstream), 'urm_model+' (it and one level down), "
                   "'ppm_model,urm_model' (a list).")
@click.option("--profile", type=click.Choice(["local", "cluster"]), default=None,
              help="Resource profile (default: PPM_PROFILE or local). cluster = Spark master URL + Spark offline "
                   "store + Redis online store (docs/cluster.md).")
@click.option("--dagster-log", is_flag=True,
              help="Print Dagster's full console log (every event, DEBUG included) instead of one line per asset.")
def run(select: str, profile: str | None, dagster_log: bool) -> None:
    """Materialize a selection of assets through Dagster (the same run the UI shows).

    Prints one line per asset as it finishes; the full Dagster/Spark log goes to PPM_ARTIFACTS_DIR/logs/.
    """
    settings = _settings(profile).ensure_dirs()
    _materialize(settings, select, "ppm run", f"{select!r}", stream_log=dagster_log)


@main.command(epilog=_EPILOG)
@click.option("--from", "first", required=True, type=click.DateTime(["%Y-%m-%d"]), help="First day (UTC), YYYY-MM-DD.")
@click.option("--to", "last", required=True, type=click.DateTime(["%Y-%m-%d"]), help="Last day (UTC, inclusive).")
@click.option("--select", default=DAILY_ASSETS, show_default=True, help="Daily assets to backfill.")
@click.option("--profile", type=click.Choice(["local", "cluster"]), default=None, help="Resource profile.")
def backfill(first, last, select: str, profile: str | None) -> None:
    """Backfill the daily partitions of a date range in one Dagster run: interactions, user features (Spark +
    frozen PPM) and the online store's user views (the range's rows, Feast materialize). The unpartitioned
    assets they read (canonical tables, ppm_model, ppm_item_cache, feast_definitions) must exist: `ppm demo`."""
    if last < first:
        raise PPMError(f"--to {last:%Y-%m-%d} is before --from {first:%Y-%m-%d}", EXIT_USAGE)
    settings = _settings(profile).ensure_dirs()
    lo, hi = settings.partitions.start_date, settings.partitions.end_date
    if f"{first:%Y-%m-%d}" < lo or (hi and f"{last:%Y-%m-%d}" >= hi):
        raise PPMError(f"days {first:%Y-%m-%d}..{last:%Y-%m-%d} outside the partitions [{lo}, {hi or 'today'}) "
                       "(settings.partitions; PPM_CONFIG)", EXIT_USAGE)
    rng = f"{first:%Y-%m-%d}...{last:%Y-%m-%d}"
    _materialize(settings, select, "ppm backfill", f"{select} for {rng}", partition_range=rng)
    click.echo(f"backfilled {select} for {rng}")


@main.command(epilog=_EPILOG)
def summary() -> None:
    """Print the figures of the last run (from PPM_ARTIFACTS_DIR/runs/*.json)."""
    settings = _settings()
    from ppm_platform.pipeline import stage_result

    if stage_result(settings, "ingest") is None:
        raise PPMError(f"no run recorded in {settings.artifacts_dir / 'runs'}: run `ppm demo` first", EXIT_MISSING)
    print_summary(settings)


@main.command(epilog=_EPILOG)
@click.argument("user_id", type=EntityIdType())
@click.argument("item_ids", type=EntityIdType(), nargs=-1, required=True)
@click.option("--model", default="urm", type=click.Choice(["urm", "base"]), show_default=True,
              help="urm = IDRec + PPM plug-in; base = the IDRec-only baseline.")
@click.option("--url", default=None, metavar="URL",
              help="A running `ppm serve` (e.g. http://127.0.0.1:8000); default: the serving.host/port of the "
                   "settings when its /health answers within 0.5 s, else score in this process.")
@click.option("--local", is_flag=True, help="Score in this process even when a server is running.")
def rank(user_id: int, item_ids: tuple[int, ...], model: str, url: str | None, local: bool) -> None:
    """Rank ITEM_IDS for USER_ID: click and order probabilities, best first, with titles, whether the user
    and each item are known to the online store (unknown ones are scored as cold start), and the lookup time.

    Ids are checked as POST /rank checks them: integers 0 <= id < 2**63, at most serving.max_candidates.
    Through a running `ppm serve` the call takes well under a second; in this process it loads Feast and the
    model first (seconds; the lookup shown is the cold first one, then a warm repeat). Needs a finished run
    (`ppm demo`). Example: ppm rank 405 50 100 181 258
    """
    from ppm_platform.cli import rank as ranking

    settings = _settings()
    limit = settings.serving.max_candidates
    if len(item_ids) > limit:
        raise click.BadParameter(f"{len(item_ids)} candidates, at most {limit} allowed (serving.max_candidates)",
                                 param_hint="ITEM_IDS")
    try:
        res, wall_s = ranking.run_rank(settings, user_id, list(item_ids), model, url, local)
    except ranking.ServerError as e:
        code = (EXIT_USAGE if e.status == 422 else EXIT_BAD_INPUT if e.kind == "version_mismatch"
                else EXIT_MISSING if "not loaded" in e.detail else EXIT_ERROR)
        raise PPMError(str(e), code) from None
    except ConnectionError as e:
        raise PPMError(str(e), EXIT_MISSING) from None
    for line in ranking.format_ranking(res, ranking.titles(settings.tables_dir / "items.parquet",
                                                           [r[0] for r in res.rows])):
        click.echo(line)
    click.echo(f"ranked in {wall_s:.2f} s" + ("" if res.source.startswith("ppm serve") else
                                               " (model and Feast loaded in this process; with `ppm serve` "
                                               "running, ppm rank answers through it in well under a second)"))


@main.command(epilog=_EPILOG)
@click.option("--host", default=None, help="Bind address (default serving.host = 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Port (default serving.port = 8000).")
@click.option("--model", default=None, type=click.Choice(["urm", "base"]),
              help="Model to serve (default serving.model = urm).")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1),
              help="Worker processes (uvicorn); each scores one request at a time with its own ONNX session, "
                   "Feast store and item cache. About one per core.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug", "trace"]),
              help="uvicorn's log level (the loading / ready / shutdown lines are at info).")
@click.option("--access-log/--no-access-log", default=False, show_default=True,
              help="uvicorn's access log: one line per request.")
def serve(host: str | None, port: int | None, model: str | None, workers: int, log_level: str,
          access_log: bool) -> None:
    """Start the HTTP ranking service: POST /rank {user_id, item_ids} and GET /health (docs/serving.md).

    Logs "loading", then "ready" with its URL once the model is loaded and the port listens (seconds: Feast,
    ONNX sessions, item cache), and "shutdown" on Ctrl+C. Features come from the Feast online store, scores
    from onnxruntime. Needs a finished run (`ppm demo`). Try it: ppm rank 405 50 100 181 (uses the server).
    """
    from ppm_platform.serving.app import serve as run_service

    run_service(_settings(), host, port, model, workers=workers, log_level=log_level, access_log=access_log)


@main.command(epilog=_EPILOG)
@click.option("--no-spark", is_flag=True, help="Skip starting a SparkSession (the slowest check, ~10-20 s).")
@click.option("--profile", type=click.Choice(["local", "cluster"]), default=None,
              help="Check this profile's stores (default: PPM_PROFILE or local).")
def doctor(no_spark: bool, profile: str | None) -> None:
    """Check that this machine can run the pipeline and what a finished run left behind.

    Prints one line per check (OK/FAIL, what was found, the time it took) and, for each FAIL, how to fix it.
    Exit code 0 only if every check passes, else 3. The feast_registry, online_store and models checks pass
    only after a run (`ppm demo`).
    """
    settings = _settings(profile)
    click.echo(f"ppm doctor: profile {settings.profile}, dataset {settings.dataset} ({settings.data_dir}), "
               f"artifacts {settings.artifacts_dir}")
    from ppm_platform.cli.doctor import run_doctor

    results = run_doctor(settings, spark=not no_spark)
    for r in results:
        tag = click.style(" OK ", fg="green") if r.ok else click.style("FAIL", fg="red", bold=True)
        click.echo(f"[{tag}] {r.name:<15} {r.detail}  ({r.seconds:.1f} s)")
        if not r.ok:
            click.echo(f"       {'':<15} fix: {r.fix}")
    failed = [r.name for r in results if not r.ok]
    if failed:
        raise PPMError(f"{len(failed)} of {len(results)} checks failed: {', '.join(failed)}", EXIT_MISSING)
    click.echo(f"all {len(results)} checks passed")


@main.command()
@click.option("--users", "n_users", default=1000, show_default=True, type=int, help="Users (rows).")
@click.option("--items", "n_items", default=500, show_default=True, type=int, help="Catalog items (rows).")
@click.option("--impressions", "n_impressions", default=100_000, show_default=True, type=int,
              help="Impressions (interaction rows).")
@click.option("--seed", default=0, show_default=True, type=int, help="Same seed -> identical files.")
@click.option("--cold-frac", default=0.1, show_default=True, type=float, help="Share of items created late.")
@click.option("--image-size", default=64, show_default=True, type=int, help="JPEG side in pixels; 0 = no images.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
def synth(n_users: int, n_items: int, n_impressions: int, seed: int, cold_frac: float, image_size: int,
          out_dir: str) -> None:
    """Write a synthetic canonical dataset (Zipf popularity, content-driven clicks, cold-start items) to
    OUT; run the pipeline on it with PPM_DATASET=canonical PPM_DATA_DIR=OUT."""
    from ppm_platform.data.synthetic import SyntheticConfig, generate

    try:
        cfg = SyntheticConfig(n_users=n_users, n_items=n_items, n_impressions=n_impressions, seed=seed,
                              cold_frac=cold_frac, image_size=image_size)
        res = generate(cfg, out_dir)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"wrote {res['items']} items ({res['cold_items']} cold), {res['users']} users, "
               f"{res['impressions']} impressions (CTR {res['ctr']:.3f}, {res['orders']} orders), "
               f"{res['queries']} queries to {out_dir} in {res['seconds']:.1f} s")


@main.command(epilog=_EPILOG)
@click.option("--seeds", type=click.IntRange(min=1), default=None,
              help="Model seeds (and item-cold draws) instead of evaluation.seeds / item_cold_draws: --seeds 1 is "
                   "the quick single-seed report.")
@click.option("--item-cold/--no-item-cold", default=True, show_default=True,
              help="Also run the item-cold protocol (item_cold_report: 3 draws x the pipeline on data with 20 % "
                   "of the items held out).")
def report(seeds: int | None, item_cold: bool) -> None:
    """Materialize the ``evaluation_report`` asset (Popularity and GBDT, then the paper's Table 2: Base, QM&EP,
    PPM, Base+QM&EP, URM; seeds, slices, data efficiency; section ``evaluation`` of config.py) and the
    ``item_cold_report`` asset, and print both reports.

    Needs the upstream assets (training_set, ppm_model, item_multimodal) of a finished run (`ppm demo`).
    """
    if seeds is not None:
        os.environ["PPM_EVAL_SEEDS"] = str(seeds)  # read by Settings.from_env here and in the Dagster child
    settings = _settings().ensure_dirs()
    t0 = time.perf_counter()
    select = "evaluation_report,item_cold_report" if item_cold else "evaluation_report"
    _materialize(settings, select, "ppm report", select)
    click.echo((settings.reports_dir / "report.md").read_text())
    if item_cold:
        click.echo((settings.reports_dir / "item_cold" / "summary.md").read_text())
    click.echo(f"wall time {time.perf_counter() - t0:.0f} s; report.json, report.md and plots in {settings.reports_dir}"
               + (f"; item-cold summary and per-draw reports in {settings.reports_dir / 'item_cold'}" if item_cold else ""))
