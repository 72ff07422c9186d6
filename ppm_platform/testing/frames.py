"""Point-in-time counters joined onto synthetic training sets, in pandas (tests build training sets without
Feast; the real path is the ``item_stats`` / ``user_stats`` feature views joined by Feast)."""

from __future__ import annotations

import pandas as pd

from ppm_platform.data.schemas import COUNTER_ENTITIES
from ppm_platform.features.counters import CounterPriors, counters_reference

#: the priors the synthetic frames' counter rates are smoothed with
TEST_PRIORS = CounterPriors(0.5, 0.2, 10.0)


def with_counters(rows: pd.DataFrame, windows_days: tuple[int, ...] = (7, 30),
                  priors: CounterPriors = TEST_PRIORS) -> pd.DataFrame:
    """``rows`` (impressions: ``user_id``, ``item_id``, ``event_timestamp``, ``click``, ``order``, any other
    columns) plus the ``user_stats`` and ``item_stats`` columns joined as of each row's time (the latest counter
    row with ``feature_ts <= event_timestamp``, Feast's rule; NULL before an entity's first change), computed by
    :func:`~ppm_platform.features.counters.counters_reference` from the same rows. Row order is kept."""
    out = rows.reset_index(drop=True).assign(_pos=lambda d: range(len(d)))
    out["event_timestamp"] = pd.to_datetime(out["event_timestamp"], utc=True).astype("datetime64[us, UTC]")
    for entity, (key, _) in COUNTER_ENTITIES.items():
        stats = counters_reference(rows, entity, windows_days, priors).rename(columns={"event_timestamp": "_ts"})
        stats["_ts"] = stats["_ts"].astype("datetime64[us, UTC]")
        out = pd.merge_asof(out.sort_values("event_timestamp", kind="stable"), stats.sort_values("_ts", kind="stable"),
                            left_on="event_timestamp", right_on="_ts", by=key, direction="backward").drop(columns="_ts")
    return out.sort_values("_pos").drop(columns="_pos").reset_index(drop=True)
