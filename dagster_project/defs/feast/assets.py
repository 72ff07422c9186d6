"""Feast group: apply the feature repo, build the point-in-time training set, materialize online."""

import dagster as dg

from dagster_project.metadata import metadata_from
from dagster_project.resources import PPMSettingsResource
from ppm_platform import pipeline


@dg.asset(group_name="feast", deps=["item_multimodal", "behavior_sequences", "ppm_item_cache", "ppm_user_cache",
                                    "item_semantic_id", "item_stats", "user_stats", "items", "users"],
          owners=["team:ppm-platform"], kinds={"feast"})
def feast_definitions(ppm: PPMSettingsResource) -> dg.MaterializeResult:
    """`feast apply` of feature_repo/: entities user + item, 9 feature views (item_semantic_id in urm_item and
    urm_training), 4 feature services."""
    return dg.MaterializeResult(metadata=metadata_from(pipeline.feast_definitions(ppm.get())))


@dg.asset(group_name="feast", deps=["feast_definitions", "interactions"], owners=["team:ppm-platform"],
          kinds={"feast", "duckdb", "parquet"})
def training_set(ppm: PPMSettingsResource) -> dg.MaterializeResult:
    """Every impression joined point-in-time (`get_historical_features`) to the `urm_training` service."""
    return dg.MaterializeResult(metadata=metadata_from(pipeline.training_set(ppm.get())))


@dg.asset(group_name="feast", deps=["feast_definitions"], owners=["team:ppm-platform"], kinds={"feast", "sqlite"})
def online_store(ppm: PPMSettingsResource) -> dg.MaterializeResult:
    """All feature views materialized to the online store (SQLite locally, Redis in `cluster`)."""
    return dg.MaterializeResult(metadata=metadata_from(pipeline.online_store(ppm.get())))
