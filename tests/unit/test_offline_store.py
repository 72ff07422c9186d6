"""ppm_platform.feature_store.offline_store (ASOF point-in-time join as a Feast offline store) against Feast's own DuckDB
store on the same registry and random synthetic feature tables: equal results row for row, including timestamp
ties (created_timestamp breaks them), TTL expiry, entity rows before any feature row, duplicate entity rows, a
two-key view, a field mapping, list features and full feature names; plus the streaming read."""

from __future__ import annotations

import warnings
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, RepoConfig, ValueType
from feast.types import Array, Float32, Int64, String

from ppm_platform.feature_store.offline_store import AsofRetrievalJob
from ppm_platform.feature_store.repo_config import ASOF_STORE_TYPE

T0 = datetime(2024, 3, 1, tzinfo=timezone.utc)
N_USERS, N_ITEMS = 40, 15


def _hours(rng, n, lo=0, hi=240):
    """Whole-hour timestamps: entity and feature rows share values, so ``<=`` ties are exercised."""
    return [T0 + timedelta(hours=int(h)) for h in rng.integers(lo, hi, n)]


def _unique(df, keys):
    return df.drop_duplicates([*keys, "ts"]).reset_index(drop=True)


def _write_tables(root, rng):
    n = 600
    user = pd.DataFrame({"user_id": rng.integers(0, N_USERS, n), "ts": _hours(rng, n, 20),
                         "a": rng.integers(0, 1000, n), "seq": [list(rng.random(4).astype("float32")) for _ in range(n)],
                         "s": [f"s{i}" for i in range(n)]})
    user = _unique(user, ["user_id"])  # equal (key, ts, created) would be an arbitrary pick in both stores
    # ties: copies of 100 rows at the same (user, ts), created later, with other values
    ties = user.sample(100, random_state=1).assign(a=lambda d: d.a + 5000, s=lambda d: d.s + "_late")
    user["created"] = T0
    ties["created"] = T0 + timedelta(days=30)
    user = pd.concat([user, ties], ignore_index=True)
    ttl = _unique(pd.DataFrame({"user_id": rng.integers(0, N_USERS, n), "ts": _hours(rng, n),
                                "b": rng.random(n).astype("float32")}), ["user_id"])
    pair = _unique(pd.DataFrame({"user_id": rng.integers(0, N_USERS, n), "item_id": rng.integers(0, N_ITEMS, n),
                                 "ts": _hours(rng, n), "c": rng.integers(0, 100, n)}), ["user_id", "item_id"])
    item = _unique(pd.DataFrame({"item_id": rng.integers(0, N_ITEMS, 80), "ts": _hours(rng, 80),
                                 "src_d": [f"d{i}" for i in range(80)]}), ["item_id"])
    for name, df in {"user": user, "ttl": ttl, "pair": pair, "item": item}.items():
        df.to_parquet(root / f"{name}.parquet")


def _definitions(root):
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
    item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.INT64)

    def src(name, **kw):
        return FileSource(name=name, path=str(root / f"{name}.parquet"), timestamp_field="ts", **kw)

    views = [
        FeatureView(name="v_user", entities=[user], ttl=timedelta(0), source=src("user", created_timestamp_column="created"),
                    schema=[Field(name="user_id", dtype=Int64), Field(name="a", dtype=Int64),
                            Field(name="seq", dtype=Array(Float32)), Field(name="s", dtype=String)]),
        FeatureView(name="v_ttl", entities=[user], ttl=timedelta(days=2), source=src("ttl"),
                    schema=[Field(name="user_id", dtype=Int64), Field(name="b", dtype=Float32)]),
        FeatureView(name="v_pair", entities=[user, item], ttl=timedelta(0), source=src("pair"),
                    schema=[Field(name="user_id", dtype=Int64), Field(name="item_id", dtype=Int64),
                            Field(name="c", dtype=Int64)]),
        FeatureView(name="v_item", entities=[item], ttl=timedelta(0), source=src("item", field_mapping={"src_d": "d"}),
                    schema=[Field(name="item_id", dtype=Int64), Field(name="d", dtype=String)]),
    ]
    return [user, item, *views]


def _store(root, offline_type):
    cfg = RepoConfig(project="asof_test", provider="local", registry=str(root / "registry.db"),
                     online_store={"type": "sqlite", "path": str(root / "online.db")},
                     offline_store={"type": offline_type}, entity_key_serialization_version=3)
    cfg.repo_path = root
    return FeatureStore(config=cfg)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("asof")
    rng = np.random.default_rng(11)
    _write_tables(root, rng)
    feast_store = _store(root, "duckdb")
    feast_store.apply(_definitions(root))
    n = 1500
    entity = pd.DataFrame({"user_id": rng.integers(0, N_USERS + 3, n),  # 3 users without any feature row
                           "item_id": rng.integers(0, N_ITEMS, n), "event_timestamp": _hours(rng, n, 0, 260),
                           "label": rng.integers(0, 2, n)})
    entity = pd.concat([entity, entity.iloc[:50]], ignore_index=True)  # duplicate entity rows
    entity["rid"] = np.arange(len(entity))
    return feast_store, _store(root, ASOF_STORE_TYPE), entity


FEATURES = ["v_user:a", "v_user:seq", "v_user:s", "v_ttl:b", "v_pair:c", "v_item:d"]


def _normal(df, features):
    """Rows by ``rid``; lists as tuples and missing values as None, so frames compare exactly."""
    df = df.sort_values("rid").reset_index(drop=True)
    for c in features:
        df[c] = [None if v is None or (np.isscalar(v) and pd.isna(v)) else
                 (tuple(np.round(np.asarray(v, dtype="float64"), 6)) if not np.isscalar(v) else v) for v in df[c]]
    df["event_timestamp"] = pd.to_datetime(df["event_timestamp"], utc=True)
    return df


@pytest.mark.parametrize("full_names", [False, True])
def test_asof_store_equals_feasts_duckdb_store(stores, full_names):
    feast_store, asof_store, entity = stores
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        want = feast_store.get_historical_features(entity_df=entity.copy(), features=FEATURES,
                                                   full_feature_names=full_names).to_df()
        job = asof_store.get_historical_features(entity_df=entity.copy(), features=FEATURES,
                                                 full_feature_names=full_names)
        got = job.to_df()
    assert isinstance(job, AsofRetrievalJob)
    names = [c for c in want.columns if c not in entity.columns]
    assert len(names) == 6 and all(n.startswith("v_") == full_names for n in names)
    assert list(got.columns) == list(want.columns)
    assert len(got) == len(want) == len(entity)
    w, g = _normal(want, names), _normal(got, names)
    pd.testing.assert_frame_equal(g, w, check_dtype=False)
    # the cases the comparison covers really occur in the data
    a = "v_user__a" if full_names else "a"
    b = "v_ttl__b" if full_names else "b"
    assert (g[a] >= 5000).sum() > 0  # a tie won by the later created row
    assert g[b].isna().sum() > 0 and g[b].notna().sum() > 0  # expired by ttl / fresh
    assert g.loc[g.user_id >= N_USERS, a].isna().all()  # users without feature rows


def test_asof_to_arrow_batches_streams_in_order(stores):
    _, asof_store, entity = stores
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        job = asof_store.get_historical_features(entity_df=entity.copy(), features=FEATURES)
        batches = list(job.to_arrow_batches(order_by=["event_timestamp", "rid"], batch_rows=200))
        whole = job.to_df()
    assert max(b.num_rows for b in batches) <= 200 and sum(b.num_rows for b in batches) == len(entity)
    streamed = pd.concat([b.to_pandas() for b in batches], ignore_index=True)
    want_order = entity.sort_values(["event_timestamp", "rid"])["rid"].to_numpy()
    np.testing.assert_array_equal(streamed["rid"].to_numpy(), want_order)
    pd.testing.assert_frame_equal(_normal(streamed, FEATURES_SHORT), _normal(whole, FEATURES_SHORT), check_dtype=False)


FEATURES_SHORT = [f.split(":")[1] for f in FEATURES]
