"""What both encoder fine-tuning stages share: the training-curve plot, the atomic replacement of the model
folder, and the result of a stage skipped for lack of data."""

from __future__ import annotations

import logging
import shutil
import uuid
from pathlib import Path

import numpy as np

log = logging.getLogger("ppm_platform.encoders")


def plot_curve(values: list[float], path: Path, title: str, xlabel: str, ylabel: str,
               extra: dict[str, list[float]] | None = None) -> Path:
    """Write a small line plot (PNG, matplotlib Agg) of a training curve; returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3), dpi=90)
    ax.plot(np.arange(1, len(values) + 1), values, label=ylabel)
    for name, ys in (extra or {}).items():
        ax.plot(np.arange(1, len(ys) + 1), ys, label=name)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def skipped(out: Path, reason: str, split: dict) -> dict:
    """Result of a fine-tuning stage that had too little data: removes a stale model folder ``out``."""
    log.warning("encoder fine-tuning skipped (%s): %s; item_multimodal uses the pre-trained encoder", out.name, reason)
    if out.exists():
        shutil.rmtree(out)
    return {"skipped": reason, "split": split}


def replace_dir(tmp: Path, out: Path) -> None:
    """Move the finished folder ``tmp`` to ``out``: the old ``out`` (if any) is renamed away first, then
    ``tmp`` is renamed into place (same file system), then the old one is deleted."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
