"""Synthetic images with known entity labels, for fine-tuning tests (no real catalog needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

#: the entity (category) names of :func:`color_entity_items`, one per RGB channel
COLOR_NAMES = ("Red", "Green", "Blue")


def color_entity_items(root: Path, n: int = 72, size: int = 48, seed: int = 0) -> pd.DataFrame:
    """``n`` PNG images (``size`` x ``size`` px, written under ``root``): uniform noise in [0, 60) plus a bright
    square (value 230, pixels ``size // 6`` to ``5 * size // 6``) in the channel of each of the item's labels.
    Every item has at least one label, so an image encoder fine-tuned for entity prediction has real signal.

    Returns:
        DataFrame with ``item_id`` (int, 1..n), ``image_uri`` (str path) and ``categories`` (list of
        :data:`COLOR_NAMES`), the columns of the canonical ``items`` table the image fine-tune reads.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    lo, hi = size // 6, 5 * size // 6
    rows = []
    for i in range(n):
        labels = rng.random(3) < 0.5
        if not labels.any():
            labels[i % 3] = True
        img = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
        for c in np.flatnonzero(labels):
            img[lo:hi, lo:hi, c] = 230
        p = Path(root) / f"{i}.png"
        Image.fromarray(img).save(p)
        rows.append((i + 1, str(p), [COLOR_NAMES[c] for c in np.flatnonzero(labels)]))
    return pd.DataFrame(rows, columns=["item_id", "image_uri", "categories"])
