"""The ``cluster`` profile on a real cluster on loopback (issue #8): a Spark standalone master + worker
started from the installed pyspark jars, Feast's Spark offline store and a real ``redis-server`` online
store, selected by ``PPM_PROFILE=cluster`` alone. The same tiny synthetic dataset runs through the asset
graph up to ``ranking_demo`` under both profiles (``ppm run`` = ``dagster asset materialize`` in a child
process, as a user runs it; separate artifacts folders, same seeds), and the online scores must agree.

Each profile runs in its own process: a SparkSession is a per-process singleton, so an in-process second
run would silently reuse the first run's ``local[*]`` session."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

# `cluster`: excluded from the default `make test` (it runs the whole graph twice, ~25 min on a loaded
# 2-core machine); run it with `make test-cluster`.
pytestmark = [pytest.mark.integration, pytest.mark.cluster]

ATOL = 1e-4                   # online score tolerance between profiles (scores are probabilities)
SELECT = "*ranking_demo"      # everything the online ranking needs (skips the evaluation report)
CONFIG = {"ppm": {"epochs": 1}, "urm": {"epochs": 1},   # tiny budgets: this test is about the profile
          # pre-trained encoders: the image fine-tune is not bit-reproducible between two runs (open issue),
          # which would move every downstream vector; this test compares the profiles, not the fine-tune
          "finetune": {"use_finetuned": False, "text": {"epochs": 1, "max_steps": 2}, "image": {"epochs": 1}}}


def _run_profile(tmp, data_dir, name, extra_env):
    art = tmp / f"artifacts_{name}"
    art.mkdir()
    cfg = art / "config.json"
    cfg.write_text(json.dumps(CONFIG))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PPM_")}
    env.update({"PPM_ARTIFACTS_DIR": str(art), "PPM_CONFIG": str(cfg), "PPM_DATASET": "canonical",
                "PPM_DATA_DIR": str(data_dir), "PPM_PROFILE": "local", **extra_env})
    proc = subprocess.run([sys.executable, "-m", "ppm_platform.cli", "run", "--select", SELECT], env=env,
                          capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, f"{name} run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return art, env


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from ppm_platform.data.synthetic import SyntheticConfig, generate
    from ppm_platform.testing.cluster import local_cluster

    tmp = tmp_path_factory.mktemp("cluster_profile")
    data = tmp / "data"
    generate(SyntheticConfig(n_users=30, n_items=40, n_impressions=3000, seed=3), data)
    local_art, _ = _run_profile(tmp, data, "local", {})
    with local_cluster(tmp / "cluster") as cluster:
        cluster_art, _ = _run_profile(tmp, data, "cluster", cluster.env())
        yield {"data": data, "local": local_art, "cluster": cluster_art, "cluster_handle": cluster}


def _settings(art, extra=None):
    from ppm_platform.config import Settings

    env = {"PPM_ARTIFACTS_DIR": str(art), "PPM_DATASET": "canonical", "PPM_CONFIG": str(art / "config.json"),
           **(extra or {})}
    return Settings.from_env(env=env)


def test_cluster_run_used_spark_standalone_spark_offline_store_and_redis(runs):
    import redis
    import yaml

    c = runs["cluster_handle"]
    apps = list((c.workdir / "worker").glob("app-*/*/stderr"))
    assert apps, "no executor ran on the standalone worker"
    cfg = yaml.safe_load((runs["cluster"] / "feast" / "feature_store.yaml").read_text())
    assert cfg["offline_store"]["type"] == "spark" and cfg["offline_store"]["spark_conf"]["spark.master"] == c.spark_master
    assert cfg["online_store"] == {"type": "redis", "connection_string": c.redis}
    host, port = c.redis.split(":")
    assert redis.Redis(host=host, port=int(port)).dbsize() >= 30 + 40   # user + item entity keys
    local_cfg = yaml.safe_load((runs["local"] / "feast" / "feature_store.yaml").read_text())
    assert local_cfg["offline_store"]["type"] == "duckdb" and local_cfg["online_store"]["type"] == "sqlite"


def test_point_in_time_training_sets_are_identical(runs):
    """DuckDB (local) vs Spark (cluster) offline store: the same rows, ids, sequences, labels and versions;
    the cached PPM vectors equal up to float32 noise; each run's cache rows carry its own ppm_version."""
    a = pd.read_parquet(runs["local"] / "training_set.parquet")
    b = pd.read_parquet(runs["cluster"] / "training_set.parquet")
    assert len(a) == len(b) == 3000 and list(a.columns) == list(b.columns)
    for col in a.columns:
        x, y = a[col], b[col]
        if x.dtype == object:
            assert [u is None for u in x] == [v is None for v in y], col
            if col in ("ppm_user_seq", "ppm_item_vec"):
                # float noise only: the frozen PPM runs in Spark Python workers with other batch boundaries
                # (local[*] vs 1 executor core), and the fine-tuned image encoder is not bit-reproducible run
                # to run (its weight hash differs between two runs with the same seed), which moves the ME
                # features and the PPM weights by float32 noise. Measured max |diff| 3.7e-5 and 2.0e-4 in two runs.
                diff = max((np.abs(np.asarray(u) - np.asarray(v)).max() for u, v in zip(x, y)
                            if u is not None and len(u)), default=0.0)
                assert diff <= 1e-3, diff   # vectors are O(1); a wrong or missing join is O(1) off
            else:
                if col.endswith("_version"):  # a weight hash: one per run, the one its ppm_model recorded
                    for run, col_values in (("local", x), ("cluster", y)):
                        ppm_version = json.loads((runs[run] / "runs" / "ppm_model.json").read_text())["ppm_version"]
                        assert set(col_values.dropna()) == {ppm_version}, (run, col)
                    continue
                same = [(np.asarray(u).tolist() if u is not None else None) ==
                        (np.asarray(v).tolist() if v is not None else None) for u, v in zip(x, y)]
                assert all(same), (col, same.count(False))
        else:
            pd.testing.assert_series_equal(x, y, check_dtype=False, obj=col)
    assert (a["hist_len"].fillna(0) > 0).mean() > 0.5    # the sequences are really joined, not all NULL


def test_online_scores_equal_across_profiles(runs):
    from ppm_platform.serving.ranker import Ranker

    c = runs["cluster_handle"]
    inter = pd.read_parquet(runs["local"] / "tables" / "interactions.parquet")
    users = [int(u) for u in inter["user_id"].value_counts().index[:3]]
    items = sorted(int(i) for i in inter["item_id"].unique())
    local = Ranker(_settings(runs["local"]))
    cluster = Ranker(_settings(runs["cluster"], {**c.env()}))
    for u in users:
        a = local.rank(u, items).scores.sort_values("item_id").reset_index(drop=True)
        b = cluster.rank(u, items).scores.sort_values("item_id").reset_index(drop=True)
        assert len(a) == len(items) and a["item_id"].tolist() == b["item_id"].tolist()
        assert np.isfinite(a[["click", "order"]].to_numpy()).all()
        # equal up to the float noise of the inputs (see the training-set test): measured max |diff|
        # 1.5e-7 and 1.2e-5 in two runs; a broken profile (missing / cold-start features) moves scores by
        # the spread between items, which must be far above the tolerance for the check to mean anything
        np.testing.assert_allclose(b[["click", "order"]].to_numpy(), a[["click", "order"]].to_numpy(),
                                   rtol=0, atol=ATOL, err_msg=f"user {u}")
        assert a["click"].max() - a["click"].min() > 20 * ATOL
