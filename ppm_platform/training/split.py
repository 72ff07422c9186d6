"""Global time split (DESIGN.md §5): first ``train_frac`` of events by ``event_timestamp`` -> train, next
``valid_frac`` -> valid, rest -> test. Cut points are timestamps, so all events of one second land in the
same split and no test event precedes a train event."""

from __future__ import annotations

import numpy as np
import pandas as pd


def time_cutoffs(ts: pd.Series, train_frac: float = 0.8, valid_frac: float = 0.1) -> tuple[pd.Timestamp, pd.Timestamp]:
    """Return ``(valid_start, test_start)``: the timestamps at the ``train_frac`` and
    ``train_frac + valid_frac`` positions of the sorted events.

    Raises:
        ValueError: fractions outside (0, 1) or summing to >= 1, or fewer than 3 events.
    """
    if not (0 < train_frac < 1 and 0 < valid_frac < 1 and train_frac + valid_frac < 1):
        raise ValueError(f"bad split fractions train={train_frac} valid={valid_frac}")
    if len(ts) < 3:
        raise ValueError(f"need at least 3 events to split, got {len(ts)}")
    s = np.sort(ts.to_numpy())
    n = len(s)
    return pd.Timestamp(s[int(n * train_frac)]), pd.Timestamp(s[int(n * (train_frac + valid_frac))])


def assign_split(ts: pd.Series, train_frac: float = 0.8, valid_frac: float = 0.1) -> pd.Series:
    """Label each event ``train`` / ``valid`` / ``test`` by the cut points of :func:`time_cutoffs`."""
    valid_start, test_start = time_cutoffs(ts, train_frac, valid_frac)
    out = np.where(ts < valid_start, "train", np.where(ts < test_start, "valid", "test"))
    return pd.Series(out, index=ts.index, name="split")
