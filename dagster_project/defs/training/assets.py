"""Training group: Base (IDRec) and URM, trained end-to-end on the point-in-time training set."""

import dagster as dg

from dagster_project.metadata import keyed_table, model_metadata, num
from dagster_project.policies import TORCH_POOL
from dagster_project.resources import PPMSettingsResource
from ppm_platform import pipeline

_SKIP = ("slices",)


@dg.asset(group_name="training", deps=["training_set"], owners=["team:ppm-platform"], kinds={"pytorch"}, pool=TORCH_POOL)
def base_model(context: dg.AssetExecutionContext, ppm: PPMSettingsResource) -> dg.MaterializeResult:
    """IDRec baseline (ID embeddings with trained OOV rows, DIN attention over the ID sequence, the user and
    item counters, DCN-v2 cross, MMoE towers); its metadata also carries the Popularity row on the same split."""
    settings = ppm.get()
    res = pipeline.base_model(settings, progress=context.log.info)
    pop = res["popularity"]
    return dg.MaterializeResult(metadata={
        **model_metadata(res, settings, "base_model", "Base (IDRec)", skip=(*_SKIP, "popularity")),
        "test_slices": keyed_table(res["slices"], "slice"),
        "popularity_test_click_auc": num(pop["test_click_auc"]), "popularity_test_order_auc": num(pop["test_order_auc"])})


@dg.asset(group_name="training", deps=["training_set", "ppm_model"], owners=["team:ppm-platform"], kinds={"pytorch"},
          pool=TORCH_POOL)
def urm_model(context: dg.AssetExecutionContext, ppm: PPMSettingsResource) -> dg.MaterializeResult:
    """URM: IDRec + PPM's light top (readout over the cached PPM features) + MMoE, click and order towers."""
    settings = ppm.get()
    res = pipeline.urm_model(settings, progress=context.log.info)
    return dg.MaterializeResult(metadata={**model_metadata(res, settings, "urm_model", "URM", skip=_SKIP),
                                          "test_slices": keyed_table(res["slices"], "slice")})
