"""Encoders group: the paper's encoder fine-tuning (DESIGN.md §1, §3), upstream of ``item_multimodal``.

``text_encoder``: query-matching (SimCSE-style InfoNCE) fine-tune of MiniLM on (query, clicked item text);
``image_encoder``: entity-prediction (multi-label genres, BCE) fine-tune of EfficientNet-Lite0's last blocks.
Both attach held-out metrics, split sizes, training time, the per-epoch curve (a table) and its plot as
metadata.
"""

import dagster as dg

from dagster_project.metadata import num, relative, table
from dagster_project.policies import TORCH_POOL
from dagster_project.resources import PPMSettingsResource
from ppm_platform import pipeline
from ppm_platform.reporting.plots import markdown_image


def _common(r: dict, root) -> dict:
    """The entries both encoders share: ONNX parity, version, where the weights are (relative to the
    artifacts folder)."""
    onnx = num(r["onnx"]["max_abs_diff"]) if r["onnx"] else dg.MetadataValue.text("not exported")
    return {"onnx_max_abs_diff": onnx, "version": dg.MetadataValue.text(r["version"]),
            "path": dg.MetadataValue.text(relative(r["path"], root))}


def _skipped(r: dict) -> dg.MaterializeResult:
    # too little data to fine-tune: item_multimodal uses the pre-trained encoder (the reason is shown)
    return dg.MaterializeResult(metadata={"skipped": dg.MetadataValue.text(r["skipped"]),
                                          "split": dg.MetadataValue.json(r["split"])})


@dg.asset(group_name="encoders", deps=["queries", "items"], owners=["team:ppm-platform"], kinds={"pytorch", "onnx"},
          pool=TORCH_POOL)
def text_encoder(context: dg.AssetExecutionContext, ppm: PPMSettingsResource) -> dg.MaterializeResult:
    """MiniLM fine-tuned by query matching: InfoNCE with in-batch negatives (same-item duplicates masked) on
    (query, clicked item text) pairs of the `queries` table; held-out query -> item retrieval over the whole
    catalog (recall@10, MRR) before vs after."""
    settings = ppm.get()
    r = pipeline.text_encoder(settings, progress=context.log.info)
    if "skipped" in r:
        return _skipped(r)
    return dg.MaterializeResult(metadata={
        **{k: num(r[k]) for k in ("recall@10_before", "recall@10_after", "mrr_before", "mrr_after", "steps",
                                  "train_seconds", "seconds")},
        "train_queries": num(r["split"]["train"]), "heldout_queries": num(r["split"]["test"]),
        "catalog_items": num(r["after"]["catalog"]), "split": dg.MetadataValue.json(r["split"]),
        # settings, not measurements: text (the UI plots numbers across materializations)
        "epochs": dg.MetadataValue.text(str(r["epochs"])), "temperature": dg.MetadataValue.text(str(r["temperature"])),
        **_common(r, settings.artifacts_dir),
        "training_curve": dg.MetadataValue.md(markdown_image(r["curve_png"], "query-matching loss per step")),
        "loss_per_epoch": table([{"epoch": i + 1, "train_loss": v} for i, v in enumerate(r["loss_curve"])]),
    })


@dg.asset(group_name="encoders", deps=["items"], owners=["team:ppm-platform"], kinds={"pytorch", "onnx"}, pool=TORCH_POOL)
def image_encoder(context: dg.AssetExecutionContext, ppm: PPMSettingsResource) -> dg.MaterializeResult:
    """EfficientNet-Lite0 fine-tuned by entity prediction (multi-label item categories from the image, BCE):
    last blocks + head trained on cached frozen-trunk activations; held-out items scored against a linear probe
    on the frozen pre-trained features (micro/macro F1, mAP)."""
    settings = ppm.get()
    r = pipeline.image_encoder(settings, progress=context.log.info)
    if "skipped" in r:
        return _skipped(r)
    curve = r["curve"]
    return dg.MaterializeResult(metadata={
        **{k: num(r[k]) for k in ("map_probe", "map_finetuned", "micro_f1_probe", "micro_f1_finetuned",
                                  "macro_f1_probe", "macro_f1_finetuned", "trained_params", "best_epoch",
                                  "cache_seconds", "train_seconds", "seconds")},
        "train_items": num(r["split"]["train"]), "valid_items": num(r["split"]["valid"]),
        "test_items": num(r["split"]["test"]), "split": dg.MetadataValue.json(r["split"]),
        "trained": dg.MetadataValue.text(r["trained"]),
        **_common(r, settings.artifacts_dir),
        "training_curve": dg.MetadataValue.md(markdown_image(r["curve_png"],
                                                             "entity-prediction train BCE and valid mAP per epoch")),
        "curve": table([{"epoch": i + 1, **{k: v[i] for k, v in curve.items() if i < len(v)}}
                        for i in range(max(map(len, curve.values()), default=0))]),
    })
