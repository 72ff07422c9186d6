"""Feast feature-store layer (ppm_platform.feature_store + feature_repo/features.py) on small synthetic
feature tables: registration, point-in-time leakage (DESIGN.md §4), training-frame order/labels/row
count with chunking, materialization and online lookups. One registry per module (apply is shared)."""

from __future__ import annotations

import warnings
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ppm_platform import feature_store as fsmod
from ppm_platform.config import Settings
from ppm_platform.data import schemas
from ppm_platform.feature_store import repo_config
from ppm_platform.io import write_parquet_atomic

UTC = timezone.utc
D = schemas.AS_OF_DELAY  # 1 µs
T0 = datetime(2024, 1, 1, 0, 0, 0, tzinfo=UTC)  # user 1's earlier event
T = datetime(2024, 1, 2, 0, 0, 0, tzinfo=UTC)  # user 1's later event
S0 = T + timedelta(milliseconds=100)  # user 2: two events 200 ms apart (sub-second case)
S1 = T + timedelta(milliseconds=300)
ITEM_TS = datetime(2023, 6, 1, tzinfo=UTC)
ITEM_LATE_TS = datetime(2024, 1, 1, 12, tzinfo=UTC)  # item 12 enters the catalog later
PROFILE_TS = datetime(2023, 1, 1, tzinfo=UTC)
L, DM = 4, 2  # small cache shapes (settings.sequence.max_len, settings.ppm.d_model)

USERS = [1, 2, 3]
ITEMS = [10, 11, 12]


def _seq_row(user, event_ts, hist):
    """A behavior_sequences row produced by ``user``'s event at ``event_ts`` (stamped + 1 µs)."""
    return {"user_id": user, "event_timestamp": event_ts + D, "hist_item_ids": hist,
            "hist_age_s": [float(i) for i in range(len(hist))], "hist_len": len(hist)}


def _cache_row(user, event_ts, marker):
    return {"user_id": user, "event_timestamp": event_ts + D,
            "ppm_user_seq": [float(marker)] * (L * DM), "ppm_seq_len": int(marker), "ppm_user_version": f"v{marker}"}


def _write_tables(settings: Settings) -> None:
    fd = settings.features_dir
    items = pd.DataFrame({"item_id": ITEMS, "event_timestamp": [ITEM_TS, ITEM_TS, ITEM_LATE_TS]})
    write_parquet_atomic(items.assign(
        text_emb=[[0.1 * i] * 3 for i in ITEMS], image_emb=[[0.2 * i] * 2 for i in ITEMS],
        has_image=[1, 0, 1], encoder_version="enc1"), fd / "item_multimodal.parquet", schemas.ITEM_MULTIMODAL)
    write_parquet_atomic(items.assign(categories=[["Drama"], ["Comedy", "Drama"], []], release_year=[1995, 1996, 1997]),
                         fd / "item_profile.parquet", schemas.ITEM_PROFILE)
    write_parquet_atomic(items.assign(ppm_item_vec=[[float(i)] * DM for i in ITEMS], ppm_item_version="p1"),
                         fd / "ppm_item_cache.parquet", schemas.PPM_ITEM_CACHE)
    write_parquet_atomic(pd.DataFrame({"user_id": USERS, "event_timestamp": PROFILE_TS, "age": [20, 30, 40],
                                       "gender": ["M", "F", "M"], "occupation": ["a", "b", "c"]}),
                         fd / "user_profile.parquet", schemas.USER_PROFILE)
    seq = [_seq_row(1, T0, [10]), _seq_row(1, T, [11, 10]),
           _seq_row(2, S0, [12]), _seq_row(2, S1, [10, 12]), _seq_row(3, T0, [11])]
    write_parquet_atomic(pd.DataFrame(seq), fd / "behavior_sequences.parquet", schemas.BEHAVIOR_SEQUENCES)
    cache = [_cache_row(1, T0, 1), _cache_row(1, T, 2), _cache_row(2, S0, 3), _cache_row(2, S1, 4), _cache_row(3, T0, 5)]
    write_parquet_atomic(pd.DataFrame(cache), fd / "ppm_user_cache.parquet", schemas.PPM_USER_CACHE)
    write_counter_tables(settings, INTERACTIONS)


#: the impressions behind the sequence rows above (every one a click), from which the counter tables are built
INTERACTIONS = pd.DataFrame({"user_id": [1, 1, 2, 2, 3], "item_id": [10, 11, 12, 10, 11],
                             "event_timestamp": pd.to_datetime([T0, T, S0, S1, T0], utc=True),
                             "click": 1, "order": [0, 1, 0, 0, 0]}).astype({"click": "int8", "order": "int8"})


def write_counter_tables(settings: Settings, interactions: pd.DataFrame) -> None:
    """``item_stats`` / ``user_stats`` of ``interactions`` by the counters' own definition."""
    from ppm_platform.features.counters import counters_reference
    from ppm_platform.testing.frames import TEST_PRIORS

    windows = tuple(settings.counters.windows_days)
    for entity in ("item", "user"):
        write_parquet_atomic(counters_reference(interactions, entity, windows, TEST_PRIORS),
                             settings.features_dir / f"{entity}_stats.parquet", schemas.counter_schema(entity, windows))


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Settings on a tmp artifacts dir, feature tables written, definitions applied once."""
    root = tmp_path_factory.mktemp("feast")
    settings = Settings.from_env(env={}, artifacts_dir=root / "artifacts",
                                 sequence={"max_len": L}, ppm={"d_model": DM}).ensure_dirs()
    _write_tables(settings)
    applied = fsmod.apply_definitions(settings)
    store = fsmod.get_store(settings)
    return settings, store, applied


def test_apply_registers_views_and_services(env):
    settings, store, applied = env
    assert applied["entities"] == ["item", "user"]
    assert applied["feature_views"] == sorted(["item_multimodal", "item_profile", "user_profile",
                                               "user_recent_items", "ppm_item_cache", "ppm_user_cache",
                                               "item_stats", "user_stats"])
    assert applied["feature_services"] == ["idrec_user", "urm_item", "urm_training", "urm_user"]
    # paths honour the non-default artifacts dir
    assert (settings.feast_dir / "registry.db").is_file()
    assert (settings.feast_dir / "feature_store.yaml").is_file()
    src = store.get_feature_view("user_recent_items").batch_source.path
    assert src == str(settings.features_dir / "behavior_sequences.parquet")
    tags = store.get_feature_view("ppm_user_cache").tags
    assert (tags["layout"], tags["L"], tags["d"]) == ("row-major", str(L), str(DM))
    assert store.get_feature_view("ppm_user_cache").ttl == timedelta(0)
    training = {p.name for p in store.get_feature_service("urm_training").feature_view_projections}
    assert training == {"user_profile", "user_recent_items", "ppm_user_cache", "user_stats", "item_profile",
                        "ppm_item_cache", "item_stats"}
    assert store.get_feature_view("user_stats").tags["windows_days"] == "7,30"
    # idempotent
    again = fsmod.apply_definitions(settings)
    assert {k: again[k] for k in ("entities", "feature_views", "feature_services")} == \
        {k: applied[k] for k in ("entities", "feature_views", "feature_services")}


def test_cluster_profile_config(env, tmp_path):
    """cluster -> Spark offline store + Redis online store + SparkSource (config only; no Spark/Redis)."""
    from feast import RepoConfig
    from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

    s = Settings.from_env(env={}, artifacts_dir=tmp_path, profile="cluster", redis="redis.example:6380")
    cfg = fsmod.repo_config_dict(s)
    # bounded client timeouts are added (a hung Redis must not hang /rank); the address's own params win
    conn = "redis.example:6380,socket_timeout=1.0,socket_connect_timeout=0.5"
    assert cfg["offline_store"]["type"] == "spark" and cfg["online_store"] == {"type": "redis", "connection_string": conn}
    assert fsmod.redis_connection_string("h:1,db=2,socket_timeout=5") == "h:1,db=2,socket_timeout=5,socket_connect_timeout=0.5"
    rc = RepoConfig(**cfg)
    assert rc.online_store.connection_string == conn
    with warnings.catch_warnings():  # feast's spark module calls simplefilter("once", RuntimeWarning) on import
        warnings.simplefilter("ignore", RuntimeWarning)
        srcs = fsmod.load_definitions(s)["data_sources"]
    assert all(isinstance(x, SparkSource) for x in srcs)
    assert {x.path for x in srcs} == {str(tmp_path / "features" / f"{t}.parquet") for t in
                                      ["item_multimodal", "item_profile", "user_profile", "behavior_sequences",
                                       "ppm_item_cache", "ppm_user_cache", "item_stats", "user_stats"]}


@pytest.mark.parametrize("profile", sorted(repo_config.CLI_YAML_FILES))
def test_committed_feast_yaml_is_the_config_in_code(profile, monkeypatch):
    """``feature_repo/feature_store*.yaml`` (the Feast CLI's config) are generated from the one config in
    code: a change to :func:`repo_config_dict` must be regenerated into them
    (``repo_config.write_cli_yaml("feature_repo")``), so the CLI files never drift from what the library runs.
    Feast parses each into the store types of its profile, with the ``$VAR`` the cluster file leaves open."""
    from feast.repo_config import load_repo_config

    path = Settings.from_env(env={}).feature_repo_dir / repo_config.CLI_YAML_FILES[profile]
    assert path.read_text() == repo_config.cli_yaml(profile), \
        f"{path} differs from the config in code: run repo_config.write_cli_yaml('feature_repo')"
    monkeypatch.setenv("PPM_REDIS", "redis.example:6380")
    monkeypatch.setenv("PPM_SPARK_MASTER", "spark://h:7077")
    rc = load_repo_config(path.parent, path)
    expected = fsmod.repo_config_dict(Settings.from_env(env={}, profile=profile))
    assert rc.offline_store.type == expected["offline_store"]["type"]
    assert rc.online_store.type == expected["online_store"]["type"]
    assert rc.registry.registry_store_type == repo_config.REGISTRY_STORE_TYPE
    if profile == "cluster":
        assert rc.online_store.connection_string.startswith("redis.example:6380,socket_timeout=")
        assert rc.offline_store.spark_conf["spark.master"] == "spark://h:7077"


def test_definitions_are_a_function_of_settings_and_the_cli_module_builds_them_from_the_env(env, tmp_path,
                                                                                           monkeypatch):
    """The library's load of ``feature_repo/features.py`` builds from the settings it is given and reads no
    environment (a bad ``PPM_PROFILE`` there changes nothing); the Feast CLI's module ``repo.py`` builds the
    module-level objects from the environment's settings."""
    import importlib
    import sys

    from ppm_platform.feature_store.definitions import DEFINITIONS_MODULE

    settings, _, _ = env
    monkeypatch.delitem(sys.modules, DEFINITIONS_MODULE, raising=False)
    monkeypatch.setenv("PPM_PROFILE", "not-a-profile")
    defs = fsmod.load_definitions(settings)
    assert {v.name for v in defs["feature_views"]} >= {"user_recent_items", "ppm_user_cache", "user_stats"}
    assert all("MovieLens" not in e.description for e in defs["entities"])
    monkeypatch.delenv("PPM_PROFILE")
    monkeypatch.setenv("PPM_ARTIFACTS_DIR", str(tmp_path / "cli_artifacts"))
    monkeypatch.syspath_prepend(str(settings.feature_repo_dir))
    for name in ("features", "repo"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    repo = importlib.import_module("repo")
    try:
        assert repo.user_recent_items.batch_source.path == str(tmp_path / "cli_artifacts" / "features" /
                                                               "behavior_sequences.parquet")
        assert repo.urm_training.name == "urm_training" and (tmp_path / "cli_artifacts" / "feast").is_dir()
    finally:
        for name in ("features", "repo"):
            sys.modules.pop(name, None)


def test_point_in_time_no_leakage(env):
    settings, store, _ = env
    rows = [
        (1, T0 - timedelta(days=1)),  # 0: before any sequence row -> nulls, but returned
        (1, T0),  # 1: the event that produced row t0 -> must not see it
        (1, T),  # 2: exactly at t -> sees the t0 row only
        (1, T + timedelta(seconds=1)),  # 3: after t -> the new row
        (2, S1),  # 4: sub-second: at s1 -> the s0 row (s0 is 200 ms earlier)
        (2, S1 + D),  # 5: the first µs at which the s1 row is visible
        (2, S1 + timedelta(milliseconds=1)),  # 6
        (2, S0 - timedelta(microseconds=1)),  # 7: just before s0 -> nulls
    ]
    ent = pd.DataFrame({"user_id": [u for u, _ in rows], "item_id": 10,
                        "event_timestamp": [ts for _, ts in rows], "click": np.arange(len(rows), dtype="int8")})
    out = fsmod.get_training_frame(settings, ent)
    assert len(out) == len(ent)
    assert out["click"].tolist() == list(range(len(rows)))
    hist = [None if h is None else list(h) for h in out["hist_item_ids"]]
    assert hist == [None, None, [10], [11, 10], [12], [10, 12], [10, 12], None]
    assert out["ppm_seq_len"].tolist() == [pd.NA, pd.NA, 1, 2, 3, 4, 4, pd.NA]
    assert out["ppm_user_version"].tolist()[2:7] == ["v1", "v2", "v3", "v4", "v4"]
    assert out["hist_len"].isna().tolist() == [True, True, False, False, False, False, False, True]
    # profile rows are older than every entity row -> always present; item features as of the row
    assert out["age"].tolist() == [20] * 4 + [30] * 4
    assert str(out["event_timestamp"].dt.tz) == "UTC"
    assert out["event_timestamp"].tolist() == ent["event_timestamp"].tolist()
    # item-level PIT: item 12 exists only from ITEM_LATE_TS on
    ent2 = pd.DataFrame({"user_id": [3, 3], "item_id": [12, 12],
                         "event_timestamp": [ITEM_LATE_TS - D, ITEM_LATE_TS]})
    out2 = fsmod.get_training_frame(settings, ent2)
    assert out2["release_year"].tolist() == [pd.NA, 1997]


def test_training_frame_order_labels_chunking_and_parquet(env, tmp_path):
    settings, store, _ = env
    rng = np.random.default_rng(0)
    n = 14
    ent = pd.DataFrame({
        "user_id": rng.choice([1, 2, 3, 99], n),  # 99: unknown user
        "item_id": rng.choice([10, 11, 12, 98], n),  # 98: unknown item
        "event_timestamp": [T + timedelta(hours=int(h)) for h in rng.integers(-48, 48, n)],
        "click": rng.integers(0, 2, n).astype("int8"),
        "order": rng.integers(0, 2, n).astype("int8"),
    }, index=np.arange(100, 100 + n))  # a non-default index: output index is reset
    ent = pd.concat([ent, ent.iloc[[3]]])  # an exact duplicate entity row is kept twice
    ent.iloc[-1, ent.columns.get_loc("click")] = 1 - ent.iloc[3]["click"]
    small = fsmod.get_training_frame(settings, ent, chunk_rows=3)
    big = fsmod.get_training_frame(settings, ent)
    assert len(small) == len(ent) == len(big)
    pd.testing.assert_frame_equal(small, big)
    for c in ["user_id", "item_id", "click", "order"]:
        assert small[c].tolist() == ent[c].tolist(), c
    assert small["click"].dtype == "int8"
    assert small["event_timestamp"].tolist() == ent["event_timestamp"].tolist()
    assert small.loc[small.user_id == 99, "age"].isna().all()
    assert small.loc[small.item_id == 98, "ppm_item_vec"].isna().all()
    assert small.loc[small.user_id == 1, "age"].eq(20).all()

    # streamed parquet: same content, time-sorted order, typed schema even for NULL-only chunks
    sorted_ent = ent.sort_values("event_timestamp", kind="stable")
    path = tmp_path / "training.parquet"
    stats = fsmod.write_training_set(settings, sorted_ent, path, chunk_rows=4)
    assert stats["rows"] == len(ent) and stats["chunks"] == 4 and path.is_file()
    back = pq.read_table(path)
    seq_type = back.schema.field("ppm_user_seq").type
    assert pa.types.is_list(seq_type) and seq_type.value_type == pa.float32()
    assert str(back.schema.field("event_timestamp").type) == "timestamp[us, tz=UTC]"
    df = back.to_pandas()
    assert df["click"].tolist() == sorted_ent["click"].tolist()
    assert df["user_id"].tolist() == sorted_ent["user_id"].tolist()
    assert not list(tmp_path.glob(".training.parquet.*"))  # no temp file left
    # DuckDB memory-capped (spills beyond it): the same rows
    capped = fsmod.write_training_set(settings, sorted_ent, tmp_path / "capped.parquet", chunk_rows=4,
                                      memory_limit="256MB")
    assert capped["rows"] == len(ent) and capped["rows_per_min"] > 0
    assert pq.read_table(tmp_path / "capped.parquet").equals(back)
    assert (settings.artifacts_dir / ".duckdb_spill").parent.exists()  # spills go under the artifacts folder


def test_training_frame_rejects_bad_input(env):
    settings, _, _ = env
    with pytest.raises(ValueError, match="item_id"):
        fsmod.get_training_frame(settings, pd.DataFrame({"user_id": [1], "event_timestamp": [T]}))
    with pytest.raises(ValueError, match="clash"):
        fsmod.get_training_frame(settings, pd.DataFrame({"user_id": [1], "item_id": [10], "event_timestamp": [T],
                                                         "age": [3]}))
    empty = fsmod.get_training_frame(settings, pd.DataFrame({"user_id": pd.Series([], dtype="int64"),
                                                             "item_id": pd.Series([], dtype="int64"),
                                                             "event_timestamp": pd.Series([], dtype="datetime64[us, UTC]")}))
    assert len(empty) == 0 and "ppm_user_seq" in empty.columns
    # the IDRec-only user service needs no item_id
    out = fsmod.get_training_frame(settings, pd.DataFrame({"user_id": [1], "event_timestamp": [T]}),
                                   service="idrec_user")
    assert list(out["hist_item_ids"][0]) == [10] and "ppm_user_seq" not in out.columns


def test_materialize_and_online_lookups(env):
    settings, store, _ = env
    res = fsmod.materialize(settings)
    assert res["views"] == 8
    store = fsmod.get_store(settings)
    u1 = fsmod.read_online_user(store, 1)
    assert u1["user_id"] == 1 and u1["age"] == 20
    assert list(u1["hist_item_ids"]) == [11, 10] and u1["hist_len"] == 2  # the latest row (t), not t0
    assert u1["ppm_user_version"] == "v2" and list(u1["ppm_user_seq"]) == [2.0] * (L * DM)
    u2 = fsmod.read_online_user(store, 2, service="idrec_user")
    assert list(u2["hist_item_ids"]) == [10, 12] and "ppm_user_seq" not in u2
    # counters as of now (the materialize end): every event counted, the windows long decayed to zero
    assert (u1["user_impressions"], u1["user_clicks"], u1["user_orders"]) == (2, 2, 1)
    assert u1["user_impressions_7d"] == 0 and u1["user_click_rate_30d"] == pytest.approx(0.5)
    assert u2["user_impressions"] == 2  # idrec_user reads user_stats too
    unknown = fsmod.read_online_user(store, 12345)
    assert unknown["age"] is None and unknown["ppm_user_seq"] is None and unknown["user_impressions"] is None
    items = fsmod.read_online_items(store, [12, 999, 10, 12])
    assert items["item_id"].tolist() == [12, 999, 10, 12]
    assert items["release_year"].tolist()[0] == 1997 and items["release_year"].tolist()[2] == 1995
    assert items["ppm_item_vec"][1] is None and items["ppm_item_version"][1] is None
    assert list(items["ppm_item_vec"][2]) == [10.0, 10.0]
    assert items["item_impressions"].tolist()[2] == 2 and pd.isna(items["item_impressions"][1])  # 999: unknown


def test_materialize_reads_latest_rows_and_writes_in_batches(env, monkeypatch):
    """Feast materializes the latest row per entity (``pull_latest_features``) in online-write batches of
    ``MATERIALIZE_BATCH_ROWS``: here 2 rows, so 3 users take two batches; every user still gets its latest
    row (user 2's two rows are 200 ms apart)."""
    settings, _, _ = env
    monkeypatch.setattr(repo_config, "MATERIALIZE_BATCH_ROWS", 2)
    store = fsmod.get_store(settings)
    mc = store.config.materialization_config
    assert mc.pull_latest_features is True and mc.online_write_batch_size == 2
    fsmod.materialize(settings, store=store)
    for user, hist, version in ((1, [11, 10], "v2"), (2, [10, 12], "v4"), (3, [11], "v5")):
        u = fsmod.read_online_user(store, user)
        assert list(u["hist_item_ids"]) == hist and u["ppm_user_version"] == version, user


def test_online_reads_keep_serving_while_a_view_is_materializing(env):
    """``FeatureStore.materialize`` first commits the view's state MATERIALIZING to the
    registry; a store opened meanwhile (a service whose registry cache refreshed) must keep serving the last
    materialized values (registry option ``serve_features_while_materializing``), where Feast's default
    refuses the read with ``ValueError: ... in state 'MATERIALIZING'``."""
    from feast import FeatureStore, RepoConfig
    from feast.feature_view import FeatureViewState

    settings, _, _ = env
    fsmod.materialize(settings)
    writer = fsmod.get_store(settings)
    fv = writer.get_feature_view("ppm_user_cache")
    previous = fv.state
    fv.state = FeatureViewState.MATERIALIZING
    writer.registry.apply_feature_view(fv, writer.project, commit=True)
    try:
        reader = fsmod.get_store(settings)
        assert reader.get_feature_view("ppm_user_cache").state == FeatureViewState.MATERIALIZING
        u1 = fsmod.read_online_user(reader, 1)
        assert u1["ppm_user_version"] == "v2" and list(u1["ppm_user_seq"]) == [2.0] * (L * DM)
        cfg = fsmod.repo_config_dict(settings)
        cfg["registry"]["serve_features_while_materializing"] = False  # Feast's default: the outage
        strict = FeatureStore(repo_path=str(settings.feature_repo_dir), config=RepoConfig(**cfg))
        with pytest.raises(ValueError, match="MATERIALIZING"):
            fsmod.read_online_user(strict, 1)
    finally:
        fv.state = previous
        writer.registry.apply_feature_view(fv, writer.project, commit=True)


# ---- offline x online store matrix -------------------------------------------------------------------------
# The same point-in-time and online-read checks on every pair of offline store (our ASOF DuckDB store, Feast's
# own DuckDB store) and online store (SQLite; Redis when redis-server is on PATH), as Feast's universal tests
# run one test over many stores. Small tables (those above), so each pair costs a few seconds.
OFFLINE_STORES = {"asof": repo_config.ASOF_STORE_TYPE, "feast_duckdb": "duckdb"}
ONLINE_STORES = ("sqlite", "redis")


@pytest.fixture(scope="module")
def redis_addr(tmp_path_factory):
    """``host:port`` of a ``redis-server`` started on loopback for this module (skips without one)."""
    import shutil

    from ppm_platform.testing.cluster import start_redis

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not on PATH (`make redis`): the Redis online-store cases need it")
    proc, addr = start_redis(tmp_path_factory.mktemp("matrix_redis"))
    try:
        yield addr
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module", params=[(off, on) for off in OFFLINE_STORES for on in ONLINE_STORES],
                ids=lambda p: f"{p[0]}-{p[1]}")
def matrix(request, tmp_path_factory):
    """``(offline, settings, store)``: the tables above under a fresh artifacts dir, definitions applied, and
    a store on the pair's offline and online store (Redis: database ``1 + index`` of one server per module,
    so pairs do not share keys)."""
    from feast import FeatureStore, RepoConfig

    offline, online = request.param
    root = tmp_path_factory.mktemp(f"matrix_{offline}_{online}")
    update: dict = {"online_store": online}
    if online == "redis":
        update["redis"] = f"{request.getfixturevalue('redis_addr')},db={1 + list(OFFLINE_STORES).index(offline)}"
    settings = Settings.from_env(env={}, artifacts_dir=root / "artifacts", sequence={"max_len": L},
                                 ppm={"d_model": DM}).model_copy(update=update).ensure_dirs()
    _write_tables(settings)
    fsmod.apply_definitions(settings)
    cfg = {**fsmod.repo_config_dict(settings), "offline_store": {"type": OFFLINE_STORES[offline]}}
    config = RepoConfig(**cfg)
    config.repo_path = settings.feature_repo_dir
    return offline, settings, FeatureStore(repo_path=str(settings.feature_repo_dir), config=config)


def test_matrix_point_in_time_and_training_set(matrix, tmp_path):
    """Point-in-time rows (before any row, at the producing event, after it; an item that enters the catalog
    later) are the same on every offline store, through both the DataFrame and the streamed-file path; only
    the streaming store streams."""
    offline, settings, store = matrix
    assert fsmod.streams_arrow_batches(store) is (offline == "asof")
    ent = pd.DataFrame({"user_id": [1, 1, 1, 1, 3, 3], "item_id": [10, 10, 10, 10, 12, 12],
                        "event_timestamp": [T0 - timedelta(days=1), T0, T, T + timedelta(seconds=1),
                                            ITEM_LATE_TS - D, ITEM_LATE_TS],
                        "click": np.arange(6, dtype="int8")})
    out = fsmod.get_training_frame(settings, ent, store=store)
    assert out["click"].tolist() == list(range(6))
    assert [None if h is None else list(h) for h in out["hist_item_ids"]] == [None, None, [10], [11, 10], [11], [11]]
    assert out["release_year"].tolist()[4:] == [pd.NA, 1997]
    res = fsmod.write_training_set(settings, ent, tmp_path / "ts.parquet", store=store, chunk_rows=4)
    written = pq.read_table(res["path"]).to_pandas()  # rows in time order
    by_time = out.sort_values("event_timestamp", kind="stable")
    assert res["rows"] == 6 and res["chunks"] == 2
    assert written["click"].tolist() == by_time["click"].tolist()
    assert [None if h is None else list(h) for h in written["hist_item_ids"]] == \
        [None if h is None else list(h) for h in by_time["hist_item_ids"]]


def test_matrix_materialize_and_online_reads(matrix):
    """Materialize writes each entity's latest row, and online reads return it (None for an unknown id), on
    every pair of offline and online store."""
    _, settings, store = matrix
    fsmod.materialize(settings, store=store)
    u = fsmod.read_online_user(store, 1)
    assert list(u["hist_item_ids"]) == [11, 10] and u["ppm_user_version"] == "v2" and u["age"] == 20
    assert fsmod.read_online_user(store, 999)["hist_item_ids"] is None
    items = fsmod.read_online_items(store, [12, 999, 10])
    assert items["item_id"].tolist() == [12, 999, 10]
    assert items["release_year"].tolist()[0] == 1997 and items["ppm_item_version"][1] is None
