"""``ppm`` command line.

``ppm demo``   materialize the whole asset graph on MovieLens-100K (embedded defaults), then print the summary
``ppm run``    materialize a selection of assets (Dagster selection syntax)
``ppm rank``   rank candidate items for a user from the online store
``ppm summary`` print the figures of the last run

Orchestration goes through Dagster in a child process (``dagster asset materialize``), so this library
module does not import Dagster itself and the CLI run is the same run the Dagster UI shows.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import click

from ppm_platform.config import REPO_ROOT, Settings


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
    return env


def materialize(settings: Settings, select: str = "*") -> int:
    """Run ``dagster asset materialize`` for ``select`` in a child process; returns its exit code."""
    cmd = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "dagster_project.definitions",
           "--select", select]
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
    for name in ("base", "urm"):
        if r := stage_result(settings, f"{name}_model"):
            click.echo(f"{'IDRec (Base)' if name == 'base' else 'URM':<20} test AUC click {r['test_click_auc']:.4f}  "
                       f"order {r['test_order_auc']:.4f}   (GAUC click {r['test_click_gauc']:.4f})")
    if on := stage_result(settings, "urm_onnx"):
        click.echo(f"URM ONNX parity      max |torch - onnxruntime| = {on['max_abs_diff']:.2e}")
    if rk := stage_result(settings, "rank_demo"):
        click.echo(f"ranked {rk['scored']} candidates for user {rk['user_id']} in {rk['wall_ms']:.1f} ms "
                   f"(Feast lookup {rk['lookup_ms']:.1f} ms + model {rk['model_ms']:.1f} ms); top 10:")
        for i, r in enumerate(rk["top10"]):
            click.echo(f"  {i + 1:>2}. item {r['item_id']:>5}  click {r['click']:.4f}  order {r['order']:.4f}  {r['title']}")


@click.group()
def main() -> None:
    """ppm-platform: PPM (pre-trained plug-in CTR model) on Spark + Feast + Dagster."""


@main.command()
def demo() -> None:
    """Run the whole pipeline on MovieLens-100K with embedded defaults and print the summary."""
    settings = Settings.from_env().ensure_dirs()
    try:
        settings.require_dataset()
    except FileNotFoundError as e:
        raise click.ClickException(str(e)) from None
    t0 = time.perf_counter()
    rc = materialize(settings, "*")
    if rc != 0:
        raise click.ClickException(f"materialization failed (exit {rc}); see the Dagster log above")
    print_summary(settings)
    click.echo(f"\ntotal wall time {time.perf_counter() - t0:.0f} s; artifacts in {settings.artifacts_dir}")


@main.command()
@click.option("--select", default="*", show_default=True, help="Dagster asset selection, e.g. 'urm_model+'.")
def run(select: str) -> None:
    """Materialize a selection of assets."""
    rc = materialize(Settings.from_env().ensure_dirs(), select)
    sys.exit(rc)


@main.command()
def summary() -> None:
    """Print the figures of the last run."""
    print_summary(Settings.from_env())


@main.command()
@click.argument("user_id", type=int)
@click.argument("item_ids", type=int, nargs=-1, required=True)
@click.option("--model", default="urm", type=click.Choice(["urm", "base"]), show_default=True)
def rank(user_id: int, item_ids: tuple[int, ...], model: str) -> None:
    """Rank ITEM_IDS for USER_ID from the Feast online store."""
    from ppm_platform.serving.ranker import Ranker

    try:
        res = Ranker(Settings.from_env(), model).rank(user_id, list(item_ids))
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(res.scores.to_string(index=False))
    click.echo(f"lookup {res.lookup_ms:.1f} ms, model {res.model_ms:.1f} ms")


if __name__ == "__main__":
    main()
