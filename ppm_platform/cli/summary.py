"""The run summary ``ppm demo`` and ``ppm summary`` print: the figures each stage recorded in
``<artifacts>/runs/<stage>.json`` (ingest counts, items encoded, training-set rows, test AUCs, ONNX parity, the
ranking of the demo user's candidates)."""

from __future__ import annotations

import click

from ppm_platform.config import Settings


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

