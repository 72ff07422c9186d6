"""The ``cluster`` profile on a real cluster on loopback: a Spark standalone master + worker
started from the installed pyspark jars, Feast's Spark offline store and a real ``redis-server`` online
store, selected by ``PPM_PROFILE=cluster`` alone. The same tiny synthetic dataset runs through the asset
graph up to ``ranking_demo`` under both profiles (``ppm run`` = ``dagster asset materialize`` in a child
process, as a user runs it; separate artifacts folders, same seeds), and the online scores must agree.

Each profile runs in its own process: a SparkSession is a per-process singleton, so an in-process second
run would silently reuse the first run's ``local[*]`` session. The two runs go side by side (the local run
while the cluster one waits on its JVMs), which is what keeps this module at ~3 minutes on 2 cores.

A third run trains on the cluster's two workers: the cluster run's artifacts copied, ``training.processes``
2 (data-parallel PPM, Base and URM through pyspark's ``TorchDistributor``, one rank per worker) and every asset
from ``ppm_model`` to ``ranking_demo`` materialized again, with its own Redis. Its models must match the
single-process ones (validation AUC within 0.01), load in the same ``Ranker`` and score like them; then a
``urm_model`` run whose rank 1 is killed mid-epoch must resume from its last epoch checkpoint.

Part of ``make test`` (CI): ``make test`` installs ``redis-server`` first (``make redis``); without it this
module fails with the fix in the message, it does not skip. ``make test-cluster`` runs it alone."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

ATOL = 1e-5                   # online score tolerance between profiles (scores are probabilities)
VEC_ATOL = 1e-5               # feature-vector tolerance (ME embeddings, cached PPM vectors; all O(1))
RUN_TIMEOUT_S = 900           # per profile; generous, both profiles may run side by side on a small shared machine
SELECT = "*ranking_demo"      # everything the online ranking needs, encoder fine-tunes included
#: tiny budgets: this test is about the profile. The encoder fine-tunes run (2 text steps, 1 image epoch on the
#: 40 items) and item_multimodal encodes with their weights, as in the demo: both are reproducible from the
#: seed (tests/unit/test_finetune_determinism.py), so both profiles get the same encoder and PPM versions.
#: One torch thread for the fine-tunes: the two runs share the cores.
#: No dropout: then nothing random differs between one training process and two ranks (each rank draws its own
#: dropout masks), so the two-rank models must equal the single-process ones up to float summation order.
CONFIG = {"ppm": {"epochs": 1, "dropout": 0.0},
          "urm": {"epochs": 1, "dropout": 0.0, "id_dropout": 0.0, "content_dropout": 0.0},
          "spark": {"shuffle_partitions": 2},
          "finetune": {"threads": 1, "text": {"epochs": 1, "max_steps": 2}, "image": {"epochs": 1}}}


def _require_tools() -> None:
    """Fail (never skip: in CI a skip would hide a broken setup) when the OS tools the cluster needs are missing."""
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server not found on PATH: the cluster-profile test needs the OS package. Run "
                    "`make redis` (as root: apt-get update && apt-get install -y redis-server); `make test` "
                    "and .ci/run do this themselves", pytrace=False)
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        pytest.fail("java not found: Spark needs Java 17 (apt-get install -y openjdk-17-jre-headless)", pytrace=False)


#: the distributed run: two training ranks, one per standalone worker
DIST_CONFIG = {**CONFIG, "training": {"processes": 2}}
#: validation AUC tolerance between the single-process and the two-rank models (same seed, epochs, global batch)
AUC_TOL = 0.01
#: online score tolerance between the single-process and the two-rank models (probabilities; the weights differ
#: by float summation order only, see CONFIG)
SCORE_TOL_RANKS = 1e-4


def _start_profile(tmp, data_dir, name, extra_env, select, config=None, art=None):
    """Start ``ppm run --select SELECT`` for one profile (own artifacts folder and process group; log file)."""
    art = art or tmp / f"artifacts_{name}"
    art.mkdir(exist_ok=True)
    cfg = art / "config.json"
    cfg.write_text(json.dumps(config or CONFIG))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PPM_")}
    env.update({"PPM_ARTIFACTS_DIR": str(art), "PPM_CONFIG": str(cfg), "PPM_DATASET": "canonical",
                "PPM_DATA_DIR": str(data_dir), "PPM_PROFILE": "local", **extra_env})
    log = tmp / f"{name}.log"
    with log.open("w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "ppm_platform.cli", "run", "--select", select], env=env,
                                stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    return {"name": name, "art": art, "proc": proc, "log": log, "t0": time.monotonic()}


def _stop(run) -> None:
    """Kill a still-running profile run with its children (``ppm run`` -> ``dagster`` -> Spark JVM)."""
    if run["proc"].poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run["proc"].pid, signal.SIGKILL)
        run["proc"].wait()


def _finish(run) -> float:
    """Wait for a profile run (``RUN_TIMEOUT_S`` from its start); assert it succeeded. Returns its seconds."""
    try:
        run["proc"].wait(timeout=max(1.0, RUN_TIMEOUT_S - (time.monotonic() - run["t0"])))
    except subprocess.TimeoutExpired:
        _stop(run)
        pytest.fail(f"{run['name']} run did not finish within {RUN_TIMEOUT_S} s; log {run['log']}:\n"
                    f"{run['log'].read_text(errors='replace')[-8000:]}")
    out = run["log"].read_text(errors="replace")
    assert run["proc"].returncode == 0, f"{run['name']} run failed (exit {run['proc'].returncode}):\n{out[-8000:]}"
    return time.monotonic() - run["t0"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Both profiles side by side: the local run starts first, the cluster run as soon as the cluster is up."""
    from ppm_platform.data.synthetic import SyntheticConfig, generate
    from ppm_platform.testing.cluster import local_cluster

    _require_tools()
    tmp = tmp_path_factory.mktemp("cluster_profile")
    data = tmp / "data"
    generate(SyntheticConfig(n_users=30, n_items=40, n_impressions=3000, seed=3), data)
    started = [_start_profile(tmp, data, "local", {}, SELECT)]
    try:
        with local_cluster(tmp / "cluster", workers=2) as cluster:
            started.append(_start_profile(tmp, data, "cluster", cluster.env(), SELECT))
            local, remote = started
            seconds = {"local": round(_finish(local)), "cluster": round(_finish(remote))}
            print(f"\ncluster-profile runs (side by side), seconds: {seconds}")
            yield {"data": data, "local": local["art"], "cluster": remote["art"], "cluster_handle": cluster,
                   "tmp": tmp}
    finally:
        for run in started:
            _stop(run)


def _settings(art, extra=None):
    from ppm_platform.config import Settings

    env = {"PPM_ARTIFACTS_DIR": str(art), "PPM_DATASET": "canonical", "PPM_CONFIG": str(art / "config.json"),
           **(extra or {})}
    return Settings.from_env(env=env)


def test_cluster_run_used_spark_standalone_spark_offline_store_and_redis(runs):
    import redis
    import yaml

    from ppm_platform.feature_store import ASOF_STORE_TYPE, redis_connection_string

    c = runs["cluster_handle"]
    apps = list((c.workdir / "worker").glob("app-*/*/stderr"))
    assert apps, "no executor ran on the standalone worker"
    cfg = yaml.safe_load((runs["cluster"] / "feast" / "feature_store.yaml").read_text())
    assert cfg["offline_store"]["type"] == "spark" and cfg["offline_store"]["spark_conf"]["spark.master"] == c.spark_master
    assert cfg["online_store"] == {"type": "redis", "connection_string": redis_connection_string(c.redis)}
    assert cfg["online_store"]["connection_string"].startswith(c.redis + ",")  # the bounded client's timeouts
    host, port = c.redis.split(":")
    assert redis.Redis(host=host, port=int(port)).dbsize() >= 30 + 40   # user + item entity keys
    local_cfg = yaml.safe_load((runs["local"] / "feast" / "feature_store.yaml").read_text())
    assert local_cfg["offline_store"]["type"] == ASOF_STORE_TYPE and local_cfg["online_store"]["type"] == "sqlite"


def _max_abs_diff(x, y) -> float:
    return max((float(np.abs(np.asarray(u, dtype=np.float64) - np.asarray(v, dtype=np.float64)).max())
                for u, v in zip(x, y) if u is not None and len(u)), default=0.0)


def _stage(run_art, stage: str) -> dict:
    return json.loads((run_art / "runs" / f"{stage}.json").read_text())


def test_both_profiles_trained_the_same_models(runs):
    """Same data + seed + config: the fine-tuned encoders and the PPM have the same weight hashes in both
    runs (the stages are reproducible; a difference here is a reproducibility bug, and it would show up below
    as float noise of ~1e-4 in every vector and score)."""
    for stage, key in (("text_encoder", "version"), ("image_encoder", "version"), ("ppm_model", "ppm_version"),
                       ("ppm_model", "encoder_version")):
        a, b = _stage(runs["local"], stage)[key], _stage(runs["cluster"], stage)[key]
        assert a == b, f"{stage}.{key} differs between two runs with the same seed: {a} vs {b}"


def test_item_multimodal_encoded_on_the_worker_equals_local(runs):
    """The frozen (fine-tuned) encoders in Spark Python workers on the standalone executor (cluster) vs
    ``local[*]``: the same items, the fine-tuned encoder weights in both, and the same ME vectors."""
    a, b = (pd.read_parquet(runs[r] / "features" / "item_multimodal.parquet").sort_values("item_id")
            .reset_index(drop=True) for r in ("local", "cluster"))
    assert len(a) == len(b) == 40 and a["item_id"].tolist() == b["item_id"].tolist()
    finetuned = f"{_stage(runs['local'], 'text_encoder')['version']}|{_stage(runs['local'], 'image_encoder')['version']}"
    assert set(a["encoder_version"]) == set(b["encoder_version"]) == {finetuned}
    assert a["has_image"].tolist() == b["has_image"].tolist()
    for col in ("text_emb", "image_emb"):
        diff = _max_abs_diff(a[col], b[col])
        print(f"item_multimodal {col}: max |local - cluster| = {diff:.3g}")
        assert diff <= VEC_ATOL, (col, diff)
    assert _max_abs_diff(a["text_emb"], a["text_emb"].iloc[::-1].reset_index(drop=True)) > 100 * VEC_ATOL


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
                # at most float noise: the frozen PPM runs in Spark Python workers with other batch boundaries
                # (local[*] vs 1 executor core). Measured 0.0 (bit-identical) in 3 runs; vectors are O(1), a
                # wrong or missing join is O(1) off
                diff = _max_abs_diff(x, y)
                print(f"training_set {col}: max |local - cluster| = {diff:.3g}")
                assert diff <= VEC_ATOL, (col, diff)
            else:
                if col.endswith("_version"):  # a hash: one per run, the one its stage recorded
                    stage = "item_semantic_id" if col == "sid_version" else "ppm_model"  # codebook / PPM weights
                    for run, col_values in (("local", x), ("cluster", y)):
                        version = json.loads((runs[run] / "runs" / f"{stage}.json").read_text())[col if stage != "ppm_model" else "ppm_version"]
                        assert set(col_values.dropna()) == {version}, (run, col)
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
        # equal up to the float noise of the inputs (see the training-set test); a broken profile (missing / cold-start features) moves scores by the spread between
        # items, which must be far above the tolerance for the check to mean anything
        diff = float(np.abs(b[["click", "order"]].to_numpy() - a[["click", "order"]].to_numpy()).max())
        print(f"online scores user {u}: max |local - cluster| = {diff:.3g}, click spread "
              f"{a['click'].max() - a['click'].min():.3g}")
        np.testing.assert_allclose(b[["click", "order"]].to_numpy(), a[["click", "order"]].to_numpy(),
                                   rtol=0, atol=ATOL, err_msg=f"user {u}")
        assert a["click"].max() - a["click"].min() > 100 * ATOL


def _ppm_to_ranking_demo(settings) -> str:
    """Every asset from ``ppm_model`` down to ``ranking_demo`` (what a new PPM invalidates), as ``--select``."""
    import dagster as dg

    from dagster_project.definitions import build_defs

    graph = build_defs(settings).resolve_asset_graph()
    sel = dg.AssetSelection.assets("ppm_model").downstream() & dg.AssetSelection.assets("ranking_demo").upstream()
    return ",".join(sorted(k.to_user_string() for k in sel.resolve(graph)))


@pytest.fixture(scope="module")
def distributed(runs):
    """The cluster run's artifacts copied and retrained from ``ppm_model`` on with two training ranks on the
    two standalone workers (its own Redis, so the cluster run's online rows stay as they are)."""
    from ppm_platform.testing.cluster import start_redis

    tmp, c = runs["tmp"], runs["cluster_handle"]
    art = tmp / "artifacts_distributed"
    shutil.copytree(runs["cluster"], art, symlinks=True)
    (tmp / "redis_distributed").mkdir()
    redis_proc, redis_addr = start_redis(tmp / "redis_distributed")
    env = {**c.env(), "PPM_REDIS": redis_addr}
    try:
        select = _ppm_to_ranking_demo(_settings(runs["cluster"]))
        run = _start_profile(tmp, runs["data"], "distributed", env, select, DIST_CONFIG, art)
        print(f"\ndistributed run ({select}): {round(_finish(run))} s")
        yield {"art": art, "env": env}
    finally:
        redis_proc.terminate()
        redis_proc.wait()


def _valid_click_auc(record: dict) -> float:
    """The validation click AUC of the kept epoch of a training stage record."""
    if "valid_click_auc_pretraining" in record:  # ppm_model: the pre-training objective selects the epoch
        return record["valid_click_auc_pretraining"]
    return max(e["valid_click_auc"] for e in record["epochs"])


def test_two_rank_training_matches_single_process(runs, distributed):
    """Same seed, epochs and global batch: the two-rank PPM, Base and URM reach the single-process validation
    AUC within 0.01; they really ran on two ranks; the URM is labelled with the two-rank PPM's caches. (Base
    runs the URM's code path without the PPM top; the cluster run's selection does not train it.)"""
    for stage in ("ppm_model", "urm_model"):
        one, two = _stage(runs["cluster"], stage), _stage(distributed["art"], stage)
        assert one["processes"] == 1 and two["processes"] == 2, stage
        a, b = _valid_click_auc(one), _valid_click_auc(two)
        print(f"{stage}: valid click AUC 1 rank {a:.4f}, 2 ranks {b:.4f}")
        assert abs(a - b) <= AUC_TOL, (stage, a, b)
    ppm = _stage(distributed["art"], "ppm_model")
    assert _stage(distributed["art"], "urm_model")["ppm_version"] == ppm["ppm_version"]
    assert ppm["ppm_version"] != _stage(runs["cluster"], "ppm_model")["ppm_version"]  # really retrained
    assert not (distributed["art"] / "checkpoints" / "urm").exists()  # removed once the model is saved


def test_two_rank_models_serve_from_the_online_store_like_single_process(runs, distributed):
    """The two-rank artifacts load in the same Ranker (its own Redis rows, version checks included) and score
    the same users and items as the single-process models up to float noise (no dropout: the weights differ
    by summation order only); a broken distributed model is off by the spread between items, checked larger."""
    from ppm_platform.serving.ranker import Ranker

    c = runs["cluster_handle"]
    inter = pd.read_parquet(runs["local"] / "tables" / "interactions.parquet")
    users = [int(u) for u in inter["user_id"].value_counts().index[:3]]
    items = sorted(int(i) for i in inter["item_id"].unique())
    one = Ranker(_settings(runs["cluster"], c.env()))
    two = Ranker(_settings(distributed["art"], distributed["env"]))
    assert two.model_version != one.model_version
    for u in users:
        a = one.rank(u, items).scores.sort_values("item_id").reset_index(drop=True)
        b = two.rank(u, items).scores.sort_values("item_id").reset_index(drop=True)
        assert a["item_id"].tolist() == b["item_id"].tolist() and np.isfinite(b[["click", "order"]].to_numpy()).all()
        diff = float(np.abs(b[["click", "order"]].to_numpy() - a[["click", "order"]].to_numpy()).max())
        spread = float(a["click"].max() - a["click"].min())
        print(f"online scores user {u}: max |1 rank - 2 ranks| = {diff:.3g}, click spread {spread:.3g}")
        assert diff <= SCORE_TOL_RANKS and spread > 10 * SCORE_TOL_RANKS


def test_killed_rank_resumes_from_the_last_epoch_checkpoint(runs, distributed):
    """``ppm run --select urm_model`` on two ranks; rank 1's process is SIGKILLed in epoch 2 (after the epoch-1
    checkpoint is complete): the failed launch is retried, resumes after epoch 1, and the run completes."""
    import threading

    tmp = runs["tmp"]
    config = {**DIST_CONFIG, "urm": {"epochs": 3, "batch_size": 8}}  # ~300 steps an epoch: time to kill one
    ckpt = distributed["art"] / "checkpoints" / "urm"
    killed: dict = {}

    def kill_rank_1_in_epoch_2() -> None:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while time.monotonic() < deadline and not killed:
            try:
                beat = json.loads((ckpt / "progress-rank1.json").read_text())
            except (OSError, ValueError):
                beat = None
            if beat and beat["epoch"] == 2 and (ckpt / "epoch-0001" / "COMPLETE").exists():
                os.kill(beat["pid"], signal.SIGKILL)
                killed.update(beat)
            time.sleep(0.05)

    watcher = threading.Thread(target=kill_rank_1_in_epoch_2, daemon=True)
    watcher.start()
    run = _start_profile(tmp, runs["data"], "killed", distributed["env"], "urm_model", config, distributed["art"])
    seconds = _finish(run)
    watcher.join(timeout=5)
    rec = _stage(distributed["art"], "urm_model")
    print(f"\nkilled-rank run: {round(seconds)} s, killed {killed}, launches {rec['launches']}, "
          f"resumed after epoch {rec['resumed_after_epoch']}")
    assert killed, f"rank 1 was never seen in epoch 2; log:\n{run['log'].read_text(errors='replace')[-4000:]}"
    assert rec["launches"] == 2 and rec["resumed_after_epoch"] == 1 and rec["processes"] == 2
    assert [e["epoch"] for e in rec["epochs"]] == [1, 2, 3]
    assert np.isfinite(rec["test_click_auc"]) and not ckpt.exists()
