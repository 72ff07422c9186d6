"""Version coherence of the PPM caches (DESIGN.md §4 version rule), on small
synthetic tables: ``ppm_version`` covers the PPM's weights AND the encoders of the ME features (a re-fine-tuned
encoder gives cache rows of another version, which serving refuses for the old URM); one version per cache
table (the library function behind the asset checks, and the Dagster checks themselves)."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
import torch

from ppm_platform.config import Settings
from ppm_platform.data import schemas
from ppm_platform.features.ppm_caches import (
    cache_table_versions,
    encode_item_frame,
    ppm_version_for,
    ppm_version_of,
    weights_version_of,
)
from ppm_platform.io import write_parquet_atomic
from ppm_platform.models.ppm import PPM, PPMConfig
from ppm_platform.model_store import model_version, save_model

try:  # pytest's default (prepend) import mode puts tests/unit on sys.path
    from test_feature_store import DM
    from test_http_api import served  # noqa: F401  (the module-scoped fixture: its own tmp store here)
except ImportError:  # tests/ made a package
    from tests.unit.test_feature_store import DM
    from tests.unit.test_http_api import served  # noqa: F401

T0 = pd.Timestamp("2024-01-01", tz="UTC")
ENC1, ENC2 = "enc1", "text@re-fine-tuned|image@same"  # ENC1: what test_feature_store's item_multimodal holds


def _ppm(tmp_path, encoder_version: str | None, me_dim: int = 6, legacy: bool = False):
    """A tiny PPM saved as ``pipeline.ppm_model`` saves it (metadata ppm_version / encoder_version); ``legacy``:
    saved before ppm_version covered the encoders (metadata ppm_version = the weights hash)."""
    torch.manual_seed(0)
    cfg = PPMConfig(me_dim=me_dim, d_model=DM, n_layers=1, n_heads=1, ff_dim=4, max_len=4, n_time_buckets=4,
                    readout_hidden=4, dropout=0.0)
    ppm = PPM(cfg).eval()
    w = model_version(ppm)
    v = w if legacy else ppm_version_for(w, encoder_version)
    save_model(ppm, cfg, tmp_path / "ppm", "ppm", {"ppm_version": v, "encoder_version": encoder_version})
    return ppm, w, tmp_path / "ppm"


def _me_rows(encoder_version: str, item_ids=(10, 11), seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = len(item_ids)
    return pd.DataFrame({"item_id": list(item_ids), "event_timestamp": [T0] * n,
                         "text_emb": [rng.standard_normal(3).astype(np.float32) for _ in range(n)],
                         "image_emb": [rng.standard_normal(2).astype(np.float32) for _ in range(n)],
                         "has_image": [1] * n, "encoder_version": encoder_version})


# ---- finding 2: ppm_version covers the encoders ----------------------------------------------------------------
def test_ppm_version_covers_weights_and_encoders(tmp_path):
    w = "0123456789ab"
    assert ppm_version_for(w, ENC1) == hashlib.sha256(f"{w}|{ENC1}".encode()).hexdigest()[:12]
    assert ppm_version_for(w, ENC1) != ppm_version_for(w, ENC2) != ppm_version_for("ba9876543210", ENC2)
    assert ppm_version_for(w, None) == w  # a PPM saved without its encoders

    ppm, weights, d = _ppm(tmp_path, ENC1)
    assert weights_version_of(d) == weights
    assert ppm_version_of(d) == ppm_version_for(weights, ENC1) != weights
    # cache rows: the PPM's version for ME rows of the encoders it was trained on, another for re-fine-tuned ones
    same, refit = encode_item_frame(_me_rows(ENC1), ppm, weights), encode_item_frame(_me_rows(ENC2), ppm, weights)
    assert same["ppm_item_version"].tolist() == [ppm_version_of(d)] * 2
    assert refit["ppm_item_version"].tolist() == [ppm_version_for(weights, ENC2)] * 2
    assert set(refit["ppm_item_version"]) != {ppm_version_of(d)}
    # rows of both encoders in one frame each get their own version
    both = encode_item_frame(pd.concat([_me_rows(ENC1, (1,)), _me_rows(ENC2, (2,))], ignore_index=True), ppm, weights)
    assert both["ppm_item_version"].tolist() == [ppm_version_of(d), ppm_version_for(weights, ENC2)]
    with pytest.raises(KeyError, match="encoder_version"):
        encode_item_frame(_me_rows(ENC1).drop(columns=["encoder_version"]), ppm, weights)


def test_ppm_saved_before_versions_covered_encoders_is_refused(tmp_path):
    _, weights, d = _ppm(tmp_path, ENC1, legacy=True)
    with pytest.raises(ValueError, match=f"metadata ppm_version {weights} is not the version "
                                         f"{ppm_version_for(weights, ENC1)}.*retrain"):
        ppm_version_of(d)


def test_caches_of_a_refinetuned_encoder_are_refused_for_the_old_urm(served, tmp_path):
    """The URM trained on cache rows of a PPM pre-trained on ENC1 is labelled with their version and serves them;
    after the encoder is re-fine-tuned (item_multimodal rebuilt: ENC2, new embeddings) the same frozen PPM gives
    item cache rows of another version, and the real Ranker refuses them against the old URM (real Feast
    registry, SQLite online store, ONNX export)."""
    from ppm_platform.serving.onnx_export import export_urm_onnx
    from ppm_platform.serving.ranker import Ranker, VersionMismatchError
    from ppm_platform.training.urm_train import cache_version_counts, training_set_cache_version

    settings, ranker, _, model, enc, frame = served
    mm = pd.read_parquet(settings.features_dir / "item_multimodal.parquet")
    assert set(mm["encoder_version"]) == {ENC1}
    ppm, weights, ppm_dir = _ppm(tmp_path, ENC1, me_dim=6)  # ME of the served tables: 3 + 2 + 1 dims
    version = ppm_version_of(ppm_dir)
    old_rows = encode_item_frame(mm, ppm, weights)
    # the training set joins these cache rows (users without a cache row: null) -> the URM's label
    ts = frame.assign(ppm_user_version=None,
                      ppm_item_version=frame["item_id"].map(old_rows.set_index("item_id")["ppm_item_version"]))
    label = training_set_cache_version(cache_version_counts(ts), version)
    assert label == version
    mdir = settings.models_dir / "urm_enc1"
    save_model(model, model.cfg, mdir, "urm", {"feature_encoder": enc.to_dict(), "ppm_version": label,
                                               "user_feature_service": "urm_user", "item_feature_service": "urm_item",
                                               "training_feature_service": "urm_training"})
    export_urm_onnx(model, enc.transform(frame), mdir / "model.onnx")
    store = ranker.store
    orig = pd.read_parquet(settings.features_dir / "ppm_item_cache.parquet")
    r = Ranker(settings, model_name="urm_enc1", store=store, item_cache=False)
    try:
        now = pd.Timestamp.now(tz="UTC")
        store.write_to_online_store("ppm_item_cache", old_rows.assign(event_timestamp=now))
        res = r.rank(999, [10, 11])  # an unknown user: no user cache row, only the items' versions
        assert len(res.scores) == 2 and r.cache_versions_seen == {version}
        refit = mm.assign(encoder_version=ENC2, text_emb=[np.asarray(e) + 0.5 for e in mm["text_emb"]])
        new_rows = encode_item_frame(refit, ppm, weights)
        new_version = ppm_version_for(weights, ENC2)
        assert set(new_rows["ppm_item_version"]) == {new_version} and new_version != version
        store.write_to_online_store("ppm_item_cache", new_rows.assign(event_timestamp=now + pd.Timedelta(seconds=1)))
        with pytest.raises(VersionMismatchError, match=f"ppm_version {version} .*{new_version}"):
            r.rank(999, [10, 11])
    finally:
        store.write_to_online_store("ppm_item_cache", orig.assign(event_timestamp=pd.Timestamp.now(tz="UTC")))
        r.close()


# ---- finding 1 (c): one version per cache table ------------------------------------------------------------------
def _user_cache_days(folder, versions_by_day: dict[str, list]) -> None:
    """A day-partitioned ppm_user_cache folder: one file per day with rows of the given versions."""
    folder.mkdir(parents=True, exist_ok=True)
    for day, versions in versions_by_day.items():
        n = len(versions)
        write_parquet_atomic(pd.DataFrame({
            "user_id": np.arange(1, n + 1, dtype=np.int64),
            "event_timestamp": [pd.Timestamp(day, tz="UTC") + pd.Timedelta(hours=1)] * n,
            "ppm_user_seq": [[0.0] * 4] * n, "ppm_seq_len": np.ones(n, np.int64), "ppm_user_version": versions}),
            folder / f"{day}.parquet", schemas.PPM_USER_CACHE)


def test_cache_table_versions_fails_on_two_versions_and_names_the_days(tmp_path):
    folder = tmp_path / "ppm_user_cache.parquet"
    _user_cache_days(folder, {"2024-01-01": ["old"] * 3, "2024-01-02": ["old"] * 2, "2024-01-03": ["new"] * 4})
    r = cache_table_versions(folder, "ppm_user_version")
    assert r["rows"] == 9 and r["versions"] == {"old": 5, "new": 4} and r["null_rows"] == 0
    assert r["files_by_version"] == {"old": ["2024-01-01.parquet", "2024-01-02.parquet"], "new": ["2024-01-03.parquet"]}
    assert not r["passed"] and r["problems"] == ["2 versions in one cache table: new (4 rows), old (5 rows)"]

    one = tmp_path / "one.parquet"
    _user_cache_days(one, {"2024-01-01": ["new"] * 3, "2024-01-02": ["new"]})
    assert cache_table_versions(one, "ppm_user_version", expected="new")["passed"]
    r = cache_table_versions(one, "ppm_user_version", expected="newer")  # one version, but not the current PPM's
    assert not r["passed"] and r["problems"] == ["the current PPM is newer, the table holds ['new']"]
    nulls = tmp_path / "nulls.parquet"
    _user_cache_days(nulls, {"2024-01-01": ["new", None]})
    r = cache_table_versions(nulls, "ppm_user_version")
    assert not r["passed"] and r["null_rows"] == 1 and r["versions"] == {"new": 1}
    with pytest.raises(KeyError, match="ppm_item_version"):
        cache_table_versions(one, "ppm_item_version")
    with pytest.raises(FileNotFoundError):
        cache_table_versions(tmp_path / "missing.parquet", "ppm_user_version")


def test_asset_checks_fail_on_a_cache_table_of_two_versions(tmp_path):
    """The Dagster checks beside the cache assets (thin calls of cache_table_versions), invoked directly."""
    import dagster as dg

    from dagster_project.defs.daily.checks import user_features_daily_one_cache_version
    from dagster_project.defs.ppm.checks import ppm_item_cache_one_version, ppm_user_cache_one_version
    from dagster_project.resources import PPMSettingsResource

    settings = Settings.from_env(env={}, artifacts_dir=tmp_path / "artifacts").ensure_dirs()
    _, weights, _ = _ppm(settings.models_dir, ENC1)
    current = ppm_version_of(settings.models_dir / "ppm")
    res = PPMSettingsResource(artifacts_dir=str(settings.artifacts_dir))
    users = settings.features_dir / "ppm_user_cache.parquet"
    _user_cache_days(users, {"2024-01-01": [current] * 2, "2024-01-02": [current]})
    items = pd.DataFrame({"item_id": [10, 11], "event_timestamp": [T0, T0], "ppm_item_vec": [[0.0] * DM] * 2,
                          "ppm_item_version": [current, ppm_version_for(weights, ENC2)]})
    write_parquet_atomic(items, settings.features_dir / "ppm_item_cache.parquet", schemas.PPM_ITEM_CACHE)

    for check in (ppm_user_cache_one_version, user_features_daily_one_cache_version):
        ok = check(ppm=res)
        assert isinstance(ok, dg.AssetCheckResult) and ok.passed, ok.metadata
    bad = ppm_item_cache_one_version(ppm=res)  # an item re-encoded with a re-fine-tuned encoder
    assert not bad.passed and bad.metadata["versions"].value == {current: 1, ppm_version_for(weights, ENC2): 1}
    _user_cache_days(users, {"2024-01-02": ["retrained"]})  # the daily path rewrote one day after a PPM retrain
    for check in (ppm_user_cache_one_version, user_features_daily_one_cache_version):
        r = check(ppm=res)
        assert not r.passed and r.metadata["versions"].value == {current: 2, "retrained": 1}
        assert r.metadata["files_by_version"].value == {current: ["2024-01-01.parquet"],
                                                        "retrained": ["2024-01-02.parquet"]}
