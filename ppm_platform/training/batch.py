"""Training batches: the label matrix of a training-set frame. Feature rows become model inputs through
:class:`ppm_platform.features.encoding.FeatureVectorizer` (shared with serving)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def labels(df: pd.DataFrame) -> np.ndarray:
    """Click and order labels as float32 [B, 2]."""
    return df[["click", "order"]].to_numpy(dtype=np.float32)
