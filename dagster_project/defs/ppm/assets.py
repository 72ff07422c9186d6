"""PPM group: ID-free pre-training and the frozen caches (DESIGN.md §4)."""

import dagster as dg

from dagster_project.metadata import metadata_from, model_metadata
from dagster_project.policies import FULL_REBUILD_FRESHNESS, SPARK_POOL, TORCH_POOL
from dagster_project.resources import PPMSettingsResource, SparkResource
from ppm_platform import pipeline


@dg.asset(group_name="ppm", deps=["item_multimodal", "behavior_sequences", "interactions"],
          owners=["team:ppm-platform"], kinds={"pytorch"}, pool=TORCH_POOL)
def ppm_model(context: dg.AssetExecutionContext, ppm: PPMSettingsResource) -> dg.MaterializeResult:
    """PPM pre-trained on click over the train window: item tower + bidirectional Transformer sequence
    encoder (position + time-interval encodings) + target-aware readout."""
    settings = ppm.get()
    res = pipeline.ppm_model(settings, progress=context.log.info)
    return dg.MaterializeResult(metadata=model_metadata(res, settings, "ppm_model", "PPM",
                                                        skip=("config",)))


@dg.asset(group_name="ppm", deps=["ppm_model", "item_multimodal"], owners=["team:ppm-platform"], kinds={"spark", "pytorch"},
          pool=SPARK_POOL, freshness_policy=FULL_REBUILD_FRESHNESS)
def ppm_item_cache(ppm: PPMSettingsResource, spark: SparkResource) -> dg.MaterializeResult:
    """Frozen PPM item-tower output per item, cached as a Feast feature view."""
    settings = ppm.get()
    return dg.MaterializeResult(metadata=metadata_from(pipeline.ppm_item_cache(settings, spark.session(settings))))


@dg.asset(group_name="ppm", deps=["ppm_model", "behavior_sequences", "ppm_item_cache"],
          owners=["team:ppm-platform"], kinds={"spark", "pytorch"}, pool=SPARK_POOL,
          freshness_policy=FULL_REBUILD_FRESHNESS)
def ppm_user_cache(ppm: PPMSettingsResource, spark: SparkResource) -> dg.MaterializeResult:
    """Frozen PPM sequence-encoder output (L x d, flattened) per behaviour-sequence row, cached as a
    Feast feature view with the same as-of timestamps as the sequences."""
    settings = ppm.get()
    return dg.MaterializeResult(metadata=metadata_from(pipeline.ppm_user_cache(settings, spark.session(settings))))


@dg.asset(group_name="ppm", deps=["ppm_item_cache", "item_multimodal", "interactions"], owners=["team:ppm-platform"],
          kinds={"spark", "scikitlearn"}, pool=SPARK_POOL, freshness_policy=FULL_REBUILD_FRESHNESS)
def item_semantic_id(ppm: PPMSettingsResource, spark: SparkResource) -> dg.MaterializeResult:
    """Semantic ids: residual k-means codes (semantic_ids.levels x codebook_size) of the frozen PPM item vectors
    (or the ME feature, semantic_ids.source) fitted on the train-window items, every item coded in Spark; the
    codebook is kept for new items; every row carries the sid_version of its codebook."""
    settings = ppm.get()
    return dg.MaterializeResult(metadata=metadata_from(pipeline.item_semantic_id(settings, spark.session(settings))))
