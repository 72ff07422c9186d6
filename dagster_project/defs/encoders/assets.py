"""Encoders group: the paper's encoder fine-tuning (DESIGN.md §1, §3), upstream of ``item_multimodal``.

``text_encoder``: query-matching (SimCSE-style InfoNCE) fine-tune of MiniLM on (query, clicked item text);
``image_encoder``: entity-prediction (multi-label genres, BCE) fine-tune of EfficientNet-Lite0's last blocks.
Both attach held-out metrics, split sizes, training time and the training curve (PNG inline) as metadata.
"""

import dagster as dg

from dagster_project.policies import TORCH_POOL
from dagster_project.resources import PPMSettingsResource
from ppm_platform import pipeline
from ppm_platform.reporting.plots import markdown_image


def _png_md(path: str, alt: str) -> dg.MetadataValue:
    return dg.MetadataValue.md(markdown_image(path, alt))


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
    r = pipeline.text_encoder(ppm.get(), progress=context.log.info)
    if "skipped" in r:
        return _skipped(r)
    return dg.MaterializeResult(metadata={
        "recall@10_before": r["recall@10_before"], "recall@10_after": r["recall@10_after"],
        "mrr_before": r["mrr_before"], "mrr_after": r["mrr_after"],
        "train_queries": r["split"]["train"], "heldout_queries": r["split"]["test"],
        "catalog_items": r["after"]["catalog"], "split": dg.MetadataValue.json(r["split"]),
        "epochs": r["epochs"], "steps": r["steps"], "temperature": r["temperature"],
        "train_seconds": r["train_seconds"], "seconds": r["seconds"],
        "onnx_max_abs_diff": r["onnx"]["max_abs_diff"] if r["onnx"] else dg.MetadataValue.text("not exported"),
        "version": dg.MetadataValue.text(r["version"]), "path": dg.MetadataValue.path(r["path"]),
        "training_curve": _png_md(r["curve_png"], "query-matching loss per step"),
        "loss_per_epoch": dg.MetadataValue.json(r["loss_curve"]),
    })


@dg.asset(group_name="encoders", deps=["items"], owners=["team:ppm-platform"], kinds={"pytorch", "onnx"}, pool=TORCH_POOL)
def image_encoder(context: dg.AssetExecutionContext, ppm: PPMSettingsResource) -> dg.MaterializeResult:
    """EfficientNet-Lite0 fine-tuned by entity prediction (multi-label item categories from the image, BCE):
    last blocks + head trained on cached frozen-trunk activations; held-out items scored against a linear probe
    on the frozen pre-trained features (micro/macro F1, mAP)."""
    r = pipeline.image_encoder(ppm.get(), progress=context.log.info)
    if "skipped" in r:
        return _skipped(r)
    return dg.MaterializeResult(metadata={
        "map_probe": r["map_probe"], "map_finetuned": r["map_finetuned"],
        "micro_f1_probe": r["micro_f1_probe"], "micro_f1_finetuned": r["micro_f1_finetuned"],
        "macro_f1_probe": r["macro_f1_probe"], "macro_f1_finetuned": r["macro_f1_finetuned"],
        "train_items": r["split"]["train"], "valid_items": r["split"]["valid"], "test_items": r["split"]["test"],
        "split": dg.MetadataValue.json(r["split"]), "trained": dg.MetadataValue.text(r["trained"]),
        "trained_params": r["trained_params"], "best_epoch": r["best_epoch"],
        "cache_seconds": r["cache_seconds"], "train_seconds": r["train_seconds"], "seconds": r["seconds"],
        "onnx_max_abs_diff": r["onnx"]["max_abs_diff"] if r["onnx"] else dg.MetadataValue.text("not exported"),
        "version": dg.MetadataValue.text(r["version"]), "path": dg.MetadataValue.path(r["path"]),
        "training_curve": _png_md(r["curve_png"], "entity-prediction train BCE and valid mAP per epoch"),
        "curve": dg.MetadataValue.json(r["curve"]),
    })
