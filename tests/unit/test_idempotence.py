"""Idempotence: re-running a stage with the same inputs gives identical outputs.

One tiny synthetic catalog (12 items with 16x16 posters, 20 users, 500 impressions) goes through the real
stages of ``ppm_platform.pipeline`` once (real Spark, real encoders, real Feast with DuckDB/SQLite); each
test then re-runs one stage in the same artifacts dir and compares its outputs with the first run:
parquet files and model weights byte for byte (SHA-256), the DuckDB quarantine and the SQLite online
store by their rows.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ppm_platform import pipeline
from ppm_platform.config import Settings

T0 = pd.Timestamp("2024-01-01", tz="UTC")


def _catalog(root: Path) -> Path:
    rng = np.random.default_rng(11)
    (root / "img").mkdir(parents=True)
    n_items, n_users, n = 12, 20, 500
    for i in range(1, n_items + 1):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / "img" / f"{i}.jpg")
    pd.DataFrame({"item_id": np.arange(1, n_items + 1), "title": [f"Item number {i}" for i in range(1, n_items + 1)],
                  "image_uri": [f"img/{i}.jpg" if i % 4 else "" for i in range(1, n_items + 1)],
                  "categories": ["A|B" if i % 2 else "C" for i in range(1, n_items + 1)],
                  "created_at": [T0.isoformat()] * n_items}).to_csv(root / "items.csv", index=False)
    pd.DataFrame({"user_id": np.arange(1, n_users + 1), "age": rng.integers(18, 60, n_users)}).to_csv(
        root / "users.csv", index=False)
    click = (rng.random(n) < 0.5).astype(int)
    pd.DataFrame({"user_id": rng.integers(1, n_users + 1, n), "item_id": rng.integers(1, n_items + 1, n),
                  "event_timestamp": [(T0 + pd.Timedelta(seconds=int(s))).isoformat()
                                      for s in np.sort(rng.integers(3600, 90 * 86400, n))],
                  "click": click, "order": click * (rng.random(n) < 0.4)}).to_csv(root / "interactions.csv", index=False)
    return root


def _digest(paths: list[Path]) -> dict[str, str]:
    """SHA-256 per artifact file; a day-partitioned dataset folder hashes as its sorted (day file, bytes)."""
    out = {}
    for p in paths:
        h = hashlib.sha256()
        for f in sorted(p.glob("*.parquet")) if p.is_dir() else [p]:
            h.update(f.name.encode() + f.read_bytes())
        out[p.name] = h.hexdigest()
    return out


def _online_rows(settings: Settings) -> list[tuple]:
    """Every (table, entity key, feature, value, event ts) row of the SQLite online store (created_ts excluded)."""
    con = sqlite3.connect(settings.feast_dir / "online_store.db")
    try:
        rows = []
        for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name"):
            rows += [(t, *r) for r in con.execute(
                f'SELECT entity_key, feature_name, value, event_ts FROM "{t}" ORDER BY entity_key, feature_name')]
        return rows
    finally:
        con.close()


def _quarantine_rows(settings: Settings) -> list[tuple]:
    with duckdb.connect(str(settings.artifacts_dir / "quarantine.duckdb"), read_only=True) as db:
        return db.execute("SELECT * FROM quarantine_summary ORDER BY ALL").fetchall() + \
            db.execute("SELECT * FROM interactions ORDER BY ALL").fetchall()


STAGES = {  # stage -> (function, outputs relative to the artifacts dir)
    "ingest": (lambda s, sp: pipeline.ingest(s),
               ["tables/items.parquet", "tables/users.parquet", "tables/interactions.parquet",
                "quarantine/items.parquet", "quarantine/interactions.parquet",
                "features/item_profile.parquet", "features/user_profile.parquet"]),
    "item_multimodal": (pipeline.item_multimodal, ["features/item_multimodal.parquet"]),
    "behavior_sequences": (pipeline.behavior_sequences, ["features/behavior_sequences.parquet"]),
    "counters": (pipeline.counters, ["features/item_stats.parquet", "features/user_stats.parquet",
                                     "features/counter_priors.json"]),
    "ppm_model": (lambda s, sp: pipeline.ppm_model(s), ["models/ppm/weights.safetensors"]),
    "ppm_item_cache": (pipeline.ppm_item_cache, ["features/ppm_item_cache.parquet"]),
    "ppm_user_cache": (pipeline.ppm_user_cache, ["features/ppm_user_cache.parquet"]),
    "feast_definitions": (lambda s, sp: pipeline.feast_definitions(s), []),
    "training_set": (lambda s, sp: pipeline.training_set(s), ["training_set.parquet"]),
    "online_store": (lambda s, sp: pipeline.online_store(s), []),
    "urm_model": (lambda s, sp: pipeline.urm_model(s), ["models/urm/weights.safetensors"]),
}


@pytest.fixture(scope="module")
def first_run(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("idem")
    cfg = {"ppm": {"d_model": 8, "n_layers": 1, "ff_dim": 16, "readout_hidden": 8, "epochs": 1},
           "urm": {"epochs": 1, "emb_dim": 4, "dnn_hidden": [16], "expert_hidden": 8, "tower_hidden": 8},
           "sequence": {"max_len": 5}, "finetune": {"use_finetuned": False}}
    s = Settings.from_env(env={}, dataset="canonical", data_dir=_catalog(root / "catalog"),
                          artifacts_dir=root / "artifacts", **cfg).ensure_dirs()
    digests, results = {}, {}
    for name, (fn, outs) in STAGES.items():
        results[name] = fn(s, spark)
        digests[name] = _digest([s.artifacts_dir / o for o in outs])
    return s, digests, {"online": _online_rows(s), "quarantine": _quarantine_rows(s)}, results


@pytest.mark.parametrize("stage", [k for k, (_, outs) in STAGES.items() if outs])
def test_rerun_gives_byte_identical_outputs(first_run, spark, stage):
    s, digests, _, _ = first_run
    fn, outs = STAGES[stage]
    fn(s, spark)
    assert _digest([s.artifacts_dir / o for o in outs]) == digests[stage]


def test_quarantine_db_and_online_store_rerun_equal(first_run, spark):
    s, _, rows, results = first_run
    assert results["ingest"]["interactions"]["rows_in"] == 500
    assert len(rows["online"]) > 0
    pipeline.ingest(s)
    assert _quarantine_rows(s) == rows["quarantine"]
    pipeline.feast_definitions(s)
    pipeline.online_store(s)
    assert _online_rows(s) == rows["online"]


def test_seeded_training_records_identical_versions(first_run):
    """The PPM's ppm_version covers its weights and the encoders of its ME features; the
    caches carry it, and the URM is labelled with the version of the cache rows it trained on (finding 1)."""
    from ppm_platform.features.ppm_caches import ppm_version_for

    s, _, _, results = first_run
    ppm_json = json.loads((s.models_dir / "ppm" / "model.json").read_text())
    version = results["ppm_model"]["ppm_version"]
    assert version == ppm_version_for(ppm_json["version"], results["item_multimodal"]["encoder_version"])
    assert ppm_json["metadata"]["ppm_version"] == version != ppm_json["version"]
    assert set(pd.read_parquet(s.features_dir / "ppm_user_cache.parquet")["ppm_user_version"]) == {version}
    assert set(pd.read_parquet(s.features_dir / "ppm_item_cache.parquet")["ppm_item_version"]) == {version}
    urm = json.loads((s.models_dir / "urm" / "model.json").read_text())["metadata"]
    assert results["urm_model"]["ppm_version"] == urm["ppm_version"] == version
    counts = urm["metrics"]["cache_versions"]
    assert set(counts["ppm_item_version"]["versions"]) == set(counts["ppm_user_version"]["versions"]) == {version}
    assert sum(counts["ppm_item_version"]["versions"].values()) + counts["ppm_item_version"]["null_rows"] == 500
