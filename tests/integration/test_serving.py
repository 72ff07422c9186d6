"""Online serving on the real MovieLens-100K subset materialized by the session pipeline run
(tests/integration/conftest.py): train/serve parity asset check (passes, and fails on a perturbed online
feature), version refusal after a PPM retrain (the URM refused on the old training set; a URM of the
recomputed caches refused against the old online caches), a new item made rankable
through the Feast push sources, and the HTTP service over the real online store."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.integration


def _check(result, name):
    evals = [e for e in result.get_asset_check_evaluations() if e.check_name == name]
    assert evals, f"asset check {name} did not run"
    return evals[-1]


def test_parity_asset_check_passes_on_real_data(pipeline_run):
    settings, result = pipeline_run
    ev = _check(result, "serving_parity")
    md = {k: getattr(v, "value", v) for k, v in ev.metadata.items()}
    pairs = pd.read_parquet(settings.tables_dir / "interactions.parquet",
                            columns=["user_id", "item_id"]).drop_duplicates()
    assert int(md["pairs"]) == min(settings.serving.parity_pairs, len(pairs)) >= 1000  # text in the UI
    assert ev.passed and md["max_abs_diff"] <= 1e-5 and md["pairs_above_atol"] == 0
    assert md["users"] > 100  # spread over many users, not one


def test_parity_fails_on_a_perturbed_online_feature(pipeline_run):
    """Overwrite one item's cached PPM vector in the online store only: the check must catch exactly the
    pairs with that item; restoring the row makes it pass again."""
    from ppm_platform.feature_store import get_store
    from ppm_platform.serving.parity import check_parity, sample_pairs
    from ppm_platform.serving.ranker import Ranker

    settings, _ = pipeline_run
    pairs = sample_pairs(settings, 200, seed=7)
    item = int(pairs["item_id"].value_counts().index[0])
    n_item_pairs = int((pairs["item_id"] == item).sum())
    cache = pd.read_parquet(settings.features_dir / "ppm_item_cache.parquet")
    original = cache[cache["item_id"] == item].reset_index(drop=True)
    perturbed = original.assign(ppm_item_vec=[np.asarray(original.at[0, "ppm_item_vec"]) + 0.5])
    store = get_store(settings)
    ranker = Ranker(settings, store=store)
    try:
        store.write_to_online_store("ppm_item_cache", perturbed)
        ranker.item_cache.refresh()  # the serving path reads items through its cache (its refresh is periodic)
        bad = check_parity(settings, pairs=pairs, ranker=ranker)
    finally:
        store.write_to_online_store("ppm_item_cache", original)
        ranker.item_cache.refresh()
    assert not bad["passed"] and bad["max_abs_diff"] > 1e-3
    assert bad["pairs_above_atol"] == n_item_pairs
    assert {w["item_id"] for w in bad["worst"][:min(5, n_item_pairs)]} == {item}
    good = check_parity(settings, pairs=pairs, ranker=ranker)
    assert good["passed"] and good["max_abs_diff"] <= 1e-5


def test_retrained_ppm_without_recomputed_caches_is_refused(pipeline_run, spark, tmp_path):
    """PPM re-trained (another seed -> another ppm_version): the URM is not re-trained on
    the old training set (its cache rows are of the old version; refused naming both versions and the row
    counts, nothing published). Once the caches are recomputed and the training set rebuilt, the URM is
    labelled with the version of those cache rows, the new one; the online store still holds the old caches
    (not materialized), so the Ranker refuses and /health reports version_mismatch (503)."""
    from fastapi.testclient import TestClient

    from ppm_platform import pipeline
    from ppm_platform.serving.app import create_app
    from ppm_platform.serving.ranker import Ranker, VersionMismatchError

    settings, _ = pipeline_run
    art = tmp_path / "artifacts"
    for sub in ("tables", "features", "models", "feast"):
        shutil.copytree(settings.artifacts_dir / sub, art / sub)
    shutil.copy2(settings.artifacts_dir / "training_set.parquet", art / "training_set.parquet")
    s2 = settings.model_copy(update={"artifacts_dir": art, "seed": settings.seed + 1})
    old = Ranker(s2, item_cache=False).ppm_version
    new = pipeline.ppm_model(s2)["ppm_version"]
    assert new != old
    ts = pd.read_parquet(art / "training_set.parquet", columns=["ppm_user_version", "ppm_item_version"])
    n_user, n_item = int(ts["ppm_user_version"].notna().sum()), int(ts["ppm_item_version"].notna().sum())
    assert set(ts["ppm_user_version"].dropna()) == set(ts["ppm_item_version"].dropna()) == {old}
    with pytest.raises(ValueError, match=rf"cache rows hold ppm_version {old} \(ppm_user_version: {old} "
                                         rf"\({n_user} rows\), null {len(ts) - n_user} rows; ppm_item_version: "
                                         rf"{old} \({n_item} rows\).* warm-starts from the PPM of version {new}"):
        pipeline.urm_model(s2)
    assert Ranker(s2, item_cache=False).ppm_version == old  # nothing published

    pipeline.ppm_item_cache(s2, spark)
    pipeline.ppm_user_cache(s2, spark)
    pipeline.feast_definitions(s2)  # the copied registry's sources point at the first run's tables
    pipeline.training_set(s2)
    res = pipeline.urm_model(s2)
    assert res["ppm_version"] == new
    pipeline.export_onnx(s2, "urm")
    ranker = Ranker(s2)
    assert ranker.ppm_version == new
    inter = pd.read_parquet(s2.tables_dir / "interactions.parquet")
    user, items = int(inter["user_id"].iloc[-1]), [int(i) for i in inter["item_id"].unique()[:10]]
    with pytest.raises(VersionMismatchError, match=f"ppm_version {new}.*{old}"):
        ranker.rank(user, items)
    client = TestClient(create_app(s2, ranker=ranker))
    h = client.get("/health")
    assert h.status_code == 503 and h.json()["status"] == "version_mismatch"
    assert h.json()["cache_versions_seen"] == [old] and h.json()["ppm_version"] == new
    r = client.post("/rank", json={"user_id": user, "item_ids": items})
    assert r.status_code == 503 and "recompute ppm_item_cache" in r.json()["detail"]


def test_new_item_becomes_rankable_with_content_features(pipeline_run):
    import torch

    from ppm_platform.feature_store import read_online_items
    from ppm_platform.features.item_multimodal import me_matrix
    from ppm_platform.serving.new_item import add_new_item
    from ppm_platform.serving.ranker import Ranker
    from ppm_platform.model_store import load_ppm

    settings, _ = pipeline_run
    ranker = Ranker(settings)
    inter = pd.read_parquet(settings.tables_dir / "interactions.parquet")
    user = int(inter["user_id"].iloc[-1])
    known = [int(i) for i in inter["item_id"].unique()[:20]]
    new_id, blank_id = 9_000_001, 9_000_002  # ids beyond the catalog; blank_id never gets a row
    before = ranker.rank(user, [new_id, *known])
    assert before.unknown_item_ids == [new_id]

    poster = settings.data_dir / "posters" / "300.jpg"  # an image outside the 250-item subset
    info = add_new_item(settings, new_id, "Brand New Thriller (2026)", ["Thriller", "Crime"], poster, 2026,
                        store=ranker.store)
    assert info["has_image"] == 1 and info["ppm_version"] == ranker.ppm_version
    res = ranker.rank(user, [new_id, blank_id, *known])
    assert res.unknown_item_ids == [blank_id]
    rows = res.scores.set_index("item_id")
    assert bool(rows.at[new_id, "known"]) and np.isfinite(rows.at[new_id, "click"])
    # content features change its score vs the content-less fallback (same OOV id, nothing else)
    assert abs(rows.at[new_id, "click"] - rows.at[blank_id, "click"]) > 1e-4
    # the pushed PPM vector is the frozen item tower of the pushed ME feature (read back through Feast)
    online = read_online_items(ranker.store, [new_id], service=[
        "item_multimodal:text_emb", "item_multimodal:image_emb", "item_multimodal:has_image",
        "ppm_item_cache:ppm_item_vec", "item_profile:categories"])
    assert online.at[0, "categories"] == ["Thriller", "Crime"]
    ppm, _ = load_ppm(settings.models_dir / "ppm")
    _, me = me_matrix(online)
    with torch.inference_mode():
        ref = ppm.eval().encode_items(torch.from_numpy(me)).numpy()[0]
    np.testing.assert_allclose(np.asarray(online.at[0, "ppm_item_vec"]), ref, atol=1e-5)


def test_http_service_on_the_real_online_store(pipeline_run):
    from fastapi.testclient import TestClient

    from ppm_platform.serving.app import create_app

    settings, _ = pipeline_run
    inter = pd.read_parquet(settings.tables_dir / "interactions.parquet")
    user = int(inter["user_id"].iloc[-1])
    items = [int(i) for i in inter["item_id"].value_counts().index[:100]]
    client = TestClient(create_app(settings))
    h = client.get("/health")
    assert h.status_code == 200 and h.json()["status"] == "ok"
    r = client.post("/rank", json={"user_id": user, "item_ids": items})
    assert r.status_code == 200
    body = r.json()
    assert sorted(s["item_id"] for s in body["scores"]) == sorted(items) and body["user_known"]
    assert body["unknown_item_ids"] == [] and all(0 < s["click"] < 1 for s in body["scores"])
    too_many = client.post("/rank", json={"user_id": user, "item_ids": list(range(settings.serving.max_candidates + 1))})
    assert too_many.status_code == 422


def test_serve_with_two_workers_starts_answers_and_stops(pipeline_run):
    """`ppm serve --workers 2` (uvicorn worker processes, each with its own Ranker): both workers come up,
    requests are answered with the HTTP contract, SIGTERM stops the parent and its workers."""
    import http.client
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    from ppm_platform.testing.cluster import free_port

    settings, _ = pipeline_run
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PPM_")}
    env.update({"PPM_ARTIFACTS_DIR": str(settings.artifacts_dir), "PPM_DATA_DIR": str(settings.data_dir),
                "PPM_MAX_ITEMS": str(settings.max_items), "PPM_CONFIG": str(settings.artifacts_dir / "config.json")})
    server = subprocess.Popen([sys.executable, "-m", "ppm_platform.cli", "serve", "--port", str(port), "--workers",
                               "2"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    inter = pd.read_parquet(settings.tables_dir / "interactions.parquet")
    body = json.dumps({"user_id": int(inter["user_id"].iloc[-1]),
                       "item_ids": [int(i) for i in inter["item_id"].value_counts().index[:20]]})
    children: list[int] = []
    try:
        deadline = time.monotonic() + 300
        while True:
            assert server.poll() is None, server.stdout.read().decode()[-3000:]
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                c.request("GET", "/health")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the 2-worker service did not come up in 300 s"
            time.sleep(0.5)
        for _ in range(20):  # new connections: spread over the workers
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            c.request("POST", "/rank", body=body, headers={"Content-Type": "application/json"})
            r = c.getresponse()
            doc = json.loads(r.read())
            assert r.status == 200 and len(doc["scores"]) == 20 and set(doc) >= {"user_id", "scores", "ppm_version"}
        # the uvicorn workers, not multiprocessing's resource tracker (also a child; it exits on its own
        # once the parent's pipe closes)
        children = [int(p) for p in subprocess.run(["pgrep", "-P", str(server.pid), "-f", "spawn_main"],
                                                   capture_output=True, text=True).stdout.split()]
        assert len(children) >= 2, children
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            raise
    assert server.returncode is not None

    def alive(pid: int) -> bool:  # a zombie (exited, not yet reaped by PID 1 in a container) counts as gone
        try:
            with open(f"/proc/{pid}/status") as f:
                return not any(line.startswith("State:") and "Z" in line.split()[1] for line in f)
        except FileNotFoundError:
            return False

    deadline = time.monotonic() + 30
    while [p for p in children if alive(p)] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not [p for p in children if alive(p)], "worker processes left behind"
