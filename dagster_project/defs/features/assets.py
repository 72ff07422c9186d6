"""Features group: Spark jobs over the catalog and the interaction log."""

import dagster as dg

from dagster_project.metadata import metadata_from, num, rounded
from dagster_project.policies import FULL_REBUILD_FRESHNESS, SPARK_POOL
from dagster_project.resources import PPMSettingsResource, SparkResource
from ppm_platform import pipeline


@dg.asset(group_name="features", deps=["items", "text_encoder", "image_encoder"], owners=["team:ppm-platform"],
          kinds={"spark", "pytorch", "parquet"}, pool=SPARK_POOL, freshness_policy=FULL_REBUILD_FRESHNESS)
def item_multimodal(ppm: PPMSettingsResource, spark: SparkResource) -> dg.MaterializeResult:
    """Multi-modal (ME) feature per item: MiniLM title embedding (384-d, mean pooled; query-matching
    fine-tuned by `text_encoder`) + EfficientNet-Lite0 poster embedding (1280-d; entity-prediction
    fine-tuned by `image_encoder`) + has-image mask, computed with the frozen encoders in Spark
    `mapInPandas`. Rows record the encoder versions that produced them."""
    settings = ppm.get()
    return dg.MaterializeResult(metadata=metadata_from(pipeline.item_multimodal(settings, spark.session(settings))))


@dg.asset(group_name="features", deps=["interactions"], owners=["team:ppm-platform"], kinds={"spark", "parquet"},
          pool=SPARK_POOL, freshness_policy=FULL_REBUILD_FRESHNESS)
def behavior_sequences(ppm: PPMSettingsResource, spark: SparkResource) -> dg.MaterializeResult:
    """Per (user, click time t): the last L clicked items with timestamp <= t, stamped t + 1 µs so a
    point-in-time join at t never sees the event that produced the row (leakage rule, DESIGN.md §4)."""
    settings = ppm.get()
    return dg.MaterializeResult(metadata=metadata_from(pipeline.behavior_sequences(settings, spark.session(settings))))


@dg.multi_asset(
    specs=[dg.AssetSpec("item_stats", group_name="features", deps=["interactions"], owners=["team:ppm-platform"],
                        kinds={"spark", "parquet"}, freshness_policy=FULL_REBUILD_FRESHNESS,
                        description="Per item, as of each change: impressions, clicks, orders and smoothed click / "
                                    "order rates strictly before the row's time, all-time and per recent window "
                                    "(`settings.counters.windows_days`)."),
           dg.AssetSpec("user_stats", group_name="features", deps=["interactions"], owners=["team:ppm-platform"],
                        kinds={"spark", "parquet"}, freshness_policy=FULL_REBUILD_FRESHNESS,
                        description="The same counters per user (new users' counters grow from their own events "
                                    "before each impression, as serving sees them).")],
    pool=SPARK_POOL,
)
def counters(ppm: PPMSettingsResource, spark: SparkResource):
    """Point-in-time counters of every item and user in one Spark job over the interactions: an event enters
    at t + 1 µs and leaves a window W at t + W + 1 µs, so a join at t never sees the event at t (leakage rule,
    DESIGN.md §4) and windowed counts decay without a later event."""
    settings = ppm.get()
    res = pipeline.counters(settings, spark.session(settings))
    common = {"priors": dg.MetadataValue.json(rounded(res["priors"])),
              "windows_days": dg.MetadataValue.json(res["windows_days"]), "seconds": num(res["seconds"])}
    for table in ("item_stats", "user_stats"):
        yield dg.MaterializeResult(asset_key=table, metadata={**metadata_from(res[table]), **common})
