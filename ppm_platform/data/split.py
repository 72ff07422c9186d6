"""Global time split (DESIGN.md §5): first ``train_frac`` of events by ``event_timestamp`` -> train, next
``valid_frac`` -> valid, rest -> test. Cut points are timestamps, so all events of one second land in the
same split and no test event precedes a train event.

:func:`split_labels` / :func:`split_codes` are the one place the pipeline turns :class:`SplitSettings` into
labels: by the fractions, or by fixed cut points (``split.valid_start`` / ``split.test_start``, e.g. the full
data's, which the item-cold protocol keeps after removing events)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from ppm_platform.config import Settings

#: int8 code of each split in :func:`split_codes`
SPLIT_CODES = {"train": 0, "valid": 1, "test": 2}


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
    return _labels(ts, *time_cutoffs(ts, train_frac, valid_frac))


def _labels(ts: pd.Series, valid_start, test_start) -> pd.Series:
    out = np.where(ts < valid_start, "train", np.where(ts < test_start, "valid", "test"))
    return pd.Series(out, index=ts.index, name="split")


def settings_cutoffs(ts: pd.Series, settings: "Settings") -> tuple[pd.Timestamp, pd.Timestamp]:
    """``(valid_start, test_start)`` of ``settings.split``: its fixed cut points when set, else
    :func:`time_cutoffs` of ``ts`` by its fractions.

    Raises:
        ValueError: only one of the two cut points is set, they are out of order, or :func:`time_cutoffs` fails.
    """
    sp = settings.split
    if (sp.valid_start is None) != (sp.test_start is None):
        raise ValueError("split.valid_start and split.test_start must be set together")
    if sp.valid_start is not None:
        v, t = pd.Timestamp(sp.valid_start), pd.Timestamp(sp.test_start)
        v, t = (x if x.tzinfo else x.tz_localize("UTC") for x in (v, t))
        if not v < t:
            raise ValueError(f"split.valid_start {v} must be before split.test_start {t}")
        return v, t
    return time_cutoffs(ts, sp.train_frac, sp.valid_frac)


def split_labels(ts: pd.Series, settings: "Settings") -> pd.Series:
    """``train`` / ``valid`` / ``test`` per event by :func:`settings_cutoffs` (index of ``ts``)."""
    ts = pd.to_datetime(ts, utc=True)
    return _labels(ts, *settings_cutoffs(ts, settings))


def split_codes(ts: pd.Series, settings: "Settings") -> np.ndarray:
    """int8 split code per event (:data:`SPLIT_CODES`: 0 train, 1 valid, 2 test) by :func:`split_labels`."""
    s = split_labels(ts, settings).to_numpy()
    return np.select([s == "train", s == "valid"], [0, 1], 2).astype(np.int8)
