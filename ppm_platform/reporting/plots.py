"""Every PNG plot of the project, for the Dagster UI and the docs (matplotlib with the non-interactive ``Agg``
backend; no display needed, safe in Spark/Dagster worker processes), and the one PNG -> markdown embedder.

This module sits at the bottom of the layers: it takes plain numbers and lists, never a model, a report
object or another ``ppm_platform`` module, so any layer can plot.

The per-stage plots take the JSON-able results of :mod:`ppm_platform.pipeline`: ``epochs`` (a list of
per-epoch dicts with ``epoch``, ``train_loss`` and ``valid_click_auc`` / ``valid_order_auc``) and ``slices``
(test metrics by slice and task, as written by :func:`ppm_platform.training.metrics.evaluate_slices`). The
evaluation report's plots (:func:`grouped_bars_png`, :func:`bars_png`) take the numbers it extracted.

:func:`markdown_image` embeds a PNG as a base64 data URI in markdown, which the Dagster UI renders inline
for a ``MetadataValue.md`` entry (Dagster docs, "Asset metadata": markdown metadata).
"""

from __future__ import annotations

import base64
import math
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")  # before pyplot: no display, no GUI toolkit
import matplotlib.pyplot as plt  # noqa: E402

#: Slice order in AUC-by-slice plots (DESIGN.md §5).
SLICE_ORDER = ("all", "warm_items", "cold_items", "new_users")


def _finite(v) -> float:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return math.nan
    return v if math.isfinite(v) else math.nan


def training_curves_png(epochs: list[dict], out_path: Path, title: str, kept_epoch: int | None = None) -> Path:
    """Plot train loss (left axis) and validation AUC per task (right axis) against the epoch number.

    Args:
        epochs: ``[{"epoch": 1, "train_loss": 0.64, "valid_click_auc": 0.69, ("valid_order_auc": ...)}, ...]``.
        out_path: the PNG to write (parent folders are created).
        title: plot title, e.g. ``"URM training"``.
        kept_epoch: the epoch whose weights the trainer kept, marked by a vertical line (None: no mark).

    Returns:
        ``out_path``.

    Raises:
        ValueError: ``epochs`` is empty or has no ``train_loss``.
    """
    if not epochs or any("train_loss" not in e for e in epochs):
        raise ValueError(f"{title}: no per-epoch train_loss to plot")
    x = [int(e.get("epoch", i + 1)) for i, e in enumerate(epochs)]
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    ax.plot(x, [_finite(e["train_loss"]) for e in epochs], "o-", color="tab:gray", label="train loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("train loss (BCE)")
    ax.set_xticks(x)
    ax2 = ax.twinx()
    for key, color in (("valid_click_auc", "tab:blue"), ("valid_order_auc", "tab:orange")):
        if any(key in e for e in epochs):
            ax2.plot(x, [_finite(e.get(key)) for e in epochs], "s--", color=color,
                     label=key.replace("_", " ").replace(" auc", " AUC"))
    ax2.set_ylabel("validation AUC")
    if kept_epoch is not None:
        ax.axvline(kept_epoch, color="tab:green", linestyle=":", linewidth=1.5, label=f"kept: epoch {kept_epoch}")
    handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    labels = ax.get_legend_handles_labels()[1] + ax2.get_legend_handles_labels()[1]
    ax.legend(handles, labels, loc="best", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    return _save(fig, out_path)


def auc_by_slice_png(slices: dict, out_path: Path, title: str) -> Path:
    """Grouped bars of test AUC per slice (``all``, ``warm_items``, ``cold_items``, ``new_users``) and task
    (click, order), each bar labelled with its AUC and the slice's impression count; a dashed line at 0.5
    (chance). Slices without metrics (no impressions, or a single class) are drawn empty.

    Args:
        slices: ``{slice: {"click": {"auc": ...}, "order": {"auc": ...}, "impressions": n}}``.
        out_path: the PNG to write.
        title: plot title.

    Returns:
        ``out_path``.

    Raises:
        ValueError: ``slices`` is empty.
    """
    if not slices:
        raise ValueError(f"{title}: no slices to plot")
    names = [s for s in SLICE_ORDER if s in slices] + sorted(s for s in slices if s not in SLICE_ORDER)
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    width = 0.38
    for k, (task, color) in enumerate((("click", "tab:blue"), ("order", "tab:orange"))):
        vals = [_finite((slices[s].get(task) or {}).get("auc")) for s in names]
        xs = [i + (k - 0.5) * width for i in range(len(names))]
        bars = ax.bar(xs, [0 if math.isnan(v) else v for v in vals], width, color=color, label=f"{task} AUC")
        for b, v in zip(bars, vals):
            x = b.get_x() + b.get_width() / 2
            if math.isnan(v):  # no impressions in the slice, or only one class: AUC undefined
                ax.annotate("n/a", (x, 0.01), ha="center", va="bottom", fontsize=7, color="gray")
            else:
                ax.annotate(f"{v:.3f}", (x, v), ha="center", va="bottom", fontsize=7)
    ax.axhline(0.5, color="k", linestyle=":", linewidth=1, label="chance")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels([f"{s}\n({slices[s].get('impressions', 0)} imp.)" for s in names], fontsize=8)
    ax.set_ylim(0.0, 1.0)
    ax.set_ylabel("test AUC")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return _save(fig, out_path)


def grouped_bars_png(panels: dict[str, dict[str, list[tuple[float, float]]]], groups: list[str], out_path: Path,
                     ylabel: str) -> Path:
    """One panel per key of ``panels`` (side by side, shared y axis), each with one bar per series and group,
    error bars of one std, a dotted line at 0.5 (chance) and the legend in the last panel.

    Args:
        panels: ``{panel title: {series label: [(mean, std) per group]}}``, e.g. test AUC per model and slice
            for each task.
        groups: the group labels (x ticks), in the order of the ``(mean, std)`` lists.
        out_path: the PNG to write.
        ylabel: label of the y axis (first panel).

    Returns:
        ``out_path``.

    Raises:
        ValueError: ``panels`` is empty.
    """
    if not panels:
        raise ValueError("grouped_bars_png: no panels to plot")
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), dpi=100, sharey=True, squeeze=False)
    axes = axes[0]
    for ax, (title, series) in zip(axes, panels.items()):
        width = 0.8 / max(len(series), 1)
        for j, (label, vals) in enumerate(series.items()):
            ax.bar(np.arange(len(groups)) + j * width, [v[0] for v in vals], width, yerr=[v[1] for v in vals],
                   capsize=2, label=label)
        ax.set_xticks(np.arange(len(groups)) + width * (len(series) - 1) / 2, groups)
        ax.set_title(title)
        ax.set_ylim(0.45, None)
        ax.axhline(0.5, color="gray", lw=0.8, ls=":")
    axes[0].set_ylabel(ylabel)
    axes[-1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return _save(fig, out_path)


def bars_png(labels: list[str], means: list[float], stds: list[float], out_path: Path, title: str, ylabel: str,
             colors: list[str] | None = None, reference: tuple[float, str] | None = None) -> Path:
    """One bar per label with an error bar of one std; the y axis starts 0.03 below the lowest bar (not below
    0.45), so differences of a few AUC points stay visible.

    Args:
        labels / means / stds: one entry per bar (NaN mean: an empty bar).
        out_path: the PNG to write.
        colors: bar colours (matplotlib names), cycled by matplotlib when None.
        reference: ``(y, label)`` of a dashed horizontal reference line, e.g. a baseline's AUC.

    Returns:
        ``out_path``.
    """
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.bar(range(len(means)), means, yerr=stds, capsize=3, color=colors)
    ax.set_xticks(range(len(means)), labels, fontsize=7)
    if reference is not None:
        ax.axhline(reference[0], color="tab:blue", lw=0.8, ls="--", label=reference[1])
    ax.set_ylim(max(0.45, np.nanmin(means) - 0.03) if means else 0.45, None)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if reference is not None:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, out_path)


def curve_png(values: list[float], out_path: Path, title: str, xlabel: str, ylabel: str,
              extra: dict[str, list[float]] | None = None) -> Path:
    """A small line plot of one training curve (e.g. an encoder fine-tuning's train loss per step or epoch),
    x = 1..len(values).

    Args:
        values: the curve's y values, labelled ``ylabel`` in the legend.
        out_path: the PNG to write (parent folders are created).
        title / xlabel / ylabel: axis texts.
        extra: more curves on the same axes, legend label -> y values (e.g. ``{"valid mAP": [...]}``).

    Returns:
        ``out_path``.
    """
    fig, ax = plt.subplots(figsize=(5, 3), dpi=90)
    ax.plot(np.arange(1, len(values) + 1), values, label=ylabel)
    for name, ys in (extra or {}).items():
        ax.plot(np.arange(1, len(ys) + 1), ys, label=name)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, out_path)


def _save(fig, out_path: Path) -> Path:
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(out_path, format="png")
    finally:
        plt.close(fig)
    return out_path


def markdown_image(png_path: Path, alt: str) -> str:
    """Markdown with the PNG embedded as a ``data:image/png;base64`` URI, which the Dagster UI's markdown
    metadata renders (behind its "[Show Markdown]" link: the UI folds any markdown entry of 1,000+ characters).
    The file itself is named by a separate entry, relative to the artifacts folder, not here.

    Raises:
        FileNotFoundError: ``png_path`` does not exist.
    """
    data = base64.b64encode(Path(png_path).read_bytes()).decode("ascii")
    return f"![{alt}](data:image/png;base64,{data})"


def model_plots(result: dict, out_dir: Path, name: str, label: str, kept_epoch: int | None = None) -> dict[str, Path]:
    """The PNGs of one model stage result: ``<name>_training_curves.png`` (when it has ``epochs``; the kept
    epoch marked when given) and ``<name>_auc_by_slice.png`` (when it has ``slices``), written to ``out_dir``.

    Returns:
        ``{"training_curves": path, "auc_by_slice": path}`` (only the plots that could be made).
    """
    out: dict[str, Path] = {}
    if result.get("epochs"):
        out["training_curves"] = training_curves_png(result["epochs"], Path(out_dir) / f"{name}_training_curves.png",
                                                     f"{label}: train loss and validation AUC per epoch", kept_epoch)
    if result.get("slices") and result["slices"].get("all"):
        # the CTR stages store test slices under "slices"
        out["auc_by_slice"] = auc_by_slice_png(result["slices"], Path(out_dir) / f"{name}_auc_by_slice.png",
                                               f"{label}: test AUC by slice")
    return out
