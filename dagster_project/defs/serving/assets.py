"""Serving group: ONNX export with a torch parity check, and the online ranking smoke test."""

import dagster as dg

from dagster_project.metadata import metadata_from
from dagster_project.resources import PPMSettingsResource
from ppm_platform import pipeline


@dg.asset(group_name="serving", deps=["urm_model"], owners=["team:ppm-platform"], kinds={"onnx"})
def urm_onnx(ppm: PPMSettingsResource) -> dg.MaterializeResult:
    """The published URM's ONNX graphs, exported into its version by urm_model before publication (a model is
    published complete); max |torch - onnxruntime| on real test rows must be <= 1e-5. Exports into a new
    version only when the published one lacks them."""
    return dg.MaterializeResult(metadata=metadata_from(pipeline.export_onnx(ppm.get(), "urm")))


@dg.asset(group_name="serving", deps=["base_model"], owners=["team:ppm-platform"], kinds={"onnx"})
def base_onnx(ppm: PPMSettingsResource) -> dg.MaterializeResult:
    """Base (IDRec)'s ONNX graphs (exported by base_model, as urm_onnx), same parity check: the latency
    baseline for serving."""
    return dg.MaterializeResult(metadata=metadata_from(pipeline.export_onnx(ppm.get(), "base")))


@dg.asset(group_name="serving", deps=["urm_onnx", "online_store"], owners=["team:ppm-platform"], kinds={"onnxruntime"})
def ranking_demo(ppm: PPMSettingsResource) -> dg.MaterializeResult:
    """Ranks 100 candidates for a real user from the Feast online store with onnxruntime."""
    res = pipeline.ranking_demo(ppm.get())
    md = metadata_from(res, skip=("top10",))
    md["top10"] = dg.MetadataValue.md(
        "| rank | item | title | click | order |\n|---|---|---|---|---|\n" + "\n".join(
            f"| {i + 1} | {r['item_id']} | {r['title']} | {r['click']:.4f} | {r['order']:.4f} |"
            for i, r in enumerate(res["top10"])))
    return dg.MaterializeResult(metadata=md)
