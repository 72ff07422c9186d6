"""The evaluation report's files: ``report.json`` (one record per number: model, train window, split, slice,
task, metric, mean, std, seed count, per-seed values; strict JSON), ``report.md`` (Table-2 layout with the
URM - Base lifts and the targets marked met / missed) and two PNGs drawn by :mod:`ppm_platform.reporting.plots`;
and the item-cold protocol's summary markdown.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ppm_platform.evaluation.aggregate import lookup, paired_lift
from ppm_platform.evaluation.protocol import FULL, MODELS, PAPER_TABLE2, RECENT
from ppm_platform.models import TASKS
from ppm_platform.reporting.plots import bars_png, grouped_bars_png
from ppm_platform.training.metrics import HELD_OUT_SLICE, SLICES


def _fmt(r: dict | None, digits: int = 4) -> str:
    if r is None or math.isnan(r["mean"]):
        return "–"
    s = f"{r['mean']:.{digits}f}"
    return s + (f" ± {r['std']:.{digits}f}" if r["n_seeds"] > 1 else "")


#: the paired-lift rows of the report's tables, when both of their models ran: (A, B) for "A − B"
LIFT_ROWS = (("URM", "Base"), ("URM+SID", "URM"), ("Base+SID", "Base"))


def _lift(report: dict, metric: str, task: str, slice_name: str = "all", window: str = FULL,
          a: str = "URM", b: str = "Base") -> str:
    lift = paired_lift(report, a, b, task, slice_name, window, window, metric)
    if math.isnan(lift["mean"]):
        return "–"
    return f"{lift['mean']:+.4f}" + (f" ± {lift['std']:.4f}" if lift["n"] > 1 else "")


def _slices(report: dict) -> list[str]:
    return list(report["protocol"].get("slices", SLICES))


def render_markdown(report: dict, plots: dict[str, str] | None = None, title: str | None = None) -> str:
    """``report.md``: the baselines then the Table-2 rows (click / order AUC, GAUC, logloss, mean ± std over
    seeds) with the URM - Base lift (mean ± std of the per-seed paired differences), AUC by slice, data
    efficiency, the targets met / missed with their gap, and the protocol. ``plots`` maps a title to a PNG
    file name to link."""
    p = report["protocol"]
    models = [m for m in MODELS if m in p["models"]]
    slices = _slices(report)
    L = [f"# {title or 'PPM evaluation report (paper Table 2 on MovieLens-100K)'}", ""]
    L.append(f"Test split, {report['rows']['test']} impressions; train {report['rows']['train']}, "
             f"valid {report['rows']['valid']}. Seeds {p['seeds']} (mean ± sample std); "
             f"{p['epochs']} epochs, best epoch on validation click AUC. PPM version `{p['ppm_version']}`.")
    L += ["", "## Table 2 (test, all impressions)", "",
          "| Model | Click AUC | Order AUC | Click GAUC | Order GAUC | Click logloss | Order logloss | runs |",
          "|---|---|---|---|---|---|---|---|"]
    for m in models:
        cells = [_fmt(lookup(report, m, met, t)) for met in ("auc", "gauc", "logloss") for t in TASKS]
        n = (lookup(report, m) or {}).get("n_seeds", 0)
        L.append(f"| {m} | " + " | ".join(cells) + f" | {n} |")
    for a, b in LIFT_ROWS:
        if a in models and b in models:
            L.append(f"| **{a} − {b}** | " + " | ".join(_lift(report, met, t, a=a, b=b)
                                                       for met in ("auc", "gauc", "logloss") for t in TASKS) + " | |")
    L.append(f"| paper (JD.com): Base / URM | {PAPER_TABLE2['Base'][0]} / {PAPER_TABLE2['URM'][0]} | "
             f"{PAPER_TABLE2['Base'][1]} / {PAPER_TABLE2['URM'][1]} | | | | | |")
    L += ["", "GAUC skips users whose test impressions are all one class: "
          + ", ".join(f"{t} {int(lookup(report, models[0], 'gauc_users_skipped', t)['mean'])} skipped / "
                      f"{int(lookup(report, models[0], 'gauc_users', t)['mean'])} used" for t in TASKS) + "."]
    for task in TASKS:
        L += ["", f"## {task.capitalize()} AUC by slice (test)", "",
              "| Model | " + " | ".join(f"{s} ({report['slice_sizes'][s]['impressions']} imp.)" for s in slices) + " |",
              "|---|" + "---|" * len(slices)]
        for m in models:
            L.append(f"| {m} | " + " | ".join(_fmt(lookup(report, m, "auc", task, s)) for s in slices) + " |")
        for a, b in LIFT_ROWS:
            if a in models and b in models:
                L.append(f"| **{a} − {b}** | " + " | ".join(_lift(report, "auc", task, s, a=a, b=b) for s in slices)
                         + " |")
    if p["data_efficiency"]:
        frac = int(round(p["recent_fraction"] * 100))
        L += ["", f"## Data efficiency (test, all): most recent {frac} % of the train window vs 100 %", "",
              f"| Model | Click AUC @{frac} % | Click AUC @100 % | Order AUC @{frac} % | Order AUC @100 % |",
              "|---|---|---|---|---|"]
        for m in ("Base", "URM"):
            L.append(f"| {m} | " + " | ".join(_fmt(lookup(report, m, "auc", t, window=w))
                                              for t in TASKS for w in (RECENT, FULL)) + " |")
    if any(r["model"] == "GBDT" for r in report["runs"]):
        sel = next(r for r in report["runs"] if r["model"] == "GBDT")["selected"]
        L += ["", "GBDT selected on validation AUC: " + "; ".join(
            f"{t} learning_rate {v['learning_rate']}, max_leaf_nodes {v['max_leaf_nodes']}, {v['n_iter']} trees "
            f"(valid AUC {v['valid_auc']:.4f})" for t, v in sel.items()) + "."]
    L += ["", "## Targets (the lifts over the baselines the project aims at; test AUC, goals not assertions)", "",
          "| Target | Measured | Std | Required | Gap | Status |", "|---|---|---|---|---|---|"]
    for t in report["targets"]:
        L.append(f"| {t['target']} | {t['measured']:+.4f} | {t['std']:.4f} | {t['required']:+.4f} | {t['gap']:+.4f} | "
                 f"{'met' if t['met'] else 'missed'} |")
    sizes = report["slice_sizes"]
    L += ["", "## Protocol", "",
          f"- Split: global time split by event_timestamp, {p['split']['train_frac']:.0%} / "
          f"{p['split']['valid_frac']:.0%} / rest (validation from {p['split'].get('valid_start', '?')}, test from "
          f"{p['split'].get('test_start', '?')}); vocabularies fitted on train rows.",
          f"- Slices: cold_items = test items with <= {p['cold_item_max_train_impressions']} training impressions "
          f"({sizes['cold_items']['impressions']} impressions on {sizes['cold_items']['items']} items); new_users = "
          f"no training impressions ({sizes['new_users']['impressions']} impressions)"
          + (f"; {HELD_OUT_SLICE} = the item-cold protocol's held-out items ({sizes[HELD_OUT_SLICE]['impressions']} "
             f"impressions on {sizes[HELD_OUT_SLICE]['items']} items)" if HELD_OUT_SLICE in sizes else "") + ".",
          f"- {p['ppm_note']}; {p.get('baselines_note', '')}.",
          f"- Selection: {p['selection']}.",
          "- Data-efficiency runs: cold / new-user slices are relative to the rows each run trained on.",
          f"- Harness wall time: {report.get('seconds', float('nan')):.0f} s."]
    for title_, name in (plots or {}).items():
        L += ["", f"![{title_}]({name})"]
    return "\n".join(L) + "\n"


def _plots(report: dict, out_dir: Path) -> dict[str, Path]:
    """The report's PNGs: test AUC by model and slice per task, and (with data efficiency) Base and URM on the
    recent vs the full train window."""
    p = report["protocol"]
    models = [m for m in MODELS if m in p["models"]]
    slices = _slices(report)

    def cell(r: dict | None) -> tuple[float, float]:
        return (r["mean"], r["std"]) if r else (float("nan"), 0.0)

    panels = {f"test {task} AUC by slice": {m: [cell(lookup(report, m, "auc", task, s)) for s in slices]
                                            for m in models} for task in TASKS}
    paths = {"auc_by_model_and_slice": grouped_bars_png(panels, slices, out_dir / "auc_by_model_slice.png",
                                                        "AUC (mean ± std over seeds)")}
    if p["data_efficiency"]:
        frac = int(round(p["recent_fraction"] * 100))
        labels_, means, stds = [], [], []
        for t in TASKS:
            for m in ("Base", "URM"):
                for w, wl in ((RECENT, f"{frac}%"), (FULL, "100%")):
                    mu, sd = cell(lookup(report, m, "auc", t, window=w))
                    labels_.append(f"{m}\n@{wl}\n{t}")
                    means.append(mu)
                    stds.append(sd)
        base_full = lookup(report, "Base", "auc", "click")
        paths["data_efficiency"] = bars_png(
            labels_, means, stds, out_dir / "data_efficiency.png",
            "data efficiency: Base and URM on the recent window vs the full window", "test AUC (all)",
            colors=["tab:blue", "tab:cyan", "tab:red", "tab:pink"] * 2,
            reference=(base_full["mean"], "Base@100% click") if base_full else None)
    return paths


def write_report(report: dict, out_dir: Path, title: str | None = None) -> dict[str, Path]:
    """Write ``report.json``, the PNG plots and ``report.md`` (linking the plots; headed ``title``) into ``out_dir``.

    Returns:
        ``{"json": ..., "markdown": ..., "auc_by_model_and_slice": ..., "data_efficiency": ...}`` paths.
    """
    from ppm_platform.io import write_json_atomic

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = _plots(report, out_dir)
    md = render_markdown(report, {k.replace("_", " "): p.name for k, p in plots.items()}, title)
    write_json_atomic(json_safe(report), out_dir / "report.json")
    (out_dir / "report.md").write_text(md)
    return {"json": out_dir / "report.json", "markdown": out_dir / "report.md", **plots}


def json_safe(o):
    """NaN -> None so report.json is strict JSON."""
    if isinstance(o, float):
        return None if math.isnan(o) else o
    if isinstance(o, dict):
        return {k: json_safe(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [json_safe(v) for v in o]
    return o


def load_report(path: Path) -> dict:
    """Read a ``report.json`` back (None -> NaN is not restored; numbers stay as written)."""
    return json.loads(Path(path).read_text())


def render_summary(summary: dict, sizes: list[dict]) -> str:
    """Markdown of :func:`combine_draws` (``sizes``: each draw's held-out slice size)."""
    L = ["# Item-cold protocol", "",
         f"{summary['draws']} draws (held-out-item seeds {summary['draw_seeds']}); held-out test impressions per draw: "
         + ", ".join(str(s["impressions"]) for s in sizes) + ". Test AUC per draw = mean over the draw's model "
         "seeds; ± = std over draws.", "",
         "| Model | " + " | ".join(f"{t} AUC, held-out items" for t in TASKS) + " | "
         + " | ".join(f"{t} AUC, all" for t in TASKS) + " | per-draw click AUC, held-out |",
         "|---|---|---|---|---|---|"]

    def f(c: dict) -> str:
        return "–" if math.isnan(c["mean"]) else f"{c['mean']:.4f} ± {c['std_over_draws']:.4f}"

    for m in summary["models"]:
        a = summary["auc"][m]
        per = ", ".join("–" if math.isnan(x) else f"{x:.4f}" for x in a["click"][HELD_OUT_SLICE]["per_draw"])
        L.append(f"| {m} | " + " | ".join(f(a[t][HELD_OUT_SLICE]) for t in TASKS) + " | "
                 + " | ".join(f(a[t]["all"]) for t in TASKS) + f" | {per} |")
    lifts = summary.get("lifts") or ({"URM - Base": summary["lift_urm_base"]} if summary["lift_urm_base"] else {})
    for name, lift in lifts.items():
        lc, lo = (lift[t] for t in TASKS)
        L.append(f"| **{name.replace(' - ', ' − ')}** | {lc['mean']:+.4f} ± {lc['std_over_draws']:.4f} | "
                 f"{lo['mean']:+.4f} ± {lo['std_over_draws']:.4f} | | | "
                 + ", ".join(f"{x:+.4f} (seed std {s:.4f})" for x, s in zip(lc["per_draw"], lc["per_draw_seed_std"]))
                 + " |")
    for key in ("target", "target_sid"):
        if t := summary.get(key):
            L += ["", f"Target: {t['target']}: measured {t['measured']:+.4f}, required {t['required']:+.4f}, gap "
                      f"{t['gap']:+.4f}: **{'met' if t['met'] else 'missed'}**."]
    return "\n".join(L) + "\n"
