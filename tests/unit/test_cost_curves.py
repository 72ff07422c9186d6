"""benchmarks/cost_curves.py's bookkeeping for a scale measured in two runs (``--resume``)."""

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cc():
    spec = importlib.util.spec_from_file_location("cost_curves", REPO / "benchmarks" / "cost_curves.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_remaining_steps_are_the_selections_assets_not_yet_run(cc):
    done = {"canonical_tables", "text_encoder", "image_encoder", "item_multimodal", "behavior_sequences",
            "ppm_model", "ppm_item_cache", "ppm_user_cache", "feast_definitions", "online_store", "training_set"}
    assert cc.remaining_steps("*ranking_demo", done) == ["item_semantic_id", "item_stats", "ranking_demo", "urm_model",
                                                         "urm_onnx", "user_stats"]
    # the two counter tables are one step (the `counters` multi-asset)
    assert cc.remaining_steps("*ranking_demo", done | {"counters"}) == ["item_semantic_id", "ranking_demo", "urm_model",
                                                                      "urm_onnx"]
    # the four canonical tables are one step: none of them is left once it ran
    assert "users" not in cc.remaining_steps("*ranking_demo", {"canonical_tables"})
    assert {"users", "items", "interactions", "queries"} <= set(cc.remaining_steps("*ranking_demo", set()))


def test_merge_runs_adds_walls_keeps_larger_peaks_and_the_union_of_steps(cc):
    entry = {"end_to_end_s": 100.0, "peak_rss_gib": 3.5, "peak_driver_rss_gib": 2.0, "run_rc": -9,
             "asset_seconds": {"ppm_model": 60.0, "training_set": 30.0},
             "asset_peak_rss_gib": {"ppm_model": 3.5, "training_set": 3.0},
             "asset_peak_driver_rss_gib": {"ppm_model": 2.0, "training_set": 1.5},
             "check_step_peak_rss_gib": {"startup": 0.2, "urm_model": 2.5}}   # urm_model: stopped mid-step
    run = {"wall_s": 50.5, "peak_rss_gib": 4.25, "peak_driver_rss_gib": 1.0, "rc": 0, "failed_steps": [],
           "step_seconds": {"urm_model": 45.0}, "step_peak_rss_gib": {"urm_model": 4.25},
           "step_peak_driver_rss_gib": {"urm_model": 1.0}, "other_step_peak_rss_gib": {"startup": 0.3}}
    m = cc.merge_runs(entry, run)
    assert m["wall_s"] == 150.5 and m["peak_rss_gib"] == 4.25 and m["peak_driver_rss_gib"] == 2.0
    assert m["rc"] == 0 and m["failed_steps"] == []
    assert m["step_seconds"] == {"ppm_model": 60.0, "training_set": 30.0, "urm_model": 45.0}
    assert m["step_peak_rss_gib"]["urm_model"] == 4.25 and m["step_peak_driver_rss_gib"]["ppm_model"] == 2.0
    assert m["other_step_peak_rss_gib"] == {"startup": 0.3}   # the finished urm_model left "other"
