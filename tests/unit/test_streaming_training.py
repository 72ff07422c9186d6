"""Bounded-memory trainers: the on-disk, chunk-at-a-time forms of PPM pre-training and
Base/URM training give the same model as the in-memory forms when the data fit in one chunk, are
deterministic by seed when they do not, and the PPM item tower's per-distinct-item path is exact."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from ppm_platform.config import Settings
from ppm_platform.data import schemas
from ppm_platform.io import write_parquet_atomic
from ppm_platform.testing.frames import with_counters
from ppm_platform.features.encoding import FeatureVectorizer
from ppm_platform.training.streaming import ParquetChunks, chunk_ranges

T0 = pd.Timestamp("2024-01-01", tz="UTC")
L, D, N_ITEMS = 5, 8, 15
CACHE_VERSION = "c0ffee000001"  # the ppm_version of the synthetic training set's cache rows


def _settings(tmp_path, **kw) -> Settings:
    cfg = {"ppm": {"d_model": D, "n_layers": 1, "n_heads": 2, "ff_dim": 16, "readout_hidden": 8, "epochs": 2,
                   "batch_size": 32},
           "urm": {"epochs": 2, "emb_dim": 4, "dnn_hidden": [16], "expert_hidden": 8, "tower_hidden": 8,
                   "batch_size": 32, "id_dropout": 0.1},
           "sequence": {"max_len": L}}
    for k, v in kw.items():
        cfg.setdefault(k, {}).update(v)
    return Settings.from_env(env={}, artifacts_dir=tmp_path, **cfg)


def _interactions(n: int = 600, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    click = (rng.random(n) < 0.4).astype("int8")
    return pd.DataFrame({"user_id": rng.integers(1, 25, n).astype("int64"),
                         "item_id": rng.integers(1, N_ITEMS + 1, n).astype("int64"),
                         "event_timestamp": T0 + pd.to_timedelta(np.sort(rng.integers(0, 30 * 86400, n)), unit="s"),
                         "click": click, "order": (click * (rng.random(n) < 0.5)).astype("int8")})


def _sequences(inter: pd.DataFrame) -> pd.DataFrame:
    """Per click, the user's earlier clicks (most recent first), stamped 1 µs after the click."""
    rows = []
    for uid, g in inter[inter["click"] == 1].groupby("user_id"):
        hist: list[tuple[int, pd.Timestamp]] = []
        for _, r in g.iterrows():
            hist.insert(0, (int(r["item_id"]), r["event_timestamp"]))
            ts = r["event_timestamp"] + pd.Timedelta(microseconds=1)
            h = hist[:L + 2]  # longer than L on purpose: the reader truncates
            rows.append({"user_id": uid, "event_timestamp": ts, "hist_item_ids": [i for i, _ in h],
                         "hist_age_s": [float((ts - t).total_seconds()) for _, t in h], "hist_len": len(h)})
    return pd.DataFrame(rows)


def _me(seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    from ppm_platform.config import EncoderSettings

    TEXT_DIM, IMAGE_DIM = EncoderSettings().text_dim, EncoderSettings().image_dim

    return pd.DataFrame({"item_id": np.arange(1, N_ITEMS + 1, dtype="int64"),
                         "text_emb": list(rng.normal(size=(N_ITEMS, TEXT_DIM)).astype("float32")),
                         "image_emb": list(rng.normal(size=(N_ITEMS, IMAGE_DIM)).astype("float32")),
                         "has_image": np.ones(N_ITEMS, "float32")})


@pytest.fixture()
def ppm_data(tmp_path):
    inter = _interactions()
    inter.to_parquet(tmp_path / "interactions.parquet", index=False)
    write_parquet_atomic(_sequences(inter), tmp_path / "seq.parquet", schemas.BEHAVIOR_SEQUENCES)
    return inter, _me()


def test_chunk_ranges_and_reads_cross_row_groups(tmp_path):
    assert chunk_ranges(10, 4) == [(0, 4), (4, 4), (8, 2)]
    assert chunk_ranges(0, 4) == []
    with pytest.raises(ValueError):
        chunk_ranges(5, 0)
    pq.write_table(pa.table({"x": np.arange(23)}), tmp_path / "t.parquet", row_group_size=5)
    ch = ParquetChunks(tmp_path / "t.parquet", 7)
    got = [ch.read(k).column("x").to_pylist() for k in range(len(ch))]
    assert got == [list(range(s, min(s + 7, 23))) for s in range(0, 23, 7)]
    assert sorted(ch.order(np.random.default_rng(0)).tolist()) == [0, 1, 2, 3]
    assert ch.tail(8).column("x").to_pylist() == list(range(15, 23))   # crosses the 15..19 / 20..22 groups
    assert ch.tail(100).column("x").to_pylist() == list(range(23))
    assert ch.tail(0, columns=["x"]).num_rows == 0


def test_ppm_example_file_equals_in_memory_examples(tmp_path, ppm_data):
    from ppm_platform.training.ppm_train import build_examples, iter_split, write_examples

    inter, me = ppm_data
    s = _settings(tmp_path)
    mem = build_examples(s, inter, me, tmp_path / "seq.parquet")
    f = write_examples(s, tmp_path / "interactions.parquet", me, tmp_path / "seq.parquet", tmp_path / "ex.parquet")
    assert f.count(0) == (mem.split == "train").sum() and f.count(1) == (mem.split == "valid").sum()
    for split in ("train", "valid"):
        a, b = next(iter_split(mem, split)), next(iter_split(f, split))
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{split}/{k}")
    assert (f.arrays(pq.read_table(f.path), 0)["mask"].sum(1) == L).any()  # histories truncated to L


def test_ppm_pretraining_streamed_equals_in_memory_and_is_deterministic(tmp_path, ppm_data):
    from ppm_platform.training.ppm_train import build_examples, pretrain_ppm, write_examples

    inter, me = ppm_data
    s = _settings(tmp_path)
    mem = build_examples(s, inter, me, tmp_path / "seq.parquet")
    f = write_examples(s, tmp_path / "interactions.parquet", me, tmp_path / "seq.parquet", tmp_path / "ex.parquet")
    a, ma = pretrain_ppm(s, mem)
    b, mb = pretrain_ppm(s, f)  # one chunk: the same SGD order
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert ma["valid_click_auc"] == mb["valid_click_auc"]
    small = _settings(tmp_path, ppm={"chunk_rows": 100})  # several chunks: shuffled chunk order, still seeded
    f2 = write_examples(small, tmp_path / "interactions.parquet", me, tmp_path / "seq.parquet", tmp_path / "ex2.parquet")
    assert len(f2.chunks) > 3
    c, mc = pretrain_ppm(small, f2)
    d, md = pretrain_ppm(small, f2)
    assert all(torch.equal(v, d.state_dict()[k]) for k, v in c.state_dict().items())
    assert mc["train_rows"] == ma["train_rows"] and np.isfinite(mc["valid_click_auc"])


def test_ppm_item_offsets_are_pretraining_only(tmp_path, ppm_data):
    """ppm.item_bias: per-item logit offsets absorb item popularity during pre-training and are discarded: the
    saved PPM has the same parameters as without them (ID-free), the selection metric is the objective's, and
    the reported validation AUC is the saved model's."""
    from ppm_platform.training.ppm_train import build_examples, predict_split, pretrain_ppm

    inter, me = ppm_data
    s = _settings(tmp_path, ppm={"item_bias": True})
    ex = build_examples(s, inter, me, tmp_path / "seq.parquet")
    with_bias, m = pretrain_ppm(s, ex)
    without, m0 = pretrain_ppm(_settings(tmp_path, ppm={"item_bias": False}), ex)
    assert set(with_bias.state_dict()) == set(without.state_dict())  # nothing item-indexed is kept
    assert m["item_bias"] and not m0["item_bias"]
    assert m["valid_click_auc_pretraining"] == max(h["valid_click_auc"] for h in m["epochs"])
    yv, pv = predict_split(with_bias, ex, "valid")
    from ppm_platform.training.metrics import auc

    assert m["valid_click_auc"] == pytest.approx(auc(yv, pv), abs=1e-12)
    # the offsets changed what the towers learned
    assert not all(torch.equal(v, without.state_dict()[k]) for k, v in with_bias.state_dict().items())


def test_ppm_logits_per_distinct_item_is_exact():
    from ppm_platform.models.ppm import PPM, PPMConfig
    from ppm_platform.training.ppm_train import _ppm_logits

    torch.manual_seed(0)
    ppm = PPM(PPMConfig(me_dim=24, d_model=8, n_layers=1, n_heads=2, ff_dim=16, max_len=4, readout_hidden=8)).eval()
    g = torch.Generator().manual_seed(0)
    me = torch.randn(400, 24, generator=g)  # catalog larger than B * (L + 1): the torch.unique path
    target, hist = torch.randint(1, 400, (6,), generator=g), torch.randint(1, 400, (6, 4), generator=g)
    mask = (torch.rand(6, 4, generator=g) < 0.7).float()
    age = torch.rand(6, 4, generator=g) * 1e5
    with torch.no_grad():
        fast = _ppm_logits(ppm, me, target, hist, age, mask)
        full = ppm(me[target], me[hist], age, mask)
        catalog = _ppm_logits(ppm, me[:30], target % 30, hist % 30, age, mask)  # the catalog-wide path
        full_c = ppm(me[:30][target % 30], me[:30][hist % 30], age, mask)
    torch.testing.assert_close(fast, full, rtol=0, atol=1e-6)
    torch.testing.assert_close(catalog, full_c, rtol=0, atol=1e-6)


def _training_set(n: int = 700, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    inter = with_counters(_interactions(n, seed))
    seq_present = rng.random(n) < 0.8
    return inter.assign(
        age=pd.array(np.where(rng.random(n) < 0.1, None, rng.integers(15, 70, n)), dtype="Int64"),
        gender=np.where(rng.random(n) < 0.5, "F", "M"),
        occupation=rng.choice(["a", "b", "c", None], n),
        hist_item_ids=[list(rng.integers(1, N_ITEMS + 1, rng.integers(0, L + 1))) for _ in range(n)],
        ppm_user_seq=[list(rng.normal(size=L * D).astype("float32")) if p else None for p in seq_present],
        ppm_seq_len=pd.array(np.where(seq_present, rng.integers(0, L + 1, n), None), dtype="Int64"),
        categories=[list(rng.choice(["x", "y", "z"], rng.integers(0, 3), replace=False)) for _ in range(n)],
        ppm_item_vec=[list(rng.normal(size=D).astype("float32")) for _ in range(n)],
        # the cache rows' version (the URM is labelled with it): null where the user has no cache row yet
        ppm_user_version=[CACHE_VERSION if p else None for p in seq_present], ppm_item_version=CACHE_VERSION)


def _same_vectorizer(a: FeatureVectorizer, b: FeatureVectorizer) -> bool:
    """Equal vocabularies and settings; dense moments equal up to float rounding (summed per chunk)."""
    da, db = a.to_dict(), b.to_dict()
    for k in ("dense_mean", "dense_std"):
        for e in set(da[k]) | set(db[k]):
            np.testing.assert_allclose(da[k][e], db[k][e], rtol=1e-9, atol=1e-12)
    return {k: v for k, v in da.items() if not k.startswith("dense_")} == \
        {k: v for k, v in db.items() if not k.startswith("dense_")}


def test_feature_vectorizer_fit_chunks_equals_fit():
    df = _training_set()
    kw = dict(min_count=2, counter_windows=(7, 30), rate_prior={"click": 0.4, "order": 0.2, "strength": 10.0})
    whole = FeatureVectorizer.fit(df, L, D, **kw)
    parts = FeatureVectorizer.fit_chunks((df.iloc[s:s + 97][FeatureVectorizer.fit_columns((7, 30))]
                                       for s in range(0, len(df), 97)), L, D, **kw)
    assert parts.users == whole.users and parts.items == whole.items and parts.genres == whole.genres
    for entity in ("user", "item"):  # moments summed chunk by chunk: equal up to float rounding
        np.testing.assert_allclose(parts.dense_mean[entity], whole.dense_mean[entity], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(parts.dense_std[entity], whole.dense_std[entity], rtol=1e-9, atol=1e-12)
    # min_count 2: an id seen once in the rows is out of the vocabulary (shares OOV), one seen twice is in
    seen = df["user_id"].value_counts()
    assert set(whole.users) == {str(u) for u in seen[seen >= 2].index}


@pytest.mark.parametrize("use_ppm", [False, True])
def test_ctr_training_streamed_equals_in_memory(tmp_path, use_ppm):
    from ppm_platform.models.ppm import PPM, PPMConfig
    from ppm_platform.training.urm_train import train_ctr_model

    df = _training_set()
    path = tmp_path / "training_set.parquet"
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path, row_group_size=64)
    s = _settings(tmp_path)
    torch.manual_seed(1)
    ppm = PPM(PPMConfig(me_dim=12, d_model=D, n_layers=1, n_heads=2, ff_dim=16, max_len=L, readout_hidden=8))
    ppm = ppm if use_ppm else None
    a = train_ctr_model(s, df, use_ppm=use_ppm, ppm=ppm)
    b = train_ctr_model(s, path, use_ppm=use_ppm, ppm=ppm)  # one chunk: identical model and metrics
    assert a.vectorizer == b.vectorizer
    assert all(torch.equal(v, b.model.state_dict()[k]) for k, v in a.model.state_dict().items())
    assert a.metrics["rows"] == b.metrics["rows"]
    for split in ("valid", "test"):
        for sl in ("all", "cold_items", "warm_items", "new_users"):
            assert a.metrics[split][sl].get("impressions") == b.metrics[split][sl].get("impressions")
        np.testing.assert_equal(a.metrics[split]["all"]["click"], b.metrics[split]["all"]["click"])
    small = _settings(tmp_path, urm={"chunk_rows": 150})  # several chunks: seeded, deterministic
    c = train_ctr_model(small, path, use_ppm=use_ppm, ppm=ppm)
    d = train_ctr_model(small, path, use_ppm=use_ppm, ppm=ppm)
    assert _same_vectorizer(c.vectorizer, a.vectorizer)
    assert all(torch.equal(v, d.model.state_dict()[k]) for k, v in c.model.state_dict().items())
    assert c.metrics["rows"] == a.metrics["rows"]
    recent = train_ctr_model(small, path, use_ppm=use_ppm, ppm=ppm, recent_train_fraction=0.5)
    ref = train_ctr_model(s, df, use_ppm=use_ppm, ppm=ppm, recent_train_fraction=0.5)
    assert recent.metrics["rows"] == ref.metrics["rows"] and _same_vectorizer(recent.vectorizer, ref.vectorizer)


def test_urm_is_labelled_with_the_cache_version_it_trained_on_and_refuses_other_versions(tmp_path):
    """The URM's cache_version is that of the training set's cache rows (null rows of users
    with no cache row are fine); a training set of mixed versions, or of another version than the PPM the URM
    warm-starts from, is refused before any fitting, naming the versions and their row counts."""
    from ppm_platform.models.ppm import PPM, PPMConfig
    from ppm_platform.training.urm_train import train_ctr_model

    df = _training_set()
    n_null = int(df["ppm_user_version"].isna().sum())
    assert 0 < n_null < len(df)
    s = _settings(tmp_path, urm={"epochs": 1})
    torch.manual_seed(1)
    ppm = PPM(PPMConfig(me_dim=12, d_model=D, n_layers=1, n_heads=2, ff_dim=16, max_len=L, readout_hidden=8))
    path = tmp_path / "training_set.parquet"
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path, row_group_size=64)
    urm = train_ctr_model(_settings(tmp_path, urm={"epochs": 1, "chunk_rows": 150}), path, use_ppm=True, ppm=ppm,
                          ppm_version=CACHE_VERSION)
    assert urm.cache_version == CACHE_VERSION
    assert urm.metrics["cache_versions"] == {
        "ppm_user_version": {"versions": {CACHE_VERSION: len(df) - n_null}, "null_rows": n_null},
        "ppm_item_version": {"versions": {CACHE_VERSION: len(df)}, "null_rows": 0}}
    assert train_ctr_model(s, df, use_ppm=False).cache_version is None  # Base reads no PPM cache

    # the daily path rewrote the last 100 rows' days with a retrained PPM: two versions in one training set
    mixed = df.copy()
    mixed.loc[mixed.index[-100:], ["ppm_user_version", "ppm_item_version"]] = "retrained000"
    n_null_old = int(mixed["ppm_user_version"].isna().sum())  # only in the older rows now
    with pytest.raises(ValueError, match=rf"2 ppm_versions \(ppm_user_version: {CACHE_VERSION} "
                                         rf"\({len(df) - n_null_old - 100} rows\), retrained000 \(100 rows\), "
                                         rf"null {n_null_old} rows; ppm_item_version: {CACHE_VERSION} "
                                         rf"\({len(df) - 100} rows\), retrained000 \(100 rows\).*null version.*fine"):
        train_ctr_model(s, mixed, use_ppm=True, ppm=ppm, ppm_version=CACHE_VERSION)
    with pytest.raises(ValueError, match="2 ppm_versions"):  # no expected version: mixed is still refused
        train_ctr_model(s, mixed, use_ppm=True, ppm=ppm)
    # the PPM was retrained but the training set is the old one
    with pytest.raises(ValueError, match=rf"hold ppm_version {CACHE_VERSION} .*{len(df)} rows.* warm-starts from the "
                                         r"PPM of version retrained000"):
        train_ctr_model(s, path, use_ppm=True, ppm=ppm, ppm_version="retrained000")
    with pytest.raises(ValueError, match="no PPM cache row"):
        train_ctr_model(s, df.assign(ppm_user_version=None, ppm_item_version=None), use_ppm=True, ppm=ppm)
    with pytest.raises(KeyError, match="ppm_item_version"):
        train_ctr_model(s, df.drop(columns=["ppm_item_version"]), use_ppm=True, ppm=ppm)
