"""Point-in-time leakage (DESIGN.md §4 leakage rule): the event at time t is never visible in
features joined at t.

* For every user-level feature view (``user_recent_items``, ``ppm_user_cache``, ``user_profile``,
  ``user_stats``) and the item counters (``item_stats``) a
  constructed case through the real Feast ``get_historical_features`` (DuckDB offline store, tmp
  artifacts dir): the producing event and the impression in the same second, and sub-second apart.
  The feature rows are made by the pipeline's own code (``behavior_sequences_reference``, the PPM user-cache
  encoder ``encode_sequence_frame``) and stamped by its rule (``t + AS_OF_DELAY``).
* A property test (hypothesis) over random event streams: behaviour sequences + an as-of join
  (``feature_ts <= entity_ts``, Feast's rule) never contain a click at or after the impression time and
  contain every earlier click, most recent first, up to L.
* The same property on one random stream through Spark (``compute_behavior_sequences``, ``compute_counters``)
  and Feast.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from ppm_platform import feature_store as fsmod
from ppm_platform.config import Settings
from ppm_platform.data import schemas
from ppm_platform.features.behavior_sequences import behavior_sequences_reference
from ppm_platform.features.counters import counters_reference
from ppm_platform.testing.frames import TEST_PRIORS
from ppm_platform.io import write_parquet_atomic

US = pd.Timedelta(microseconds=1)
D = schemas.AS_OF_DELAY
T0 = pd.Timestamp("2024-01-01 00:00:00", tz="UTC")
T = pd.Timestamp("2024-01-02 12:00:00", tz="UTC")  # user 1: a click at a whole second
S0 = T + pd.Timedelta(milliseconds=250)  # user 2: two clicks 500 µs apart (sub-second)
S1 = S0 + pd.Timedelta(microseconds=500)
L, DM = 4, 8
ITEMS = [10, 11, 12, 13]


def _interactions() -> pd.DataFrame:
    rows = [(1, 11, T0, 1), (1, 13, T - pd.Timedelta(minutes=1), 0), (1, 10, T, 1),
            (2, 13, T0, 1), (2, 12, S0, 1), (2, 10, S1, 1), (3, 11, T0, 1)]
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "event_timestamp", "click"])
    return df.assign(order=0).astype({"click": "int8", "order": "int8", "event_timestamp": "datetime64[us, UTC]"})


def _tiny_ppm():
    import torch

    from ppm_platform.models.ppm import PPM, PPMConfig
    from ppm_platform.model_store import model_version

    torch.manual_seed(0)
    ppm = PPM(PPMConfig(me_dim=1665, d_model=DM, n_layers=1, n_heads=2, ff_dim=16, max_len=L, n_time_buckets=8,
                        readout_hidden=8)).eval()
    return ppm, model_version(ppm)


def _write_feature_tables(settings: Settings, inter: pd.DataFrame) -> dict:
    """All six feature tables; the user-level ones produced by the pipeline's code from ``inter``."""
    from ppm_platform.features.ppm_caches import ItemVectorTable, encode_sequence_frame

    fd = settings.features_dir
    item_ts = T0 - pd.Timedelta(days=30)
    items = pd.DataFrame({"item_id": ITEMS, "event_timestamp": [item_ts] * len(ITEMS)})
    rng = np.random.default_rng(0)
    write_parquet_atomic(items.assign(text_emb=[rng.standard_normal(384).astype(np.float32) for _ in ITEMS],
                                      image_emb=[np.zeros(1280, np.float32)] * len(ITEMS), has_image=0,
                                      encoder_version="e"), fd / "item_multimodal.parquet", schemas.ITEM_MULTIMODAL)
    write_parquet_atomic(items.assign(categories=[["Drama"]] * len(ITEMS), release_year=1995),
                         fd / "item_profile.parquet", schemas.ITEM_PROFILE)
    ppm, version = _tiny_ppm()
    vecs = rng.standard_normal((len(ITEMS), DM)).astype(np.float32)
    write_parquet_atomic(items.assign(ppm_item_vec=list(vecs), ppm_item_version=version),
                         fd / "ppm_item_cache.parquet", schemas.PPM_ITEM_CACHE)
    seqs = behavior_sequences_reference(inter, L)
    write_parquet_atomic(seqs, fd / "behavior_sequences.parquet", schemas.BEHAVIOR_SEQUENCES)
    cache = encode_sequence_frame(seqs, ppm, ItemVectorTable(np.array(ITEMS), vecs), L, version)
    write_parquet_atomic(cache, fd / "ppm_user_cache.parquet", schemas.PPM_USER_CACHE)
    # user_profile: static demographics at the epoch, plus profile changes observed by an event at t, stamped
    # like every user-level row produced by an event: t + AS_OF_DELAY
    profile = pd.DataFrame({"user_id": [1, 2, 3, 1, 2, 2],
                            "event_timestamp": [pd.Timestamp(0, tz="UTC")] * 3 + [T + D, S0 + D, S1 + D],
                            "age": [20, 30, 40, 21, 31, 32], "gender": "F", "occupation": "x"})
    write_parquet_atomic(profile, fd / "user_profile.parquet", schemas.USER_PROFILE)
    windows = tuple(settings.counters.windows_days)
    stats = {}
    for entity in ("item", "user"):  # the counters' own definition, stamped by their rule
        stats[entity] = counters_reference(inter, entity, windows, TEST_PRIORS)
        write_parquet_atomic(stats[entity], fd / f"{entity}_stats.parquet", schemas.counter_schema(entity, windows))
    return {"seqs": seqs, "cache": cache, "stats": stats}


@pytest.fixture(scope="module")
def feast_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("pit")
    settings = Settings.from_env(env={}, artifacts_dir=root / "artifacts", sequence={"max_len": L},
                                 ppm={"d_model": DM}).ensure_dirs()
    tables = _write_feature_tables(settings, _interactions())
    fsmod.apply_definitions(settings)
    return settings, fsmod.get_store(settings), tables


#: (user, impression time, what it may see): the producing event and the impression in the same second / sub-second
PROBES = [
    (1, T - US, "before t"),
    (1, T, "at t (same second, same µs as the click on 10)"),
    (1, T + pd.Timedelta(milliseconds=500), "same second, 500 ms later"),
    (1, T + D, "first µs after t"),
    (2, S0, "at s0 (sub-second click on 12)"),
    (2, S0 + pd.Timedelta(microseconds=100), "100 µs after s0"),
    (2, S1, "at s1 (500 µs after s0, click on 10)"),
    (2, S1 + D, "1 µs after s1"),
]


def _historical(store, refs: list[str]) -> pd.DataFrame:
    ent = pd.DataFrame({"user_id": [u for u, _, _ in PROBES], "event_timestamp": [t for _, t, _ in PROBES],
                        "probe": np.arange(len(PROBES))})
    out = store.get_historical_features(entity_df=ent, features=refs, full_feature_names=False).to_df()
    assert len(out) == len(PROBES)
    return out.sort_values("probe").reset_index(drop=True)


def _lists(col) -> list:
    return [None if v is None or (isinstance(v, float) and np.isnan(v)) else [int(x) for x in v] for v in col]


def test_user_recent_items_same_second_and_sub_second(feast_env):
    _, store, _ = feast_env
    out = _historical(store, ["user_recent_items:hist_item_ids", "user_recent_items:hist_len"])
    assert _lists(out["hist_item_ids"]) == [
        [11], [11],          # at t: the click on 10 made at t is not visible
        [10, 11], [10, 11],  # 500 ms later (same second) and 1 µs after: visible
        [13], [12, 13],      # at s0: the s0 click is not visible; 100 µs later it is
        [12, 13],            # at s1: the s1 click is not visible
        [10, 12, 13],        # 1 µs after s1: visible
    ]


def test_ppm_user_cache_same_second_and_sub_second(feast_env):
    _, store, tables = feast_env
    out = _historical(store, ["ppm_user_cache:ppm_user_seq", "ppm_user_cache:ppm_seq_len",
                              "ppm_user_cache:ppm_user_version"])
    assert out["ppm_seq_len"].astype(int).tolist() == [1, 1, 2, 2, 1, 2, 2, 3]
    # the joined vector is exactly the cache row of the visible history (not the one of the event at t)
    cache = tables["cache"]
    for (user, ts, what), got in zip(PROBES, out["ppm_user_seq"]):
        visible = cache[(cache.user_id == user) & (cache.event_timestamp <= ts)].iloc[-1]
        np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(visible["ppm_user_seq"], np.float32))
        assert (visible["event_timestamp"] - D) < ts  # the producing event is strictly before the impression


def test_user_profile_same_second_and_sub_second(feast_env):
    _, store, _ = feast_env
    out = _historical(store, ["user_profile:age"])
    assert out["age"].astype(int).tolist() == [20, 20, 21, 21, 30, 31, 31, 32]


def test_user_stats_same_second_and_sub_second(feast_env):
    """user_stats through Feast: the impression at t never counts the event at t (nor other events of the same
    second / microsecond); 1 µs later it does."""
    _, store, _ = feast_env
    out = _historical(store, ["user_stats:user_impressions", "user_stats:user_clicks", "user_stats:user_impressions_7d"])
    # user 1: T0 (click), T-1min (no click), T (click on 10); user 2: T0, S0, S1 (all clicks)
    assert out["user_impressions"].astype(int).tolist() == [2, 2, 3, 3, 1, 2, 2, 3]
    assert out["user_clicks"].astype(int).tolist() == [1, 1, 2, 2, 1, 2, 2, 3]
    # T0 is 36 h before T: still inside the 7-day window
    assert out["user_impressions_7d"].astype(int).tolist() == [2, 2, 3, 3, 1, 2, 2, 3]


def test_item_stats_same_second_and_sub_second(feast_env):
    """item_stats through Feast: item 10 is shown at T (user 1) and at S1 (user 2, 500 µs after S0)."""
    _, store, _ = feast_env
    probes = [(10, T), (10, T + D), (10, S1), (10, S1 + D), (12, S0), (12, S0 + D)]
    ent = pd.DataFrame({"item_id": [i for i, _ in probes], "event_timestamp": [t for _, t in probes],
                        "probe": np.arange(len(probes))})
    out = store.get_historical_features(entity_df=ent, features=["item_stats:item_impressions",
                                                                 "item_stats:item_click_rate"],
                                        full_feature_names=False).to_df().sort_values("probe")
    imp = [0 if pd.isna(v) else int(v) for v in out["item_impressions"]]
    assert imp == [0, 1, 1, 2, 0, 1]  # NULL (no row yet) before the first impression: zero impressions
    assert out["item_click_rate"].iloc[1] == pytest.approx((1 + 10 * 0.5) / (1 + 10))


def test_pipeline_user_profile_is_static_at_the_epoch(tmp_path):
    """build_profiles stamps every user_profile row at the epoch (demographics known before any event):
    a row never appears at an event time, so no event can leak through it."""
    from ppm_platform.data.ingest import build_profiles, ingest_frames

    s = Settings.from_env(env={}, artifacts_dir=tmp_path / "a").ensure_dirs()
    inter = _interactions()
    ingest_frames(s, {"items": pd.DataFrame({"item_id": ITEMS, "title": list("abcd")}),
                      "users": pd.DataFrame({"user_id": [1, 2, 3], "age": [1, 2, 3]}), "interactions": inter}, None)
    build_profiles(s)
    prof = pd.read_parquet(s.features_dir / "user_profile.parquet")
    assert (prof["event_timestamp"] == pd.Timestamp(0, tz="UTC")).all() and len(prof) == 3


# ---- property: random event streams ------------------------------------------------------------------------------
def _expected_history(inter: pd.DataFrame, user: int, ts: pd.Timestamp, max_len: int) -> list[int]:
    """The last ``max_len`` clicks of ``user`` strictly before ``ts``, most recent first, ties item_id descending."""
    c = inter[(inter.user_id == user) & (inter.click == 1) & (inter.event_timestamp < ts)]
    c = c.sort_values(["event_timestamp", "item_id"], ascending=[False, False], kind="stable")
    return c["item_id"].astype(int).tolist()[:max_len]


def _asof(seqs: pd.DataFrame, ent: pd.DataFrame) -> list:
    """Feast's join rule (latest feature row with ``feature_ts <= entity_ts``) with pandas."""
    ent = ent.astype({"event_timestamp": "datetime64[us, UTC]"})
    seqs = seqs.astype({"event_timestamp": "datetime64[us, UTC]"})
    j = pd.merge_asof(ent.sort_values("event_timestamp").reset_index(),
                      seqs[["user_id", "event_timestamp", "hist_item_ids"]].rename(columns={"event_timestamp": "fts"})
                      .sort_values("fts"), left_on="event_timestamp", right_on="fts", by="user_id",
                      allow_exact_matches=True, direction="backward").set_index("index").sort_index()
    return [[] if not isinstance(h, np.ndarray) else [int(x) for x in h] for h in j["hist_item_ids"]]


_UNITS = {"us": US, "ms": pd.Timedelta(milliseconds=1), "s": pd.Timedelta(seconds=1)}
events = st.lists(st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(0, 40), st.sampled_from(list(_UNITS)),
                            st.booleans()), min_size=1, max_size=40)


def _frame(evts) -> pd.DataFrame:
    df = pd.DataFrame({"user_id": [e[0] for e in evts], "item_id": [e[1] for e in evts],
                       "event_timestamp": [T0 + e[2] * _UNITS[e[3]] for e in evts],
                       "click": [int(e[4]) for e in evts], "order": 0})
    df = df.drop_duplicates(["user_id", "item_id", "event_timestamp"])  # what ingest guarantees
    return df.astype({"click": "int8", "order": "int8", "event_timestamp": "datetime64[us, UTC]"})


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(evts=events, max_len=st.integers(1, 5), probe_offsets=st.lists(st.integers(-2, 2), max_size=3))
def test_property_asof_history_is_exactly_the_earlier_clicks(evts, max_len, probe_offsets):
    inter = _frame(evts)
    seqs = behavior_sequences_reference(inter, max_len)
    # impressions: every event itself, plus probes a few µs around each event time
    ent = pd.concat([inter[["user_id", "event_timestamp"]]] +
                    [inter[["user_id", "event_timestamp"]].assign(event_timestamp=lambda d, o=o: d.event_timestamp + o * US)
                     for o in probe_offsets], ignore_index=True)
    got = _asof(seqs, ent)
    for (user, ts), hist in zip(ent.itertuples(index=False), got):
        clicks = inter[(inter.user_id == user) & (inter.click == 1)]
        later = set(clicks.loc[clicks.event_timestamp >= ts, "item_id"]) - set(clicks.loc[clicks.event_timestamp < ts, "item_id"])
        assert not (set(hist) & later), "a click at or after the impression leaked"
        assert hist == _expected_history(inter, user, ts, max_len)


def test_spark_sequences_through_feast_never_leak(spark, tmp_path):
    """One random stream (ties at µs, ms and s) through the Spark job and Feast's get_historical_features."""
    from ppm_platform.features.behavior_sequences import compute_behavior_sequences

    rng = np.random.default_rng(5)
    n = 150
    evts = [(int(u), int(i), int(k), str(unit), bool(c)) for u, i, k, unit, c in zip(
        rng.integers(1, 6, n), rng.integers(10, 14, n), rng.integers(0, 30, n), rng.choice(list(_UNITS), n),
        rng.random(n) < 0.6)]
    inter = _frame(evts)
    s = Settings.from_env(env={}, artifacts_dir=tmp_path / "artifacts", sequence={"max_len": 3},
                          ppm={"d_model": DM}).ensure_dirs()
    _write_feature_tables(s, inter)
    write_parquet_atomic(inter, s.tables_dir / "interactions.parquet", schemas.INTERACTIONS)
    compute_behavior_sequences(spark, s, s.tables_dir / "interactions.parquet",
                               s.features_dir / "behavior_sequences.parquet")
    fsmod.apply_definitions(s)
    ent = pd.concat([inter[["user_id", "event_timestamp"]],
                     inter[["user_id", "event_timestamp"]].assign(event_timestamp=lambda d: d.event_timestamp + US)],
                    ignore_index=True)
    out = fsmod.get_training_frame(s, ent, service="idrec_user")
    assert len(out) == len(ent)
    leaks = mismatches = 0
    for r, h in zip(ent.itertuples(index=False), out["hist_item_ids"]):
        hist = [] if h is None or (isinstance(h, float) and np.isnan(h)) else [int(x) for x in h]
        expected = _expected_history(inter, r.user_id, r.event_timestamp, 3)
        mismatches += hist != expected
        clicks = inter[(inter.user_id == r.user_id) & (inter.click == 1)]
        leaks += bool(set(hist) - set(clicks.loc[clicks.event_timestamp < r.event_timestamp, "item_id"]))
    assert leaks == 0 and mismatches == 0
    # the counters' Spark job through Feast: a user's impressions as of t are exactly the user's events before t
    from ppm_platform.features.counters import compute_counters

    compute_counters(spark, s, s.tables_dir / "interactions.parquet")
    out = fsmod.get_training_frame(s, ent, service="idrec_user")
    got = out["user_impressions"].fillna(0).astype(int).tolist()
    want = [int(((inter.user_id == r.user_id) & (inter.event_timestamp < r.event_timestamp)).sum())
            for r in ent.itertuples(index=False)]
    assert got == want
