"""Checks on the serving group: ONNX parity with torch, a score for every candidate, and train/serve parity
(online vs offline features give the same scores)."""

import dagster as dg

from dagster_project.metadata import metadata_from, num, table
from dagster_project.resources import PPMSettingsResource
from ppm_platform.pipeline import stage_result


@dg.asset_check(asset="urm_onnx", description="max |torch - onnxruntime| <= 1e-5")
def urm_onnx_parity(ppm: PPMSettingsResource) -> dg.AssetCheckResult:
    r = stage_result(ppm.get(), "urm_onnx")
    return dg.AssetCheckResult(passed=r["max_abs_diff"] <= 1e-5, metadata={"max_abs_diff": num(r["max_abs_diff"])})


@dg.asset_check(asset="ranking_demo", description="every candidate gets finite click and order scores")
def ranking_scores_every_candidate(ppm: PPMSettingsResource) -> dg.AssetCheckResult:
    r = stage_result(ppm.get(), "rank_demo")
    return dg.AssetCheckResult(passed=r["scored"] == r["candidates"] and r["all_finite"],
                               # the candidate count is a setting: text, not a one-point plot
                               metadata={"scored": dg.MetadataValue.text(f"{r['scored']} of {r['candidates']}")})


@dg.asset_check(asset="ranking_demo", description=(
    "train/serve parity: for serving.parity_pairs sampled (user, item) pairs, |score from the Feast online "
    "store - score from the offline point-in-time features as of the materialization time| <= serving.parity_atol"))
def serving_parity(ppm: PPMSettingsResource) -> dg.AssetCheckResult:
    """Online vs offline scores on sampled pairs (:func:`ppm_platform.serving.parity.check_parity`)."""
    from ppm_platform.serving.parity import check_parity

    res = check_parity(ppm.get())
    md = metadata_from(res, skip=("worst", "passed"))
    md["worst"] = table(res["worst"])
    for k in ("pairs", "atol"):  # settings, not measurements: text
        md[k] = dg.MetadataValue.text(str(res[k]))
    return dg.AssetCheckResult(passed=res["passed"], metadata=md,
                               severity=dg.AssetCheckSeverity.ERROR)
