"""Synthetic canonical tables: determinism by seed, contract, Zipf popularity, cold start, and a
content signal that a content model can learn (clicks depend on user taste x item topic)."""

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from ppm_platform.config import Settings
from ppm_platform.data.ingest import ingest_dataset
from ppm_platform.data.synthetic import TOPICS, SyntheticConfig, digest, generate
from ppm_platform.training.metrics import auc

CFG = SyntheticConfig(n_users=300, n_items=120, n_impressions=30_000, seed=7, chunk_rows=7_000)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("syn")
    summary = generate(CFG, out)
    return out, summary


def test_same_seed_identical_files_other_seed_differs(data, tmp_path):
    out, _ = data
    generate(CFG, tmp_path / "again")
    assert digest(tmp_path / "again") == digest(out)
    generate(SyntheticConfig(**{**CFG.__dict__, "seed": 8}), tmp_path / "other")
    assert digest(tmp_path / "other") != digest(out)


def test_tables_follow_the_canonical_contract_and_ingest_cleanly(data, tmp_path):
    out, summary = data
    s = Settings.from_env(env={}, dataset="canonical", data_dir=str(out), artifacts_dir=str(tmp_path / "art"))
    res = ingest_dataset(s)
    for name, n in (("items", 120), ("users", 300), ("interactions", 30_000), ("queries", 240)):
        assert res[name].rows_in == n and res[name].rows_quarantined == 0, (name, res[name].reasons)
    assert sum(res["items"].fields_repaired.values()) == 0           # every image opens
    inter = pd.read_parquet(out / "interactions.parquet")
    assert inter["event_timestamp"].is_monotonic_increasing and inter["event_timestamp"].is_unique
    assert ((inter["order"] == 0) | (inter["click"] == 1)).all()      # order implies click
    assert summary["clicks"] == int(inter["click"].sum()) and summary["orders"] == int(inter["order"].sum())
    assert 0.1 < summary["ctr"] < 0.4


def test_images_are_small_jpegs_coloured_by_topic(data):
    out, _ = data
    items = pd.read_parquet(out / "items.parquet")
    means = {}
    for _, r in items.iterrows():
        img = Image.open(out / r["image_uri"])
        assert img.format == "JPEG" and img.size == (64, 64)
        px = np.asarray(img, dtype=float).reshape(-1, 3)
        fg = px[px.min(1) < 200]                   # the shape (background channels are >= 225)
        assert len(fg) > 64
        means.setdefault(r["categories"][0], []).append(fg.mean(0))
    # same topic -> similar shape colour, different topics -> different: nearest topic centroid recovers it
    cents = {t: np.mean(v, 0) for t, v in means.items()}
    hits = sum(min(cents, key=lambda c: np.linalg.norm(m - cents[c])) == t for t, v in means.items() for m in v)
    assert hits / len(items) > 0.9


def test_popularity_is_zipf_like(data):
    out, _ = data
    counts = pd.read_parquet(out / "interactions.parquet")["item_id"].value_counts().to_numpy()
    ranks = np.arange(1, len(counts) + 1)
    slope = np.polyfit(np.log(ranks[:50]), np.log(counts[:50]), 1)[0]
    assert -1.5 < slope < -0.7                     # zipf_a = 1.1 (cold items / re-draws bend it a little)
    assert counts[:12].sum() / counts.sum() > 0.4  # the head (10 % of items) takes a large share


def test_cold_items_appear_only_after_creation_late_in_window(data):
    out, summary = data
    items = pd.read_parquet(out / "items.parquet")
    inter = pd.read_parquet(out / "interactions.parquet").merge(items[["item_id", "created_at"]], on="item_id")
    assert (inter["event_timestamp"] >= inter["created_at"]).all()
    start, end = inter["event_timestamp"].min(), inter["event_timestamp"].max()
    late = items[items["created_at"] > start]
    assert len(late) == summary["cold_items"] == 12
    assert (late["created_at"] >= start + 0.79 * (end - start)).all()
    shown = set(inter.loc[inter["created_at"] > start, "item_id"])
    assert len(shown) >= 6                         # most cold items are shown once they exist


def test_clicks_carry_content_signal(data):
    """The topic match (user's click rate on the item's topic in the first half) predicts clicks in the
    second half far better than chance: a content model has something to learn."""
    out, _ = data
    items = pd.read_parquet(out / "items.parquet")
    inter = pd.read_parquet(out / "interactions.parquet")
    inter["topic"] = inter["item_id"].map(items.set_index("item_id")["categories"].map(lambda c: c[0]))
    half = len(inter) // 2
    train, test = inter.iloc[:half], inter.iloc[half:]
    rate = train.groupby(["user_id", "topic"])["click"].mean()
    score = pd.Series(list(zip(test["user_id"], test["topic"]))).map(rate).fillna(train["click"].mean())
    assert auc(test["click"].to_numpy(), score.to_numpy()) > 0.6
    assert {t for t, *_ in TOPICS} >= set(inter["topic"])


def test_bad_config_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="n_items"):
        generate(SyntheticConfig(n_items=0), tmp_path)
    with pytest.raises(ValueError, match="n_topics"):
        generate(SyntheticConfig(n_topics=99), tmp_path)


def test_cli_synth_writes_loader_layout(tmp_path):
    from ppm_platform.cli import main

    res = CliRunner().invoke(main, ["synth", "--users", "20", "--items", "15", "--impressions", "500",
                                    "--seed", "1", "--out", str(tmp_path / "d")])
    assert res.exit_code == 0, res.output
    assert "15 items" in res.output and "500 impressions" in res.output
    for f in ("items.parquet", "users.parquet", "interactions.parquet", "queries.parquet", "images/1.jpg"):
        assert (tmp_path / "d" / f).is_file()
    bad = CliRunner().invoke(main, ["synth", "--users", "0", "--out", str(tmp_path / "e")])
    assert bad.exit_code != 0 and "n_users" in bad.output
