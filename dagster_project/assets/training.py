"""Training group: Base (IDRec) and URM, trained end-to-end on the point-in-time training set."""

import dagster as dg

from dagster_project.assets._meta import metadata_from, plot_metadata
from dagster_project.resources import PPMSettingsResource
from ppm_platform import pipeline

_SKIP = ("slices",)


@dg.asset(group_name="training", deps=["training_set"], owners=["team:ppm-platform"], kinds={"pytorch"})
def base_model(context: dg.AssetExecutionContext, ppm: PPMSettingsResource) -> dg.MaterializeResult:
    """IDRec baseline (ID embeddings, DIN attention over the ID sequence, DCN-v2 cross, MMoE towers)."""
    settings = ppm.get()
    res = pipeline.base_model(settings, progress=context.log.info)
    return dg.MaterializeResult(metadata={**metadata_from(res, skip=_SKIP), "test_slices": dg.MetadataValue.json(res["slices"]),
                                          **plot_metadata(res, settings.reports_dir / "plots", "base_model", "Base (IDRec)")})


@dg.asset(group_name="training", deps=["training_set", "ppm_model"], owners=["team:ppm-platform"], kinds={"pytorch"})
def urm_model(context: dg.AssetExecutionContext, ppm: PPMSettingsResource) -> dg.MaterializeResult:
    """URM: IDRec + PPM's light top (readout over the cached PPM features) + MMoE, click and order towers."""
    settings = ppm.get()
    res = pipeline.urm_model(settings, progress=context.log.info)
    return dg.MaterializeResult(metadata={**metadata_from(res, skip=_SKIP), "test_slices": dg.MetadataValue.json(res["slices"]),
                                          **plot_metadata(res, settings.reports_dir / "plots", "urm_model", "URM")})
