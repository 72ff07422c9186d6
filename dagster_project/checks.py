"""Asset checks on the key assets: row accounting, AUC above chance, ONNX parity, scores for every candidate."""

import math

import dagster as dg

from dagster_project.resources import PPMSettingsResource
from ppm_platform.pipeline import stage_result


@dg.asset_check(asset="interactions", description="rows_in == rows_out + rows_quarantined")
def interactions_row_accounting(ppm: PPMSettingsResource) -> dg.AssetCheckResult:
    r = stage_result(ppm.get(), "ingest")["interactions"]
    return dg.AssetCheckResult(passed=r["rows_in"] == r["rows_out"] + r["rows_quarantined"], metadata=r["reasons"] or {"quarantined": 0})


@dg.asset_check(asset="urm_model", description="validation click AUC of the URM is finite and > 0.5")
def urm_valid_auc_above_chance(ppm: PPMSettingsResource) -> dg.AssetCheckResult:
    epochs = stage_result(ppm.get(), "urm_model")["epochs"]
    best = max(e["valid_click_auc"] for e in epochs)
    return dg.AssetCheckResult(passed=math.isfinite(best) and best > 0.5, metadata={"best_valid_click_auc": best})


@dg.asset_check(asset="urm_onnx", description="max |torch - onnxruntime| <= 1e-5")
def urm_onnx_parity(ppm: PPMSettingsResource) -> dg.AssetCheckResult:
    r = stage_result(ppm.get(), "urm_onnx")
    return dg.AssetCheckResult(passed=r["max_abs_diff"] <= 1e-5, metadata={"max_abs_diff": r["max_abs_diff"]})


@dg.asset_check(asset="ranking_demo", description="every candidate gets finite click and order scores")
def ranking_scores_every_candidate(ppm: PPMSettingsResource) -> dg.AssetCheckResult:
    r = stage_result(ppm.get(), "rank_demo")
    return dg.AssetCheckResult(passed=r["scored"] == r["candidates"] and r["all_finite"],
                               metadata={"scored": r["scored"], "candidates": r["candidates"]})


ALL_CHECKS = [interactions_row_accounting, urm_valid_auc_above_chance, urm_onnx_parity, ranking_scores_every_candidate]
