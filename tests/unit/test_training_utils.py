"""Split, metrics and slices against hand-computed values, the ME-row index, and the shared feature -> tensor
encoder."""

import numpy as np
import pandas as pd
import pytest

from ppm_platform.features.encoding import FeatureVectorizer
from ppm_platform.training.me_index import MEIndex
from ppm_platform.training.metrics import HELD_OUT_SLICE, auc, gauc, logloss, slice_masks
from ppm_platform.data.split import assign_split


def test_time_split_is_by_timestamp_and_never_splits_a_second():
    ts = pd.Series(pd.to_datetime([1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 10, 10], unit="s", utc=True))
    s = assign_split(ts, 0.8, 0.1)
    assert s.value_counts().to_dict() == {"train": 8, "valid": 2, "test": 2}
    assert ts[s == "train"].max() < ts[s == "valid"].min() <= ts[s == "valid"].max() < ts[s == "test"].min()
    with pytest.raises(ValueError):
        assign_split(ts, 0.95, 0.1)


def test_metrics_hand_computed():
    y = np.array([1, 0, 1, 0])
    s = np.array([0.9, 0.8, 0.3, 0.1])
    # pairs (pos, neg): (0.9>0.8) (0.9>0.1) (0.3<0.8) (0.3>0.1) -> 3/4
    assert auc(y, s) == pytest.approx(0.75)
    assert logloss(np.array([1, 0]), np.array([0.8, 0.4])) == pytest.approx(-(np.log(0.8) + np.log(0.6)) / 2)
    users = np.array([1, 1, 1, 2, 2, 3])
    yy = np.array([1, 0, 0, 1, 0, 1])
    ss = np.array([0.9, 0.5, 0.95, 0.2, 0.6, 0.5])
    g = gauc(users, yy, ss)
    # user 1: pos 0.9 vs negs 0.5 (win), 0.95 (loss) -> 0.5 (3 imps); user 2: 0.2 < 0.6 -> 0 (2 imps); user 3 skipped
    assert g.gauc == pytest.approx((0.5 * 3 + 0.0 * 2) / 5)
    assert (g.users_used, g.users_skipped, g.impressions_used) == (2, 1, 5)


def _rows():
    return pd.DataFrame({
        "user_id": [1, 2, 3], "item_id": [10, 11, 99],
        "age": [17, 30, None], "gender": ["M", "F", None], "occupation": ["a", "b", "zzz"],
        "categories": [["Drama"], ["Comedy", "Drama"], None],
        "hist_item_ids": [[11, 10], None, [10, 99, 11]],
        "ppm_user_seq": [list(np.arange(6, dtype=np.float32)), None, list(np.ones(6, np.float32))],
        "ppm_seq_len": [2, None, 3],
        "ppm_item_vec": [[1.0, 2.0], [3.0, 4.0], None],
    })


def test_feature_vectorizer_train_vocab_and_padding():
    df = _rows()
    enc = FeatureVectorizer.fit(df.iloc[:2], max_len=3, ppm_dim=2)
    x = enc.transform(df)
    assert x["user_idx"].tolist() == [2, 3, 1]            # user 3 unseen in train -> OOV
    assert x["item_idx"].tolist() == [2, 3, 1]
    # age<18 -> bucket 0 (+2); missing (no profile row) and unseen values -> unknown (OOV 1), what content dropout trains
    assert x["user_side"].tolist() == [[2, 3, 2], [4, 2, 3], [1, 1, 1]]
    assert x["item_content"].tolist() == [1, 1, 0]        # item 99 has no categories / PPM vector: no content
    assert x["user_dense"].shape == (3, 0) and x["item_dense"].shape == (3, 0)  # no counters read
    assert x["item_genres"].tolist() == [[0, 1], [1, 1], [0, 0]]
    assert x["hist_item_idx"].tolist() == [[3, 2, 0], [0, 0, 0], [2, 1, 3]]
    assert x["hist_mask"].tolist() == [[1, 1, 0], [0, 0, 0], [1, 1, 1]]
    assert x["ppm_user_seq"].shape == (3, 3, 2) and x["ppm_user_seq"][0, 2].tolist() == [4.0, 5.0]
    assert x["ppm_seq_mask"].tolist() == [[1, 1, 0], [0, 0, 0], [1, 1, 1]]
    assert x["ppm_item_vec"].tolist() == [[1, 2], [3, 4], [0, 0]]
    # round trip through JSON-able dict gives the same tensors (the serving path loads it this way)
    x2 = FeatureVectorizer.from_dict(enc.to_dict()).transform(df)
    assert all(np.array_equal(x[k], x2[k]) for k in x)


def test_feature_vectorizer_counters_and_cold_entities():
    """Counter inputs: log counts and rates recomputed from the counts with the train prior, standardized on
    the train rows; a NULL counter row (an entity with no event yet, or unknown online) is exactly a
    zero-impression entity; min_count sends rare ids to the shared OOV row."""
    from ppm_platform.features.encoding import dense_names

    df = _rows()
    n = {"user_impressions": [3, 0, None], "user_clicks": [2, 0, None], "user_orders": [1, 0, None],
         "item_impressions": [10, 1, None], "item_clicks": [5, 0, None], "item_orders": [0, 0, None]}
    df = df.assign(**n, user_id=[1, 1, 3])
    prior = {"click": 0.6, "order": 0.25, "strength": 10.0}
    enc = FeatureVectorizer.fit(df.iloc[:2], max_len=3, ppm_dim=2, min_count=2, counter_windows=(), rate_prior=prior)
    assert dense_names("item", ()) == ["item_log_impressions", "item_log_clicks", "item_log_orders",
                                       "item_click_rate", "item_order_rate"]
    assert enc.users == {"1": 2}                          # user 1 has 2 train rows; min_count=2
    assert enc.items == {}                                # items 10, 11 have one row each -> OOV
    x = enc.transform(df)
    assert x["user_idx"].tolist() == [2, 2, 1] and x["item_idx"].tolist() == [1, 1, 1]
    raw = np.array([[np.log1p(10), np.log1p(5), 0.0, (5 + 6) / 20, (0 + 2.5) / 20],
                    [np.log1p(1), 0.0, 0.0, 6 / 11, 2.5 / 11],
                    [0.0, 0.0, 0.0, 0.6, 0.25]], np.float32)  # row 2: NULL counters = zero impressions
    mean, std = raw[:2].mean(0), raw[:2].std(0)
    std[std == 0] = 1.0                                   # a constant input (no orders) stays 0
    np.testing.assert_allclose(x["item_dense"], (raw - mean) / std, rtol=1e-5, atol=1e-6)
    unknown = df.iloc[[2]].assign(item_impressions=0, item_clicks=0, item_orders=0)
    np.testing.assert_array_equal(enc.transform(unknown)["item_dense"], x["item_dense"][[2]])
    with pytest.raises(KeyError, match="user_impressions"):
        enc.transform(df.drop(columns="user_impressions"))
    with pytest.raises(ValueError, match="rate_prior"):
        FeatureVectorizer.fit(df, max_len=3, ppm_dim=2, counter_windows=())


def test_feature_vectorizer_rejects_wrong_cache_width():
    df = _rows()
    enc = FeatureVectorizer.fit(df, max_len=3, ppm_dim=4)
    with pytest.raises(ValueError, match="row 0"):
        enc.transform(df)


def test_ppm_asof_join_never_sees_the_producing_event(tmp_path):
    """PPM pre-training joins sequences as Feast does (feature_ts <= event_ts): the row produced by the
    clicks at t is stamped t + 1 µs, so the impression at t sees the previous row only."""
    from ppm_platform.io import write_parquet_atomic
    from ppm_platform.data import schemas
    from ppm_platform.training.ppm_train import asof_sequences

    t = pd.Timestamp("2024-01-01 00:00:10", tz="UTC")
    us = pd.Timedelta(microseconds=1)
    seq = pd.DataFrame({"user_id": [1, 1], "event_timestamp": [t - pd.Timedelta(seconds=5) + us, t + us],
                        "hist_item_ids": [[7], [8, 7]], "hist_age_s": [[0.0], [0.0, 5.0]], "hist_len": [1, 2]})
    write_parquet_atomic(seq, tmp_path / "seq.parquet", schemas.BEHAVIOR_SEQUENCES)
    imp = pd.DataFrame({"user_id": [1, 1, 1, 2], "item_id": [8, 9, 9, 9],
                        "event_timestamp": [t, t + us, t - pd.Timedelta(seconds=6), t], "click": [1, 0, 0, 1]})
    out = asof_sequences(imp, tmp_path / "seq.parquet")
    assert list(out["item_id"]) == [8, 9, 9, 9]              # input order kept
    assert list(out["hist_item_ids"].iloc[0]) == [7]          # at t: not the row produced at t
    assert list(out["hist_item_ids"].iloc[1]) == [8, 7]       # 1 µs later: visible
    assert pd.isna(out["hist_len"].iloc[2])                    # before any click: null, row kept
    assert pd.isna(out["hist_len"].iloc[3])                    # user without clicks


def test_slice_masks_hand_computed():
    test = pd.DataFrame({"user_id": [1, 2, 3], "item_id": [10, 11, 12]})
    m = slice_masks(test, pd.Series({10: 11, 11: 10}), {1, 2}, held_out_items={12})
    assert {k: v.tolist() for k, v in m.items()} == {
        "all": [True, True, True], "cold_items": [False, True, True], "warm_items": [True, False, False],
        "new_users": [False, False, True], HELD_OUT_SLICE: [False, False, True]}
    assert HELD_OUT_SLICE not in slice_masks(test, pd.Series(dtype="int64"), set())


def test_me_index_rows_padding_and_missing_ids():
    idx = MEIndex(np.array([30, 10, 20]), np.arange(6, dtype=np.float32).reshape(3, 2))
    assert idx.table.shape == (4, 2) and not idx.table[0].any()
    rows = idx.rows(np.array([10, 20, 30]))
    assert rows.tolist() == [2, 3, 1] and idx.table[rows].tolist() == [[2, 3], [4, 5], [0, 1]]
    # padded positions (mask 0) index row 0 whatever id they hold
    assert idx.history_rows(np.array([[20, -1], [99, -1]]), np.array([[1, 0], [0, 0]])).tolist() == [[3, 0], [0, 0]]
    with pytest.raises(KeyError, match="item_id 99 has no item_multimodal row"):
        idx.rows(np.array([10, 99]))
    with pytest.raises(KeyError, match=r"history item_id 99 has no item_multimodal row \(position \(1, 0\)"):
        idx.history_rows(np.array([[20, -1], [99, -1]]), np.array([[1, 0], [1, 0]]))
