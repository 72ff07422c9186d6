"""PNG plots for the Dagster UI and the reports: training curves and AUC by slice from stage-result-shaped dicts,
the evaluation report's bar plots from plain numbers, the markdown embedder."""

import base64

import pytest
from PIL import Image

from ppm_platform.reporting.plots import (
    auc_by_slice_png,
    bars_png,
    curve_png,
    grouped_bars_png,
    markdown_image,
    model_plots,
    training_curves_png,
)

EPOCHS = [{"epoch": 1, "train_loss": 1.02, "valid_click_auc": 0.69, "valid_order_auc": 0.70},
          {"epoch": 2, "train_loss": 0.97, "valid_click_auc": 0.70, "valid_order_auc": 0.69}]
SLICES = {"all": {"click": {"auc": 0.71}, "order": {"auc": 0.69}, "impressions": 100},
          "cold_items": {"click": {"auc": 0.58}, "order": {"auc": float("nan")}, "impressions": 6},
          "new_users": {"impressions": 0}}


def test_training_curves_and_slices_are_pngs(tmp_path):
    p = training_curves_png(EPOCHS, tmp_path / "a" / "curves.png", "URM")
    q = auc_by_slice_png(SLICES, tmp_path / "slices.png", "URM")
    for path in (p, q):
        with Image.open(path) as im:
            assert im.format == "PNG" and im.size == (640, 360)


def test_curve_png_draws_the_extra_curves_too(tmp_path):
    p = curve_png([0.9, 0.7, 0.6], tmp_path / "ft" / "training_curve.png", "fine-tune", "epoch", "train loss",
                  extra={"valid mAP": [0.2, 0.3, 0.35]})
    with Image.open(p) as im:
        assert im.format == "PNG" and im.size == (450, 270)


def test_model_plots_makes_only_what_the_result_has(tmp_path):
    assert set(model_plots({"epochs": EPOCHS}, tmp_path, "ppm_model", "PPM")) == {"training_curves"}
    out = model_plots({"epochs": EPOCHS, "slices": SLICES}, tmp_path, "urm_model", "URM")
    assert out == {"training_curves": tmp_path / "urm_model_training_curves.png",
                   "auc_by_slice": tmp_path / "urm_model_auc_by_slice.png"}


def test_markdown_embeds_the_file_bytes(tmp_path):
    p = training_curves_png(EPOCHS, tmp_path / "c.png", "Base")
    md = markdown_image(p, "Base curves")
    b64 = md.split("base64,", 1)[1].split(")", 1)[0]
    assert md.startswith("![Base curves](data:image/png;base64,") and base64.b64decode(b64) == p.read_bytes()
    assert str(p) not in md  # no local path in what the UI shows


def test_report_bar_plots_are_pngs_and_take_missing_numbers(tmp_path):
    nan = float("nan")
    panels = {f"test {t} AUC by slice": {"Base": [(0.70, 0.01), (0.60, 0.0)], "URM": [(nan, 0.0), (0.65, 0.02)]}
              for t in ("click", "order")}
    g = grouped_bars_png(panels, ["all", "cold_items"], tmp_path / "g.png", "AUC")
    b = bars_png(["Base", "URM"], [0.6, nan], [0.01, 0.0], tmp_path / "b.png", "title", "AUC",
                 colors=["tab:blue", "tab:red"], reference=(0.65, "Base@100%"))
    for path, size in ((g, (1200, 400)), (b, (700, 400))):
        with Image.open(path) as im:
            assert im.format == "PNG" and im.size == size


def test_empty_inputs_raise():
    with pytest.raises(ValueError, match="no per-epoch train_loss"):
        training_curves_png([], "x.png", "URM")
    with pytest.raises(ValueError, match="no slices"):
        auc_by_slice_png({}, "x.png", "URM")
    with pytest.raises(ValueError, match="no panels"):
        grouped_bars_png({}, [], "x.png", "AUC")
