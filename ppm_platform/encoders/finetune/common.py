"""What both encoder fine-tuning stages share: the atomic replacement of the model folder and the result of a
stage skipped for lack of data (their training-curve plot is :func:`ppm_platform.reporting.plots.curve_png`)."""

from __future__ import annotations

import logging
import shutil
import uuid
from pathlib import Path

log = logging.getLogger("ppm_platform.encoders")


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
