"""Shared integration fixtures: ONE Dagster materialization of the whole asset graph on the real MovieLens-100K
subset per test session, reused by every integration module (test_pipeline_movielens.py, test_serving.py,
test_ui_browser.py). The run is recorded in a persistent Dagster instance (``<artifacts>/dagster_home``), so the
UI test can open the webserver on it as a user would after ``ppm demo``."""

import json

import pytest

MAX_ITEMS = 250


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory):
    """(settings, dagster result) of materializing every asset + check on the MAX_ITEMS subset."""
    import dagster as dg
    from ppm_platform.cli.orchestration import write_dagster_yaml
    from ppm_platform.config import Settings

    art = tmp_path_factory.mktemp("artifacts")
    cfg = art / "config.json"
    cfg.write_text(json.dumps({"ppm": {"epochs": 1}, "urm": {"epochs": 2},
                               "evaluation": {"seeds": 1, "epochs": 1, "item_cold_draws": 1,
                                              "gbdt_learning_rates": [0.1], "gbdt_max_leaf_nodes": [15, 31]},
                               "serving": {"parity_pairs": 1000},
                               "finetune": {"text": {"epochs": 1, "max_steps": 3, "batch_size": 16},
                                            "image": {"epochs": 1, "max_items": 48}}}))
    mp = pytest.MonkeyPatch()
    mp.setenv("PPM_ARTIFACTS_DIR", str(art))
    mp.setenv("PPM_MAX_ITEMS", str(MAX_ITEMS))
    mp.setenv("PPM_CONFIG", str(cfg))
    settings = Settings.from_env()
    try:
        settings.require_dataset()
    except FileNotFoundError as e:
        pytest.fail(f"integration tests need the real dataset: {e}")
    from dagster_project.definitions import all_assets, all_checks
    from dagster_project.resources import resources_for

    home = art / "dagster_home"
    home.mkdir()
    write_dagster_yaml(home)  # the instance config every `ppm` run and `make ui` use
    try:
        instance = dg.DagsterInstance.local_temp(str(home))  # open for the session: results read events from it
        result = dg.materialize([*all_assets, *all_checks], resources=resources_for("local"), instance=instance,
                                selection=dg.AssetSelection.all() - dg.AssetSelection.groups("daily"))
    finally:
        # session scope: don't leak the subset's PPM_* variables into later modules (unit tests build their
        # own Settings); the tests use the explicit `settings` object returned here
        mp.undo()
    yield settings, result
