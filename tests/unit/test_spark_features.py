"""Spark feature jobs: item_multimodal (Spark workers == single-process encoders) and the PPM caches
(Spark workers == the PPM applied in-process; version rule; unknown history items)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from ppm_platform.config import Settings
from ppm_platform.data.schemas import (
    BEHAVIOR_SEQUENCES,
    INTERACTIONS,
    ITEM_MULTIMODAL,
    ITEMS,
    PPM_ITEM_CACHE,
    PPM_USER_CACHE,
)
from ppm_platform.io import write_parquet_atomic

T0 = pd.Timestamp("2024-03-01", tz="UTC")


def _settings(tmp_path, **kw) -> Settings:
    # the catalog root: item images are written under tmp_path (encoders refuse images outside it)
    return Settings.from_env(env={}, artifacts_dir=tmp_path / "artifacts", data_dir=tmp_path, **kw)


# ---- item_multimodal -----------------------------------------------------------------------------------------------
def _items(tmp_path) -> pd.DataFrame:
    img_dir = tmp_path / "posters"
    img_dir.mkdir()
    rng = np.random.default_rng(3)
    uris = []
    for i, mode in enumerate(["RGB", "L", None, "CMYK", "RGB", None]):
        if mode is None:
            uris.append(None)
            continue
        arr = rng.integers(0, 255, size=(150 + 10 * i, 100, 3), dtype=np.uint8)
        p = img_dir / f"{i + 1}.jpg"
        Image.fromarray(arr, "RGB").convert(mode).save(p, "JPEG")
        uris.append(str(p))
    return pd.DataFrame({
        "item_id": np.arange(1, 7, dtype=np.int64),
        "title": ["Toy Story (1995)", "GoldenEye (1995)", "Four Rooms (1995)", "Get Shorty (1995)",
                  "Copycat (1995)", "Heat (1995)"],
        "image_uri": uris,
        "categories": [["Animation", "Comedy"], ["Action", "Thriller"], [], ["Comedy", "Drama"], ["Crime"],
                       ["Action", "Crime", "Thriller"]],
        "created_at": [T0 + pd.Timedelta(days=i) for i in range(6)],
    })


def test_item_multimodal_spark_equals_single_process(spark, tmp_path):
    from ppm_platform.encoders import get_image_encoder, get_text_encoder
    from ppm_platform.data.item_content import item_text
    from ppm_platform.features.item_multimodal import compute_item_multimodal, read_me_matrix

    settings = _settings(tmp_path)
    items = _items(tmp_path)
    src = tmp_path / "items.parquet"
    write_parquet_atomic(items, src, schema=ITEMS)
    out = tmp_path / "features" / "item_multimodal.parquet"
    stats = compute_item_multimodal(spark, settings, src, out)

    table = pq.read_table(out)
    assert table.schema.equals(ITEM_MULTIMODAL), table.schema
    assert [p.name for p in out.parent.iterdir()] == ["item_multimodal.parquet"]  # temp folder cleaned up
    assert stats["items"] == 6 and stats["with_image"] == 4 and stats["without_image"] == 2
    assert stats["items_per_s"] > 0 and stats["seconds"] > 0
    got = table.to_pandas()
    assert got["item_id"].tolist() == [1, 2, 3, 4, 5, 6]
    assert got["has_image"].tolist() == [1, 1, 0, 1, 1, 0]
    assert (got["event_timestamp"] == items["created_at"]).all()

    text, image = get_text_encoder(settings), get_image_encoder(settings)
    assert set(got["encoder_version"]) == {stats["encoder_version"]} == {f"{text.version}|{image.version}"}
    exp_text = text.encode([item_text(t, c) for t, c in zip(items["title"], items["categories"])])
    exp_img, _ = image.encode_paths(list(items["image_uri"]), root=tmp_path)
    np.testing.assert_allclose(np.stack(got["text_emb"]), exp_text, atol=1e-5)
    np.testing.assert_allclose(np.stack(got["image_emb"]), exp_img, atol=1e-5)
    assert not np.stack(got["image_emb"])[[2, 5]].any()

    ids, me = read_me_matrix(out)
    assert ids.tolist() == [1, 2, 3, 4, 5, 6] and me.shape == (6, settings.encoders.me_dim)
    np.testing.assert_allclose(me[:, :384], exp_text, atol=1e-5)


def test_item_multimodal_unreadable_image_fails_naming_the_path(spark, tmp_path):
    from ppm_platform.features.item_multimodal import compute_item_multimodal

    items = _items(tmp_path).iloc[:2].copy()
    bad = tmp_path / "posters" / "corrupt_poster.jpg"
    bad.write_bytes(b"not an image")
    items.loc[1, "image_uri"] = str(bad)
    src = tmp_path / "items.parquet"
    write_parquet_atomic(items, src, schema=ITEMS)
    out = tmp_path / "features" / "item_multimodal.parquet"
    with pytest.raises(Exception, match="corrupt_poster.jpg"):
        compute_item_multimodal(spark, _settings(tmp_path), src, out)
    assert not out.exists() and not list(out.parent.glob(".*"))  # no partial output, no temp folder


# ---- PPM caches ----------------------------------------------------------------------------------------------------
def _ppm_or_skip():
    try:
        from ppm_platform.models.ppm import PPM, PPMConfig
        from ppm_platform.model_store import model_version, save_model
    except ImportError as e:  # pragma: no cover
        pytest.skip(f"PPM model module not available yet: {e}")
    return PPM, PPMConfig, model_version, save_model


def _me_table(n_items: int, rng) -> pd.DataFrame:
    has = rng.integers(0, 2, size=n_items)
    return pd.DataFrame({
        "item_id": np.arange(100, 100 + n_items, dtype=np.int64),
        "event_timestamp": [T0 + pd.Timedelta(hours=i) for i in range(n_items)],
        "text_emb": [rng.standard_normal(384).astype(np.float32) for _ in range(n_items)],
        "image_emb": [rng.standard_normal(1280).astype(np.float32) * h for h in has],
        "has_image": has.astype(np.int64),
        "encoder_version": "test",
    })


@pytest.fixture(scope="module")
def ppm_setup(tmp_path_factory):
    """A tiny random PPM saved with save_model, a random item_multimodal table and behaviour sequences."""
    import torch

    from ppm_platform.features.behavior_sequences import behavior_sequences_reference
    from ppm_platform.features.ppm_caches import ppm_version_for

    PPM, PPMConfig, model_version, save_model = _ppm_or_skip()
    tmp = tmp_path_factory.mktemp("ppm")
    rng = np.random.default_rng(7)
    torch.manual_seed(0)
    L = 6
    cfg = PPMConfig(me_dim=1665, d_model=8, n_layers=1, n_heads=2, ff_dim=16, max_len=L, n_time_buckets=8,
                    readout_hidden=8)
    ppm = PPM(cfg).eval()
    weights = model_version(ppm)
    version = ppm_version_for(weights, "test")  # as pipeline.ppm_model saves it: pre-trained on encoders "test"
    save_model(ppm, cfg, tmp / "ppm", "ppm", {"ppm_version": version, "encoder_version": "test"})

    mm = _me_table(15, rng)
    write_parquet_atomic(mm, tmp / "item_multimodal.parquet", schema=ITEM_MULTIMODAL)
    n = 150
    inter = pd.DataFrame({
        "user_id": rng.integers(1, 7, size=n).astype(np.int64),
        "item_id": rng.choice(mm["item_id"].to_numpy(), size=n),
        "event_timestamp": [T0 + pd.Timedelta(seconds=int(s)) for s in rng.integers(0, 40, size=n) * 3600],
        "click": (rng.random(n) < 0.7).astype(np.int8),
        "order": np.zeros(n, np.int8),
    })
    seqs = behavior_sequences_reference(inter, max_len=L + 2)  # longer than L: the cache must truncate
    write_parquet_atomic(seqs, tmp / "behavior_sequences.parquet", schema=BEHAVIOR_SEQUENCES)
    return {"tmp": tmp, "ppm": ppm, "version": version, "weights": weights, "L": L, "mm": mm, "seqs": seqs,
            "inter": inter}


def test_ppm_caches_equal_in_process_ppm(spark, ppm_setup, tmp_path):
    import torch

    from ppm_platform.features.item_multimodal import me_matrix
    from ppm_platform.features.ppm_caches import (
        ItemVectorTable,
        compute_ppm_item_cache,
        compute_ppm_user_cache,
        pad_history,
    )

    s = ppm_setup
    settings = _settings(tmp_path, sequence={"max_len": s["L"]})
    item_out, user_out = tmp_path / "ppm_item_cache.parquet", tmp_path / "ppm_user_cache.parquet"
    istats = compute_ppm_item_cache(spark, settings, s["tmp"] / "item_multimodal.parquet", s["tmp"] / "ppm", item_out)
    ustats = compute_ppm_user_cache(spark, settings, s["tmp"] / "behavior_sequences.parquet", item_out,
                                    s["tmp"] / "ppm", user_out)
    assert istats["ppm_version"] == ustats["ppm_version"] == s["version"]
    assert istats["rows"] == 15 and ustats["rows"] == len(s["seqs"]) and ustats["rows_per_s"] > 0

    # item cache == encode_items(me) in-process
    it = pq.read_table(item_out)
    assert it.schema.equals(PPM_ITEM_CACHE), it.schema
    items = it.to_pandas()
    ids, me = me_matrix(s["mm"])
    with torch.inference_mode():
        exp_items = s["ppm"].encode_items(torch.from_numpy(me)).numpy()
    assert items["item_id"].tolist() == ids.tolist()
    assert (items["event_timestamp"] == s["mm"]["event_timestamp"]).all()
    assert set(items["ppm_item_version"]) == {s["version"]}
    np.testing.assert_allclose(np.stack(items["ppm_item_vec"]), exp_items, atol=1e-5)

    # user cache == encode_sequence over the looked-up item vectors in-process
    ut = pq.read_table(user_out).sort_by([("user_id", "ascending"), ("event_timestamp", "ascending")])
    assert ut.schema.equals(PPM_USER_CACHE), ut.schema  # a folder of day files reads as one table
    users = ut.to_pandas()
    seqs = s["seqs"]
    L, d = s["L"], 8
    assert users["user_id"].tolist() == seqs["user_id"].tolist()
    assert (users["event_timestamp"] == seqs["event_timestamp"]).all()  # as-of time (t + 1 µs) kept
    assert users["ppm_seq_len"].tolist() == np.minimum(seqs["hist_len"], L).tolist()
    assert seqs["hist_len"].max() > L  # truncation exercised
    assert set(users["ppm_user_version"]) == {s["version"]}
    h_ids, h_age, h_mask = pad_history(list(seqs["hist_item_ids"]), list(seqs["hist_age_s"]), L)
    table = ItemVectorTable(ids, exp_items)
    with torch.inference_mode():
        exp = s["ppm"].encode_sequence(torch.from_numpy(table.lookup(h_ids, h_mask)), torch.from_numpy(h_age),
                                       torch.from_numpy(h_mask)).numpy()
    got = np.stack(users["ppm_user_seq"])
    assert got.shape == (len(seqs), L * d)
    np.testing.assert_allclose(got.reshape(-1, L, d), exp, atol=1e-5)
    assert not got.reshape(-1, L, d)[h_mask == 0].any()  # exact zeros at padding
    assert np.abs(got).sum() > 0


def test_user_cache_refuses_item_cache_of_another_version(spark, ppm_setup, tmp_path):
    from ppm_platform.features.ppm_caches import compute_ppm_user_cache

    s = ppm_setup
    stale = s["mm"][["item_id", "event_timestamp"]].copy()
    stale["ppm_item_vec"] = [np.zeros(8, np.float32)] * len(stale)
    stale["ppm_item_version"] = "0123456789ab"
    write_parquet_atomic(stale, tmp_path / "stale_item_cache.parquet", schema=PPM_ITEM_CACHE)
    with pytest.raises(ValueError, match="0123456789ab"):
        compute_ppm_user_cache(spark, _settings(tmp_path, sequence={"max_len": s["L"]}),
                               s["tmp"] / "behavior_sequences.parquet", tmp_path / "stale_item_cache.parquet",
                               s["tmp"] / "ppm", tmp_path / "u.parquet")


def test_item_cache_of_refinetuned_encoders_carries_another_version(spark, ppm_setup, tmp_path):
    """item_multimodal rebuilt after re-fine-tuning an encoder (another encoder_version),
    the PPM not retrained: the Spark item cache's rows carry another version than the PPM's, and the user cache
    refuses to be built from them."""
    from ppm_platform.features.ppm_caches import compute_ppm_item_cache, compute_ppm_user_cache, ppm_version_for

    s = ppm_setup
    settings = _settings(tmp_path, sequence={"max_len": s["L"]})
    refit = s["mm"].assign(encoder_version="test-refit")
    write_parquet_atomic(refit, tmp_path / "item_multimodal.parquet", schema=ITEM_MULTIMODAL)
    item_out = tmp_path / "ppm_item_cache.parquet"
    stats = compute_ppm_item_cache(spark, settings, tmp_path / "item_multimodal.parquet", s["tmp"] / "ppm", item_out)
    new_version = ppm_version_for(s["weights"], "test-refit")
    assert new_version != s["version"] and stats["ppm_version"] == s["version"]
    assert stats["cache_versions"] == {new_version: 15}
    assert set(pq.read_table(item_out).column("ppm_item_version").to_pylist()) == {new_version}
    with pytest.raises(ValueError, match=f"{new_version}.*the PPM in .* is {s['version']}.*other encoders"):
        compute_ppm_user_cache(spark, settings, s["tmp"] / "behavior_sequences.parquet", item_out, s["tmp"] / "ppm",
                               tmp_path / "u.parquet")


def test_pad_history_and_unknown_history_item(ppm_setup):
    from ppm_platform.features.ppm_caches import ItemVectorTable, encode_sequence_frame, pad_history

    ids, ages, mask = pad_history([[5, 4, 3], [], None, [9]], [[1.0, 2.0, 3.0], [], None, [7.5]], max_len=2)
    assert ids.tolist() == [[5, 4], [-1, -1], [-1, -1], [9, -1]]
    assert ages.tolist() == [[1.0, 2.0], [0.0, 0.0], [0.0, 0.0], [7.5, 0.0]]
    assert mask.tolist() == [[1, 1], [0, 0], [0, 0], [1, 0]] and mask.dtype == np.float32
    with pytest.raises(ValueError, match="row 0"):
        pad_history([[1, 2]], [[1.0]], 3)

    s = ppm_setup
    table = ItemVectorTable(np.array([100, 101]), np.ones((2, 8), np.float32))
    pdf = pd.DataFrame({"user_id": [1], "event_timestamp": [T0],
                        "hist_item_ids": [np.array([100, 4242])], "hist_age_s": [np.array([1.0, 2.0], np.float32)]})
    with pytest.raises(KeyError, match="4242"):
        encode_sequence_frame(pdf, s["ppm"], table, s["L"], s["version"])


def test_release_heap_gives_the_driver_jvms_free_heap_back(spark):
    """After a job that grows the heap, one ``release_heap`` shrinks the committed heap to the live set plus
    MaxHeapFreeRatio (20 %) of SparkSettings.java_options; the session still works afterwards."""
    from ppm_platform.features.spark import release_heap

    rt = spark.sparkContext._jvm.java.lang.Runtime.getRuntime()
    # grow the heap: a shuffle + sort + collect_list over 3 M rows in the driver JVM (local mode)
    spark.range(3_000_000).selectExpr("id % 1000 as k", "repeat('x', 16) as s").groupBy("k") \
        .agg({"s": "collect_list"}).selectExpr("k", "size(`collect_list(s)`) as n").collect()
    committed_before = rt.totalMemory()
    release_heap(spark)
    committed, used = rt.totalMemory(), rt.totalMemory() - rt.freeMemory()
    assert committed < committed_before
    # a heap never shrinks below its initial size (-Xms, by default 1/64 of RAM); above it, to the live set
    # / (1 - MaxHeapFreeRatio) plus a young generation left near its minimum
    initial = spark.sparkContext._jvm.java.lang.management.ManagementFactory.getMemoryMXBean() \
        .getHeapMemoryUsage().getInit()
    assert committed <= max(initial, used / 0.8) + 64 * 2 ** 20, (committed, used, initial, committed_before)
    assert spark.range(10).count() == 10
