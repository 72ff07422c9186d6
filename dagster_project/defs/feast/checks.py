"""Checks on the feast group: the point-in-time training set's labels."""

import dagster as dg
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dagster_project.metadata import num
from dagster_project.resources import PPMSettingsResource
from ppm_platform.data import catalog

#: click rate of the training set must lie in this closed interval (a CTR data set, not all 0 or all 1)
CLICK_RATE_BOUNDS = (0.05, 0.95)


@dg.asset_check(asset="training_set", description=f"click rate within {list(CLICK_RATE_BOUNDS)}, order rate <= "
                "click rate, one row per interaction")
def training_set_label_rate(ppm: PPMSettingsResource) -> dg.AssetCheckResult:
    settings = ppm.get()
    t = pq.read_table(catalog.path(settings, "training_set"), columns=["click", "order"])
    n_inter = pq.read_metadata(catalog.path(settings, "interactions")).num_rows
    click = float(pc.mean(t.column("click")).as_py() or 0.0)
    order = float(pc.mean(t.column("order")).as_py() or 0.0)
    lo, hi = CLICK_RATE_BOUNDS
    return dg.AssetCheckResult(passed=lo <= click <= hi and order <= click and t.num_rows == n_inter,
                               metadata={"rows": t.num_rows, "interactions": n_inter, "click_rate": num(click),
                                         "order_rate": num(order)})
