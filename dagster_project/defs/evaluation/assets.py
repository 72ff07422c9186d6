"""Evaluation group: the baselines (Popularity, GBDT) and the paper's Table 2 (Base, QM&EP, PPM, Base+QM&EP,
URM) on the fixed split, and the item-cold protocol, with the reports and plots attached as metadata so they
render in the Dagster UI."""

import math

import dagster as dg

from dagster_project.metadata import num, relative, rounded
from dagster_project.policies import SPARK_POOL, TORCH_POOL
from dagster_project.resources import PPMSettingsResource, SparkResource
from ppm_platform import pipeline


def _key(model: str) -> str:
    return model.replace("&", "").replace("+", "_")


@dg.asset(group_name="evaluation", deps=["training_set", "ppm_model", "item_multimodal"],
          owners=["team:ppm-platform"], kinds={"pytorch", "scikitlearn", "matplotlib"}, pool=TORCH_POOL)
def evaluation_report(context: dg.AssetExecutionContext, ppm: PPMSettingsResource) -> dg.MaterializeResult:
    """Popularity and GBDT, then Table 2 of the PPM paper on MovieLens-100K: every row trained (N seeds) and
    scored on the time split (DESIGN.md §5); AUC / GAUC / logloss per task on all / cold_items / warm_items /
    new_users, data efficiency (recent 50 % vs 100 % of the train window), targets met / missed.
    `report.json`, `report.md` and PNGs under `artifacts/reports/`."""
    from ppm_platform.reporting.plots import markdown_image

    settings = ppm.get()
    root = settings.artifacts_dir
    res = pipeline.evaluation_report(settings, progress=context.log.info)
    paths = res["paths"]
    with open(paths["markdown"]) as f:
        md_text = f.read()
    # the markdown links the PNGs by file name; in the UI they are attached below as embedded images instead
    md = {
        "report": dg.MetadataValue.md(md_text),
        "files": dg.MetadataValue.text(", ".join(relative(paths[k], root) for k in ("json", "markdown"))),
        "seconds": num(res["seconds"]),
        "n_seeds": dg.MetadataValue.text(str(res["n_seeds"])),  # a setting: text, not a plot
        "targets_met": num(res["targets_met"]),
        "targets": dg.MetadataValue.json(rounded(res["targets"])),
        "ppm_version": dg.MetadataValue.text(str(res["ppm_version"])),
    }
    for k, v in res.items():
        if k.startswith("test_") and v is not None and math.isfinite(v):
            md[_key(k)] = num(float(v))
    for name in ("auc_by_model_and_slice", "data_efficiency"):
        if name in paths:
            md[f"plot_{name}"] = dg.MetadataValue.md(markdown_image(paths[name], name.replace("_", " ")))
            md[f"plot_{name}_file"] = dg.MetadataValue.text(relative(paths[name], root))
    return dg.MaterializeResult(metadata=md)


@dg.asset(group_name="evaluation", deps=["interactions", "items", "users", "item_multimodal"],
          owners=["team:ppm-platform"], kinds={"spark", "pytorch", "feast", "scikitlearn"}, pool=SPARK_POOL)
def item_cold_report(context: dg.AssetExecutionContext, ppm: PPMSettingsResource,
                     spark: SparkResource) -> dg.MaterializeResult:
    """The item-cold protocol: per seeded draw, 20 % of the catalog loses its train-window events (launched at
    the validation start) and the same pipeline (sequences, counters, PPM pre-training, caches, Feast
    point-in-time training set) runs on that data with the full data's cut points; Popularity, GBDT, Base and
    URM are scored on the held-out items' test impressions. Summary over draws in
    `artifacts/reports/item_cold/`."""
    settings = ppm.get()
    res = pipeline.item_cold_report(settings, spark.session(settings), progress=context.log.info)
    with open(res["paths"]["markdown"]) as f:
        md_text = f.read()
    md = {"summary": dg.MetadataValue.md(md_text),
          "summary_json": dg.MetadataValue.text(relative(res["paths"]["json"], settings.artifacts_dir)),
          "draws": dg.MetadataValue.text(str(res["draws"])),  # a setting: text, not a plot
          "seconds": num(res["seconds"]),
          "held_out_test_impressions": dg.MetadataValue.json([s["impressions"] for s in res["held_out_slice_sizes"]])}
    if "target" in res:
        md["target"] = dg.MetadataValue.json(rounded(res["target"]))
        md["urm_minus_base_click_auc_held_out"] = num(float(res["lift_urm_base"]["click"]["mean"]))
    return dg.MaterializeResult(metadata=md)
