"""Features group: Spark jobs over the catalog and the interaction log."""

import dagster as dg

from dagster_project.assets._meta import metadata_from
from dagster_project.resources import PPMSettingsResource, SparkResource
from ppm_platform import pipeline


@dg.asset(group_name="features", deps=["items", "text_encoder", "image_encoder"], owners=["team:ppm-platform"],
          kinds={"spark", "pytorch", "parquet"})
def item_multimodal(ppm: PPMSettingsResource, spark: SparkResource) -> dg.MaterializeResult:
    """Multi-modal (ME) feature per item: MiniLM title embedding (384-d, mean pooled; query-matching
    fine-tuned by `text_encoder`) + EfficientNet-Lite0 poster embedding (1280-d; entity-prediction
    fine-tuned by `image_encoder`) + has-image mask, computed with the frozen encoders in Spark
    `mapInPandas`. Rows record the encoder versions that produced them."""
    return dg.MaterializeResult(metadata=metadata_from(pipeline.item_multimodal(ppm.get(), spark.session())))


@dg.asset(group_name="features", deps=["interactions"], owners=["team:ppm-platform"], kinds={"spark", "parquet"})
def behavior_sequences(ppm: PPMSettingsResource, spark: SparkResource) -> dg.MaterializeResult:
    """Per (user, click time t): the last L clicked items with timestamp <= t, stamped t + 1 µs so a
    point-in-time join at t never sees the event that produced the row (leakage rule, DESIGN.md §4)."""
    return dg.MaterializeResult(metadata=metadata_from(pipeline.behavior_sequences(ppm.get(), spark.session())))
