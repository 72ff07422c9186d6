"""Semantic ids (features/semantic_ids.py): residual k-means codes, their version, the codebook artifact, the
Spark assignment job and its table-quality figures, on small synthetic vectors."""

import numpy as np
import pandas as pd
import pytest

from ppm_platform.config import Settings
from ppm_platform.data import catalog, schemas
from ppm_platform.features.semantic_ids import (
    Codebook,
    assign_codes,
    code_frame,
    fit_residual_kmeans,
    reconstruct,
    semantic_id_table_quality,
    sid_version_for,
)
from ppm_platform.io import write_parquet_atomic


def _vectors(n=300, d=8, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((6, d)) * 3
    return (centers[rng.integers(0, 6, n)] + rng.standard_normal((n, d))).astype(np.float32)


def test_more_levels_reconstruct_better_and_codes_are_in_range():
    x = _vectors()
    errs = []
    for levels in (1, 2, 3):
        c = fit_residual_kmeans(x, levels, 8, seed=0, n_init=2)
        assert c.shape == (levels, 8, x.shape[1]) and c.dtype == np.float32
        codes = assign_codes(x, c)
        assert codes.dtype == np.int64 and codes.shape == (len(x), levels)
        assert codes.min() >= 0 and codes.max() < 8
        errs.append(float(((x - reconstruct(codes, c)) ** 2).sum()))
    assert errs[0] > errs[1] > errs[2]


def test_fit_is_deterministic_with_a_seed_and_the_version_follows_the_centroids():
    x = _vectors()
    a, b = fit_residual_kmeans(x, 2, 8, seed=0), fit_residual_kmeans(x, 2, 8, seed=0)
    assert np.array_equal(a, b)
    assert sid_version_for(a, "ppm", "p1") == sid_version_for(b, "ppm", "p1")
    refit = fit_residual_kmeans(x[::-1].copy(), 2, 8, seed=5)
    assert not np.array_equal(a, refit)
    assert sid_version_for(a, "ppm", "p1") != sid_version_for(refit, "ppm", "p1")  # a refit, same PPM
    assert sid_version_for(a, "ppm", "p1") != sid_version_for(a, "ppm", "p2")  # same centroids, another PPM


def test_fewer_distinct_vectors_than_centroids_keeps_codes_in_range():
    x = np.repeat(np.eye(3, dtype=np.float32), 5, axis=0)
    c = fit_residual_kmeans(x, 2, 16, seed=0, n_init=1)
    codes = assign_codes(x, c)
    assert codes.max() < 16 and len(np.unique(codes[:, 0])) == 3


def test_codebook_round_trip_and_tamper_refusal(tmp_path):
    cb = Codebook(fit_residual_kmeans(_vectors(), 2, 4, n_init=1), "ppm", "p1", 300)
    cb.save(tmp_path / "cb")
    back = Codebook.load(tmp_path / "cb")
    assert back.sid_version == cb.sid_version and np.array_equal(back.centroids, cb.centroids)
    assert not list(tmp_path.glob(".*"))  # no temp folder left behind
    cb2 = Codebook(cb.centroids + 1, "ppm", "p1")
    cb2.save(tmp_path / "cb")  # replaced whole
    assert Codebook.load(tmp_path / "cb").sid_version == cb2.sid_version
    meta = (tmp_path / "cb" / "codebook.json").read_text().replace(cb2.sid_version, "0" * 12)
    (tmp_path / "cb" / "codebook.json").write_text(meta)
    with pytest.raises(ValueError, match="hash to"):
        Codebook.load(tmp_path / "cb")


def test_code_frame_refuses_vectors_of_another_version():
    cb = Codebook(fit_residual_kmeans(_vectors(d=4), 2, 4, n_init=1), "ppm", "p1")
    rows = pd.DataFrame({"item_id": [1, 2], "event_timestamp": pd.Timestamp("2026-01-01", tz="UTC"),
                         "ppm_item_vec": [np.ones(4, np.float32)] * 2, "ppm_item_version": ["p1", "p1"]})
    out = code_frame(rows, cb)
    assert list(out.columns) == ["item_id", "event_timestamp", "sid_1", "sid_2", "sid_version"]
    assert (out["sid_version"] == cb.sid_version).all()
    with pytest.raises(ValueError, match="refit"):
        code_frame(rows.assign(ppm_item_version="p2"), cb)


def test_spark_job_codes_every_item_and_fits_on_the_train_window(tmp_path, spark):
    from ppm_platform.features.semantic_ids import compute_item_semantic_id

    s = Settings.from_env(artifacts_dir=tmp_path, semantic_ids={"levels": 2, "codebook_size": 4, "n_init": 1,
                                                                "source": "ppm"})
    s.ensure_dirs()
    n = 40
    ts = pd.Timestamp("2026-01-01", tz="UTC")
    x = _vectors(n, 4)
    write_parquet_atomic(pd.DataFrame({"item_id": np.arange(n), "event_timestamp": ts, "ppm_item_vec": list(x),
                                       "ppm_item_version": "p1"}),
                         catalog.path(s, "ppm_item_cache"), schemas.PPM_ITEM_CACHE)
    # items 0..29 have train-window events; 30..39 appear only in the last 20 % of the log
    inter = pd.DataFrame({"user_id": 1, "item_id": [*range(30), *range(30, 40)] * 1,
                          "event_timestamp": [ts + pd.Timedelta(minutes=i) for i in range(40)],
                          "click": 1, "order": 0})
    inter.to_parquet(catalog.path(s, "interactions"))
    res = compute_item_semantic_id(spark, s, catalog.path(s, "ppm_item_cache"), catalog.path(s, "interactions"),
                                   catalog.path(s, "semantic_id_codebook"), catalog.path(s, "item_semantic_id"))
    assert res["rows"] == n and res["fitted_items"] == 32  # the first 80 % of 40 events
    out = pd.read_parquet(catalog.path(s, "item_semantic_id"))
    cb = Codebook.load(catalog.path(s, "semantic_id_codebook"))
    assert np.array_equal(out[["sid_1", "sid_2"]].to_numpy(), cb.assign(x))
    q = semantic_id_table_quality(catalog.path(s, "item_semantic_id"), 2, 4, item_ids=range(n))
    assert q["passed"], q["problems"]
    assert not semantic_id_table_quality(catalog.path(s, "item_semantic_id"), 2, 4, item_ids=range(n + 1))["passed"]


# ---- the ranker side: vectorizer, URM / Base with semantic ids, ONNX, the serving refusal -----------------------
def _sid_rows(n=12, levels=2, seed=0):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"user_id": rng.integers(1, 4, n), "item_id": rng.integers(10, 16, n), "age": 30,
                       "gender": "M", "occupation": "x", "hist_item_ids": [[10, 11]] * n,
                       "categories": [["Drama"]] * n, "click": rng.integers(0, 2, n), "order": 0})
    for i in range(levels):
        df[f"sid_{i + 1}"] = pd.array(rng.integers(0, 4, n), dtype="Int64")
    return df


def test_vectorizer_embeds_codes_with_a_train_vocabulary():
    from ppm_platform.features.encoding import OOV, FeatureVectorizer

    train = _sid_rows()
    enc = FeatureVectorizer.fit(train, max_len=3, ppm_dim=0, sid_levels=2)
    assert enc.sid_cardinalities == tuple(train[c].nunique() + 2 for c in ("sid_1", "sid_2"))
    assert "sid_1" in enc.item_columns() and enc.output_names()[-1] == "item_sid"
    rows = train.head(3).copy()
    rows.loc[0, "sid_1"] = pd.NA  # no semantic-id row: OOV
    rows.loc[1, "sid_2"] = 99  # a code no train row had: OOV
    x = enc.transform(rows)["item_sid"]
    assert x.dtype == np.int64 and x.shape == (3, 2)
    assert x[0, 0] == OOV and x[1, 1] == OOV and (x[2] >= 2).all()
    assert np.array_equal(FeatureVectorizer.from_dict(enc.to_dict()).transform(rows)["item_sid"], x)
    assert "item_sid" not in FeatureVectorizer.fit(train, max_len=3, ppm_dim=0).transform(rows)  # off: unchanged


@pytest.mark.parametrize("use_ppm", [True, False])
def test_urm_and_base_with_semantic_ids_train_their_code_embeddings(use_ppm):
    import torch

    from test_models import small_urm_cfg, urm_batch
    from ppm_platform.models.urm import URM, model_input_names

    cfg = small_urm_cfg(use_ppm=use_ppm, sid_cardinalities=(6, 6))
    model = URM(cfg)
    b = urm_batch(cfg, 5)
    b["item_sid"] = torch.randint(0, 6, (5, 2))
    assert model_input_names(cfg)[-1] == "item_sid"
    logits = model.forward_dict(b)
    assert logits.shape == (5, 2)
    logits.sum().backward()
    assert model.idrec.sid_embs[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="item_sid"):
        model(*(b[n] for n in model_input_names(cfg)[:-1]))
    # an item without content reads the OOV row whatever its codes
    b2 = {k: v.clone() for k, v in b.items()}
    b2["item_content"] = torch.zeros(5)
    b3 = {k: v.clone() for k, v in b2.items()}
    b3["item_sid"] = torch.ones(5, 2, dtype=torch.long)
    model.eval()
    assert torch.allclose(model.forward_dict(b2), model.forward_dict(b3))


@pytest.mark.parametrize("use_ppm,dynamo", [(True, True), (False, False)])
def test_onnx_parity_with_semantic_ids(tmp_path, use_ppm, dynamo):
    import torch

    from test_models import small_urm_cfg, urm_batch
    from ppm_platform.models.urm import URM
    from ppm_platform.serving.onnx_export import OnnxScorer, export_urm_onnx

    torch.manual_seed(0)
    cfg = small_urm_cfg(use_ppm=use_ppm, sid_cardinalities=(6, 5))
    model = URM(cfg).eval()
    example = {k: v.numpy() for k, v in urm_batch(cfg, 6, seed=2).items()}
    example["item_sid"] = np.random.default_rng(0).integers(0, 5, (6, 2))
    info = export_urm_onnx(model, example, tmp_path / "model.onnx", dynamo=dynamo)
    assert info["max_abs_diff"] <= 1e-5 and info["serving"]["max_abs_diff"] <= 1e-5
    assert info["input_names"][-1] == "item_sid" and "item_sid" in info["serving"]["input_names"]
    with torch.no_grad():
        ref = torch.sigmoid(model.forward_dict({k: torch.from_numpy(v) for k, v in example.items()})).numpy()
    assert np.abs(OnnxScorer(tmp_path / "model.onnx").predict(example) - ref).max() <= 1e-5


def test_serving_refuses_a_model_of_another_sid_version():
    from ppm_platform.serving.ranker import Ranker, VersionMismatchError

    r = object.__new__(Ranker)
    r.model_name, r.ppm_version, r.sid_version, r.cache_versions_seen = "urm", "p1", "s1", set()
    r.check_versions({"ppm_user_version": "p1"}, {"p1"}, {"s1"})
    rows = pd.DataFrame({"ppm_item_version": ["p1"], "sid_version": ["s2"]})
    with pytest.raises(VersionMismatchError, match="sid_version s1"):
        r.check_versions({"ppm_user_version": "p1"}, rows)
    with pytest.raises(VersionMismatchError, match="s2"):
        r.check_versions({}, {"p1"}, {"s2"})
    r.sid_version = None  # a model without semantic ids never refuses on them
    r.check_versions({}, rows)


def test_new_item_gets_its_codes_in_the_same_push(tmp_path, monkeypatch):
    """The push path codes a new item from the stored codebook and pushes its item_semantic_id row with the
    others (encoders and PPM replaced by stand-ins: what matters is the codebook step)."""
    import json

    import ppm_platform.features.item_multimodal as im
    import ppm_platform.features.ppm_caches as pc
    from ppm_platform.serving.new_item import add_new_item

    s = Settings.from_env(artifacts_dir=tmp_path, semantic_ids={"levels": 2, "codebook_size": 4, "n_init": 1})
    s.ensure_dirs()
    ppm_dir = catalog.path(s, "ppm")
    ppm_dir.mkdir(parents=True)
    (ppm_dir / "model.json").write_text(json.dumps({"version": "w1", "metadata": {"encoder_version": "e1"}}))
    vec = np.arange(4, dtype=np.float32)
    monkeypatch.setattr(im, "encode_items_frame", lambda items, _s: pd.DataFrame({
        "item_id": items["item_id"], "text_emb": [np.zeros(3, np.float32)], "image_emb": [np.zeros(2, np.float32)],
        "has_image": 0, "encoder_version": "e1"}))
    monkeypatch.setattr(pc, "ppm_version_of", lambda _d: "p1")
    monkeypatch.setattr(pc, "weights_version_of", lambda _d: "w1")
    monkeypatch.setattr(pc, "get_ppm", lambda _d, _v: None)
    monkeypatch.setattr(pc, "encode_item_frame", lambda mm, _p, _w: pd.DataFrame({
        "item_id": mm["item_id"], "ppm_item_vec": [vec], "ppm_item_version": "p1"}))

    from types import SimpleNamespace

    from feast import FileSource, PushSource

    class Store:
        """The part of a FeatureStore push_item_rows uses: every item view has its ``<view>_push`` source."""
        project = "p"
        registry = SimpleNamespace(list_feature_services=lambda project, allow_cache=False: [])
        pushed: dict = {}

        def list_feature_views(self, allow_cache=False):
            src = FileSource(path="unused.parquet", timestamp_field="event_timestamp")
            return [SimpleNamespace(name=v, stream_source=PushSource(name=f"{v}_push", batch_source=src))
                    for v in ("item_multimodal", "item_profile", "ppm_item_cache", "item_semantic_id")]

        def list_stream_feature_views(self, allow_cache=False):
            return []

        def write_to_online_store(self, name, df):
            self.pushed[f"{name}_push"] = df

    store = Store()
    res = add_new_item(s, 77, "New (2026)", ["Drama"], store=store)  # no codebook yet: no codes, no error
    assert res["sid_version"] is None and "item_semantic_id_push" not in store.pushed
    cb = Codebook(fit_residual_kmeans(_vectors(d=4), 2, 4, n_init=1), "ppm", "p1")
    cb.save(catalog.path(s, "semantic_id_codebook"))
    write_parquet_atomic(code_frame(pd.DataFrame({"item_id": [1], "event_timestamp": pd.Timestamp.now(tz="UTC"),
                                                  "ppm_item_vec": [vec]}), cb),
                         catalog.path(s, "item_semantic_id"), schemas.semantic_id_schema(2))
    res = add_new_item(s, 78, "Newer (2026)", ["Drama"], store=store)
    row = store.pushed["item_semantic_id_push"]
    assert res["sid_version"] == cb.sid_version == row["sid_version"].iloc[0]
    assert res["sid"] == cb.assign(vec[None])[0].tolist() == row[["sid_1", "sid_2"]].iloc[0].tolist()
    assert row["event_timestamp"].iloc[0] == store.pushed["ppm_item_cache_push"]["event_timestamp"].iloc[0]
    stale = Codebook(cb.centroids, "ppm", "p0")  # fitted under another PPM: refuse, do not push wrong codes
    stale.save(catalog.path(s, "semantic_id_codebook"))
    with pytest.raises(ValueError, match="refit"):
        add_new_item(s, 79, "Newest (2026)", ["Drama"], store=store)


def test_dagster_table_quality_check(tmp_path):
    import dagster as dg

    from dagster_project.defs.ppm.checks import item_semantic_id_table_quality
    from dagster_project.resources import PPMSettingsResource

    s = Settings.from_env(env={}, artifacts_dir=tmp_path / "a").ensure_dirs()
    res = PPMSettingsResource(artifacts_dir=str(s.artifacts_dir))
    cb = Codebook(fit_residual_kmeans(_vectors(d=4), s.semantic_ids.levels, 4, n_init=1), "ppm", "p1")
    cb.save(catalog.path(s, "semantic_id_codebook"))
    pd.DataFrame({"item_id": [1, 2, 3]}).to_parquet(catalog.path(s, "items"))
    rows = pd.DataFrame({"item_id": [1, 2, 3], "event_timestamp": pd.Timestamp("2026-01-01", tz="UTC"),
                         "ppm_item_vec": list(_vectors(3, 4))})
    sid = code_frame(rows, cb)
    write_parquet_atomic(sid, catalog.path(s, "item_semantic_id"), catalog.schema(s, "item_semantic_id"))
    ok = item_semantic_id_table_quality(ppm=res)
    assert isinstance(ok, dg.AssetCheckResult) and ok.passed, ok.metadata
    write_parquet_atomic(sid.head(2), catalog.path(s, "item_semantic_id"), catalog.schema(s, "item_semantic_id"))
    bad = item_semantic_id_table_quality(ppm=res)  # item 3 uncoded
    assert not bad.passed and bad.metadata["uncoded_items"].value == 1
    write_parquet_atomic(sid.assign(sid_version="other"), catalog.path(s, "item_semantic_id"),
                         catalog.schema(s, "item_semantic_id"))
    assert not item_semantic_id_table_quality(ppm=res).passed  # not the saved codebook's version


def test_item_cold_summary_reports_the_sid_lifts():
    from ppm_platform.evaluation.aggregate import aggregate, combine_draws
    from ppm_platform.evaluation.report import render_summary
    from ppm_platform.training.metrics import HELD_OUT_SLICE

    def run(model, seed, a):
        sl = {s: {t: {"auc": a} for t in ("click", "order")} for s in ("all", HELD_OUT_SLICE)}
        return {"model": model, "train_window": "100%", "seed": seed, "valid": sl, "test": sl}

    reports = []
    for d in range(2):
        runs = [run(m, s, a + 0.01 * s + 0.001 * d) for s in (0, 1)
                for m, a in (("Base", 0.70), ("URM", 0.69), ("Base+SID", 0.71), ("URM+SID", 0.72))]
        r = aggregate(runs, ["all", HELD_OUT_SLICE])
        r["protocol"] = {"models": ["Base", "URM", "Base+SID", "URM+SID"]}
        reports.append(r)
    summary = combine_draws(reports, [42, 43])
    assert summary["lifts"]["URM+SID - URM"]["click"]["mean"] == pytest.approx(0.03)
    assert summary["lifts"]["Base+SID - Base"]["click"]["mean"] == pytest.approx(0.01)
    assert summary["lift_urm_base"]["click"]["mean"] == pytest.approx(-0.01)
    assert summary["target_sid"]["met"]
    md = render_summary(summary, [{"impressions": 10}] * 2)
    assert "| **URM+SID − URM** | +0.0300" in md and "URM+SID - URM >= +0.01 on held-out items" in md
