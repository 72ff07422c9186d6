"""Smoke-load the Dagster code location (as project_fully_featured does)."""


def test_definitions_load_with_full_asset_graph():
    from dagster_project.definitions import defs

    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys >= {"items", "users", "interactions", "queries", "item_multimodal", "behavior_sequences",
                    "ppm_model", "ppm_item_cache", "ppm_user_cache", "feast_definitions", "training_set",
                    "online_store", "base_model", "urm_model", "urm_onnx", "base_onnx", "ranking_demo"}
    # the caches sit between the frozen PPM and the feature store
    assert {k.to_user_string() for k in graph.get(graph_key("ppm_user_cache")).parent_keys} == {
        "ppm_model", "behavior_sequences", "ppm_item_cache"}


def graph_key(s):
    import dagster as dg

    return dg.AssetKey(s)
