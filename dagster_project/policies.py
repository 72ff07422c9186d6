"""Run-time policies of the assets: the concurrency pools of the heavy steps and the freshness expected of
the feature and cache assets. The pools' slot limits are instance settings (``dagster_project.instance``
writes them into the ``dagster.yaml`` of ``make ui``)."""

from datetime import timedelta

import dagster as dg

#: torch training steps (encoder fine-tuning, PPM pre-training, Base / URM training, the Table-2 evaluation):
#: each uses every core, so two at once (a UI backfill beside a full run) only slow each other down
TORCH_POOL = "torch_training"
#: Spark jobs (one local[*] SparkSession each, with its driver heap): two at once double the memory
SPARK_POOL = "spark"
POOLS = (TORCH_POOL, SPARK_POOL)

#: the full feature and cache tables are rebuilt by a full run (``ppm run``; a new catalog, a retrained PPM);
#: the daily path keeps their time-varying rows current, and its freshness is checked per partition. A full
#: rebuild older than a week fails the policy, older than 3 days warns.
FULL_REBUILD_FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=timedelta(days=7),
                                                        warn_window=timedelta(days=3))
