"""PPM group: ID-free pre-training and the frozen caches (DESIGN.md §4)."""

import dagster as dg

from dagster_project.assets._meta import metadata_from, plot_metadata
from dagster_project.resources import PPMSettingsResource, SparkResource
from ppm_platform import pipeline


@dg.asset(group_name="ppm", deps=["item_multimodal", "behavior_sequences", "interactions"],
          owners=["team:ppm-platform"], kinds={"pytorch"})
def ppm_model(context: dg.AssetExecutionContext, ppm: PPMSettingsResource) -> dg.MaterializeResult:
    """PPM pre-trained on click over the train window: item tower + bidirectional Transformer sequence
    encoder (position + time-interval encodings) + target-aware readout."""
    settings = ppm.get()
    res = pipeline.ppm_model(settings, progress=context.log.info)
    return dg.MaterializeResult(metadata={**metadata_from(res, skip=("config",)),
                                          **plot_metadata(res, settings.reports_dir / "plots", "ppm_model", "PPM")})


@dg.asset(group_name="ppm", deps=["ppm_model", "item_multimodal"], owners=["team:ppm-platform"], kinds={"spark", "pytorch"})
def ppm_item_cache(ppm: PPMSettingsResource, spark: SparkResource) -> dg.MaterializeResult:
    """Frozen PPM item-tower output per item, cached as a Feast feature view."""
    return dg.MaterializeResult(metadata=metadata_from(pipeline.ppm_item_cache(ppm.get(), spark.session())))


@dg.asset(group_name="ppm", deps=["ppm_model", "behavior_sequences", "ppm_item_cache"],
          owners=["team:ppm-platform"], kinds={"spark", "pytorch"})
def ppm_user_cache(ppm: PPMSettingsResource, spark: SparkResource) -> dg.MaterializeResult:
    """Frozen PPM sequence-encoder output (L x d, flattened) per behaviour-sequence row, cached as a
    Feast feature view with the same as-of timestamps as the sequences."""
    return dg.MaterializeResult(metadata=metadata_from(pipeline.ppm_user_cache(ppm.get(), spark.session())))


def cache_versions_check_result(settings, table: str) -> dg.AssetCheckResult:
    """One version per cache table, that of the current PPM (DESIGN.md §4 version rule): the result of
    :func:`ppm_platform.features.ppm_caches.cache_table_versions` on ``features/<table>.parquet``."""
    from ppm_platform.features.ppm_caches import CACHE_VERSION_COLUMNS, cache_table_versions, ppm_version_of

    ppm_dir = settings.models_dir / "ppm"
    expected = ppm_version_of(ppm_dir) if (ppm_dir / "model.json").exists() else None
    r = cache_table_versions(settings.features_dir / f"{table}.parquet", CACHE_VERSION_COLUMNS[table], expected)
    return dg.AssetCheckResult(passed=r["passed"], metadata={
        "rows": r["rows"], "null_rows": r["null_rows"], "versions": dg.MetadataValue.json(r["versions"]),
        "files_by_version": dg.MetadataValue.json(r["files_by_version"]),
        "ppm_version": dg.MetadataValue.text(str(expected)), "problems": dg.MetadataValue.json(r["problems"])})


@dg.asset_check(asset=ppm_item_cache, description="every row holds one ppm_item_version, the current PPM's")
def ppm_item_cache_one_version(ppm: PPMSettingsResource) -> dg.AssetCheckResult:
    return cache_versions_check_result(ppm.get(), "ppm_item_cache")


@dg.asset_check(asset=ppm_user_cache, description="every row (every day file) holds one ppm_user_version, the "
                "current PPM's")
def ppm_user_cache_one_version(ppm: PPMSettingsResource) -> dg.AssetCheckResult:
    return cache_versions_check_result(ppm.get(), "ppm_user_cache")
