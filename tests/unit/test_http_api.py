"""HTTP contract of the ranking service (ppm_platform.serving.app) on a tiny real Feast store (SQLite online
store, 3 users x 3 items written by the test) and a small URM exported to ONNX by the test: good requests,
cold-start flags, every kind of bad request (4xx with a message, never 500), /health, version refusal, and
FeatureVectorizer.transform_request == transform on the broadcast frame."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest
import torch
from fastapi.testclient import TestClient

from ppm_platform import feature_store as fsmod
from ppm_platform.config import Settings
from ppm_platform.data import schemas
from ppm_platform.io import write_parquet_atomic
from ppm_platform.models import URM, URMConfig
from ppm_platform.models.ppm import PPMConfig
from ppm_platform.serving.app import create_app
from ppm_platform.serving.onnx_export import export_urm_onnx
from ppm_platform.serving.ranker import Ranker
from ppm_platform.model_store import save_model
from ppm_platform.features.encoding import FeatureVectorizer

try:  # pytest's default (prepend) import mode puts tests/unit on sys.path
    from test_feature_store import DM, ITEMS, L, USERS, _write_tables
except ImportError:  # tests/ made a package
    from tests.unit.test_feature_store import DM, ITEMS, L, USERS, _write_tables

VERSION = "p1"
AS_OF = datetime(2024, 2, 1, tzinfo=timezone.utc)


def _user_cache_one_version(settings: Settings) -> None:
    """_write_tables stamps each user-cache row with its own version; serving needs one PPM version."""
    p = settings.features_dir / "ppm_user_cache.parquet"
    write_parquet_atomic(pd.read_parquet(p).assign(ppm_user_version=VERSION), p, schemas.PPM_USER_CACHE)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """:func:`build_served` with max 5 candidates and 400-byte bodies."""
    return build_served(tmp_path_factory.mktemp("http"), serving={"max_candidates": 5, "max_body_bytes": 400})


def online_tables(root, **settings_kw):
    """Settings under ``root`` (``settings_kw``: further ``Settings`` fields), the feature tables of
    test_feature_store with one ppm_version (VERSION) in the caches, applied and materialized as of AS_OF.
    Returns ``(settings, frame)``: ``frame`` = the offline point-in-time frame of every (user, item) pair."""
    settings = Settings.from_env(env={}, artifacts_dir=root / "artifacts", sequence={"max_len": L},
                                 ppm={"d_model": DM}, **settings_kw).ensure_dirs()
    _write_tables(settings)
    _user_cache_one_version(settings)
    fsmod.apply_definitions(settings)
    fsmod.materialize(settings, end=AS_OF)
    entity = pd.DataFrame([(u, i) for u in USERS for i in ITEMS], columns=["user_id", "item_id"])
    return settings, fsmod.get_training_frame(settings, entity.assign(event_timestamp=AS_OF))


def build_served(root, **settings_kw):
    """Feature tables -> apply -> materialize; a URM with the right vocabularies exported to ONNX and saved
    with its model.json as the pipeline does; an app over it. ``settings_kw``: further ``Settings`` fields
    (e.g. ``serving``, ``online_store="redis"`` + ``redis``). Returns ``(settings, ranker, client, model,
    encoder, frame)``."""
    settings, frame = online_tables(root, **settings_kw)
    train = frame[frame["item_id"] != ITEMS[-1]]  # item 12 -> OOV
    enc = FeatureVectorizer.fit(train, max_len=L, ppm_dim=DM, counter_windows=tuple(settings.counters.windows_days),
                             rate_prior={"click": 0.5, "order": 0.2, "strength": 10.0})
    torch.manual_seed(0)
    cfg = URMConfig(n_users=enc.n_users, n_items=enc.n_items, user_side_cardinalities=enc.user_side_cardinalities,
                    n_genres=enc.n_genres, n_user_dense=enc.n_user_dense, n_item_dense=enc.n_item_dense, max_len=L,
                    emb_dim=4, cross_layers=1, dnn_hidden=(8,), n_experts=2,
                    expert_hidden=8, tower_hidden=4, dropout=0.0, use_ppm=True,
                    ppm=PPMConfig(me_dim=6, d_model=DM, n_layers=1, n_heads=1, ff_dim=4, max_len=L,
                                  n_time_buckets=4, readout_hidden=4, dropout=0.0))
    model = URM(cfg).eval()
    mdir = settings.models_dir / "urm"
    save_model(model, cfg, mdir, "urm", {"feature_encoder": enc.to_dict(), "ppm_version": VERSION,
                                         "user_feature_service": "urm_user", "item_feature_service": "urm_item",
                                         "training_feature_service": "urm_training"})
    export_urm_onnx(model, enc.transform(frame), mdir / "model.onnx")
    ranker = Ranker(settings)
    client = TestClient(create_app(settings, ranker=ranker))
    return settings, ranker, client, model, enc, frame


def test_rank_scores_every_candidate_like_torch(served):
    settings, _, client, model, enc, frame = served
    r = client.post("/rank", json={"user_id": 1, "item_ids": [11, 10, 12]})
    assert r.status_code == 200, r.text
    body = r.json()
    from ppm_platform.serving.app import RankResponse

    assert RankResponse.model_validate(body).model_dump() == body  # the declared contract, field for field
    assert body["user_id"] == 1 and body["model"] == "urm" and body["ppm_version"] == VERSION
    assert body["user_known"] is True and body["unknown_item_ids"] == []
    got = {s["item_id"]: (s["click"], s["order"]) for s in body["scores"]}
    assert set(got) == {10, 11, 12}
    clicks = [s["click"] for s in body["scores"]]
    assert clicks == sorted(clicks, reverse=True)
    # the same pairs scored by torch from the offline point-in-time frame (as of the materialization time)
    rows = frame[frame["user_id"] == 1].reset_index(drop=True)
    with torch.no_grad():
        ref = torch.sigmoid(model.forward_dict({k: torch.from_numpy(np.ascontiguousarray(v))
                                                for k, v in enc.transform(rows).items()})).numpy()
    for i, item in enumerate(rows["item_id"]):
        assert got[int(item)] == pytest.approx(tuple(ref[i]), abs=1e-5)


def test_unknown_user_and_item_are_scored_and_flagged(served):
    _, _, client, *_ = served
    r = client.post("/rank", json={"user_id": 999, "item_ids": [10, 777, 10]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["user_known"] is False and body["unknown_item_ids"] == [777]
    assert len(body["scores"]) == 3  # duplicates kept, one row per requested id
    known = {s["item_id"]: s["known"] for s in body["scores"]}
    assert known == {10: True, 777: False}
    assert all(0.0 < s["click"] < 1.0 and 0.0 < s["order"] < 1.0 for s in body["scores"])


@pytest.mark.parametrize("body, status, fragment", [
    ({"user_id": 1, "item_ids": list(range(6))}, 422, "6 candidates, at most 5"),
    ({"user_id": 1, "item_ids": []}, 422, "item_ids"),
    ({"user_id": "1", "item_ids": [10]}, 422, "user_id"),
    ({"user_id": 1, "item_ids": [10, "11"]}, 422, "item_ids.1"),
    ({"user_id": 1, "item_ids": [10.5]}, 422, "item_ids.0"),
    ({"user_id": 1, "item_ids": [True]}, 422, "item_ids.0"),
    ({"user_id": -3, "item_ids": [10]}, 422, "greater than or equal to 0"),
    ({"user_id": 1, "item_ids": [2**63]}, 422, "less than or equal to"),
    ({"item_ids": [10]}, 422, "user_id: Field required"),
    ({"user_id": 1, "item_ids": [10], "extra": 1}, 422, "extra"),
    ({"user_id": 1, "item_ids": 10}, 422, "item_ids"),
])
def test_bad_bodies_get_4xx_with_a_message(served, body, status, fragment):
    _, _, client, *_ = served
    r = client.post("/rank", json=body)
    assert r.status_code == status, r.text
    assert fragment in r.json()["detail"]


def test_malformed_and_oversized_bodies(served):
    _, _, client, *_ = served
    r = client.post("/rank", content=b'{"user_id": 1, "item_ids": [10', headers={"content-type": "application/json"})
    assert r.status_code == 422 and "JSON" in r.json()["detail"]
    r = client.post("/rank", content=b"[1, 2]", headers={"content-type": "application/json"})
    assert r.status_code == 422
    big = b'{"user_id": 1, "item_ids": [' + b"10, " * 200 + b"10]}"
    r = client.post("/rank", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "exceeds the limit of 400 bytes" in r.json()["detail"]

    def chunks():  # no Content-Length: counted while streaming
        for _ in range(10):
            yield b" " * 100
    r = client.post("/rank", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert client.get("/rank").status_code == 405


@pytest.mark.parametrize("headers", [{"content-type": "text/plain"}, {"content-type": "application/x-www-form-urlencoded"},
                                     {}])
def test_a_json_body_without_a_json_content_type_is_422_naming_the_expected_header(served, headers):
    _, _, client, *_ = served
    r = client.post("/rank", content=b'{"user_id": 1, "item_ids": [10]}', headers=headers)
    assert r.status_code == 422, r.text  # the status code is unchanged; the message says what to send
    detail = r.json()["detail"]
    assert "Content-Type: application/json" in detail
    assert (f"got Content-Type: {headers['content-type']}" if headers else "no Content-Type header") in detail
    ok = client.post("/rank", content=b'{"user_id": 1, "item_ids": [10]}',
                     headers={"content-type": "application/json; charset=utf-8"})
    assert ok.status_code == 200, ok.text


def test_health_ok(served):
    _, _, client, *_ = served
    r = client.get("/health")
    assert r.status_code == 200
    h = r.json()
    assert h["status"] == "ok" and h["ppm_version"] == VERSION and h["cache_versions_seen"] == [VERSION]
    assert (h["user_feature_service"], h["item_feature_service"]) == ("urm_user", "urm_item")


def test_health_never_waits_for_a_rank_and_reuses_its_probe(served, monkeypatch):
    """Issue 16 finding 6: /health took the /rank lock on every call. Now the first probe runs, later calls
    within serving.health_probe_s reuse it, and a due probe finds the Ranker busy (a /rank holding the lock)
    and answers the last result at once instead of queueing behind it."""
    import threading

    settings, ranker, *_ = served
    calls = []
    real_probe = ranker.probe
    monkeypatch.setattr(ranker, "probe", lambda *a, **k: calls.append(1) or real_probe(*a, **k))
    app = create_app(settings.model_copy(update={"serving": settings.serving.model_copy(
        update={"health_probe_s": 3600.0})}), ranker=ranker)
    client = TestClient(app)
    bodies = [client.get("/health").json() for _ in range(20)]
    assert len(calls) == 1 and all(b["status"] == "ok" for b in bodies)
    assert bodies[-1]["probe_age_s"] >= bodies[0]["probe_age_s"]
    app.state.ppm["probe"] = (-1e9, app.state.ppm["probe"][1])  # the probe is due ...
    lock: threading.Lock = app.state.ppm["lock"]
    assert lock.acquire(timeout=10)  # ... while a /rank holds the Ranker
    try:
        answered = []
        t = threading.Thread(target=lambda: answered.append(client.get("/health")))
        t.start()
        t.join(timeout=60)
        assert answered and answered[0].status_code == 200 and answered[0].json()["status"] == "ok"
        assert len(calls) == 1  # answered from the last probe, not by waiting for the lock
    finally:
        lock.release()
    app.state.ppm["probe"] = (-1e9, app.state.ppm["probe"][1])
    assert client.get("/health").status_code == 200 and len(calls) == 2  # due and free: probed again


def test_version_mismatch_is_refused_and_reported(served):
    """A URM that records another ppm_version than the online caches (PPM retrained, caches not recomputed)."""
    settings, ranker, _, *_ = served
    other = Ranker(settings, store=ranker.store)
    other.ppm_version = "retrained"
    client = TestClient(create_app(settings, ranker=other))
    r = client.post("/rank", json={"user_id": 1, "item_ids": [10]})
    assert r.status_code == 503 and "ppm_version retrained" in r.json()["detail"]
    h = client.get("/health")
    assert h.status_code == 503 and h.json()["status"] == "version_mismatch" and VERSION in h.json()["error"]


def test_health_without_model_is_unavailable(tmp_path):
    settings = Settings.from_env(env={}, artifacts_dir=tmp_path / "a")
    client = TestClient(create_app(settings))
    h = client.get("/health")
    assert h.status_code == 503 and h.json()["status"] == "unavailable" and "model.json" in h.json()["error"]
    assert client.post("/rank", json={"user_id": 1, "item_ids": [1]}).status_code == 503


def test_transform_request_equals_transform_on_broadcast_rows(served):
    *_, enc, frame = served
    item_cols = [*enc.item_columns(), "ppm_item_vec"]
    user_cols = [*enc.user_columns(), "ppm_user_seq", "ppm_seq_len"]
    items = frame[frame["user_id"] == 2][item_cols].reset_index(drop=True)
    for u in (1, 2, 3):
        urow = frame[frame["user_id"] == u].iloc[0]
        wide = items.assign(**{c: [urow[c]] * len(items) for c in user_cols})
        a, b = enc.transform_request({c: urow[c] for c in user_cols}, items), enc.transform(wide)
        assert list(a) == list(b)
        for k in b:
            assert a[k].shape == b[k].shape and a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k


def test_cold_entities_get_the_same_fallback_tensors_offline_and_online(served):
    """An unknown user and an item with no catalog row : the offline point-in-time frame (Feast
    get_historical_features -> transform, training's path) and the online lookup (Feast get_online_features ->
    transform_request, serving's path) give identical tensors, and they are the trained fallback inputs: OOV
    ids (1) and side features, zero-impression counters, the no-content flag."""
    settings, ranker, _, _, enc, _ = served
    user, item, known = 424242, 777, 10
    offline = enc.transform(fsmod.get_training_frame(
        settings, pd.DataFrame({"user_id": [user, user], "item_id": [item, known], "event_timestamp": AS_OF}),
        store=ranker.store))
    u, items = ranker.lookup(user, [item, known])
    online = enc.transform_request(u, items)
    assert list(offline) == list(online)
    for k in offline:
        assert offline[k].dtype == online[k].dtype and np.array_equal(offline[k], online[k]), k
    assert offline["user_idx"].tolist() == [1, 1] and offline["item_idx"][0] == 1
    assert offline["user_side"].tolist() == [[1, 1, 1]] * 2 and offline["hist_mask"].sum() == 0
    assert offline["item_content"].tolist() == [0.0, 1.0]
    zero = {f"{e}_{f}{sfx}": [0] for e in ("user", "item") for sfx in ("", "_7d", "_30d")
            for f in ("impressions", "clicks", "orders")}
    np.testing.assert_array_equal(online["user_dense"][0], enc.transform(pd.DataFrame(
        {**zero, "user_id": [user], "item_id": [item], "age": [None], "gender": [None], "occupation": [None],
         "categories": [None], "hist_item_ids": [None]}))["user_dense"][0])
    np.testing.assert_array_equal(online["item_dense"][0], enc.transform(pd.DataFrame(
        {**zero, "user_id": [user], "item_id": [item], "age": [None], "gender": [None], "occupation": [None],
         "categories": [None], "hist_item_ids": [None]}))["item_dense"][0])


def test_item_cache_serves_pushed_and_rematerialized_items_and_refuses_a_new_version(served):
    """The Ranker's item cache over the real Feast store: an item pushed after start is served with
    its content at once (a miss read from Feast); a re-materialized item's new value is served after a refresh;
    a cache row of another ppm_version is refused as without the cache. Generous timeouts: the staleness bound
    itself is measured in benchmarks/latency.py."""
    import time

    from ppm_platform.serving.new_item import push_item_rows
    from ppm_platform.serving.ranker import VersionMismatchError

    settings, ranker, *_ = served
    s = settings.model_copy(update={"serving": settings.serving.model_copy(update={"item_cache_refresh_s": 0.2})})
    r = Ranker(s, store=ranker.store)
    # no items table in this artifacts dir: the cache starts from the model's vocabulary (items 10, 11)
    assert r.item_cache is not None and r.item_cache.size == 2
    try:
        now = pd.Timestamp.now(tz="UTC")
        new_id = 4242
        rows = {"item_profile": pd.DataFrame({"item_id": [new_id], "event_timestamp": [now], "categories": [["Drama"]],
                                              "release_year": [2026]}),
                "ppm_item_cache": pd.DataFrame({"item_id": [new_id], "event_timestamp": [now],
                                                "ppm_item_vec": [[0.5] * DM], "ppm_item_version": [VERSION]})}
        assert r.rank(1, [new_id]).unknown_item_ids == [new_id]
        push_item_rows(r.store, rows)
        res = r.rank(1, [new_id, 11])
        assert res.unknown_item_ids == [] and bool(res.scores.set_index("item_id").at[new_id, "known"])

        cache = pd.read_parquet(settings.features_dir / "ppm_item_cache.parquet")
        orig = cache[cache["item_id"] == 10].reset_index(drop=True)
        before = float(r.rank(1, [10, 11]).scores.set_index("item_id").at[10, "click"])

        def served_until(pred, what):
            deadline = time.monotonic() + 60
            while True:
                try:
                    if pred():
                        return
                except VersionMismatchError:
                    if what == "refused":
                        return
                    raise
                assert time.monotonic() < deadline, f"not {what} within 60 s"
                time.sleep(0.05)

        r.store.write_to_online_store("ppm_item_cache", orig.assign(
            ppm_item_vec=[[v + 3.0 for v in orig.at[0, "ppm_item_vec"]]], event_timestamp=pd.Timestamp.now(tz="UTC")))
        served_until(lambda: abs(float(r.rank(1, [10, 11]).scores.set_index("item_id").at[10, "click"]) - before) > 1e-6,
                     "re-materialized value served")
        r.store.write_to_online_store("ppm_item_cache", orig.assign(ppm_item_version="another-ppm",
                                                                      event_timestamp=pd.Timestamp.now(tz="UTC")))
        served_until(lambda: r.rank(1, [10, 11]) is None, "refused")  # rank raises once the refresh read it
    finally:
        r.store.write_to_online_store("ppm_item_cache", orig.assign(event_timestamp=pd.Timestamp.now(tz="UTC")))
        r.close()
    fresh = Ranker(settings, store=ranker.store)  # the restored row serves as before
    assert float(fresh.rank(1, [10, 11]).scores.set_index("item_id").at[10, "click"]) == pytest.approx(before, abs=1e-6)
    fresh.close()


def test_push_item_rows_writes_what_a_feast_push_writes(served):
    """push_item_rows (one write_to_online_store per view, push sources resolved from the cached registry)
    leaves the same online values as Feast's ``store.push(<view>_push, PushMode.ONLINE)``; a view without a push
    source is a KeyError naming it, raised before any row is written."""
    from feast.data_source import PushMode

    from ppm_platform.feature_store import read_online_items
    from ppm_platform.serving.new_item import push_item_rows

    settings, ranker, *_ = served
    store = fsmod.get_store(settings)
    now = pd.Timestamp.now(tz="UTC")

    def rows(item_id):
        return {"item_profile": pd.DataFrame({"item_id": [item_id], "event_timestamp": [now],
                                              "categories": [["Drama", "Crime"]], "release_year": [2026]}),
                "ppm_item_cache": pd.DataFrame({"item_id": [item_id], "event_timestamp": [now],
                                                "ppm_item_vec": [[0.25] * DM], "ppm_item_version": [VERSION]})}

    pushed, written, refused = 5151, 5152, 5153
    for view, df in rows(pushed).items():
        store.push(f"{view}_push", df, to=PushMode.ONLINE)
    push_item_rows(store, rows(written))
    refs = ["item_profile:categories", "item_profile:release_year", "ppm_item_cache:ppm_item_vec",
            "ppm_item_cache:ppm_item_version"]
    online = read_online_items(store, [pushed, written], service=refs).drop(columns="item_id")
    assert online.iloc[0].notna().all()
    assert online.iloc[0].map(str).tolist() == online.iloc[1].map(str).tolist()
    with pytest.raises(KeyError, match="item_stats"):
        push_item_rows(store, {**rows(refused), "item_stats": rows(refused)["item_profile"]})
    assert read_online_items(store, [refused], service=refs).drop(columns="item_id").iloc[0].isna().all()


def test_ppm_serve_logs_ready_access_and_shutdown_and_ppm_rank_uses_it(served):
    """`ppm serve` in its own process on the test's store: "loading", then "ready" with the URL once it listens,
    one access-log line per request with --access-log, "shutdown" with the count on SIGINT; `ppm rank` finds it
    from settings.serving.port and prints titles, user_known and the server's warm lookup."""
    import json
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    from ppm_platform.config import REPO_ROOT

    settings, *_ = served
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = settings.artifacts_dir / "serve_test_config.json"
    cfg.write_text(json.dumps({"sequence": {"max_len": L}, "ppm": {"d_model": DM},
                               "serving": {"max_candidates": 5, "max_body_bytes": 400, "port": port}}))
    write_parquet_atomic(pd.DataFrame({"item_id": [10, 11, 12], "title": ["Ten (1995)", "Eleven (1996)", "Twelve"]}),
                         settings.tables_dir / "items.parquet")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PPM_")}
    env.update(PPM_ARTIFACTS_DIR=str(settings.artifacts_dir), PPM_CONFIG=str(cfg))
    log = settings.artifacts_dir / "serve_test.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "ppm_platform.cli", "serve", "--access-log"], env=env,
                                cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while "ready" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        text = log.read_text()
        assert text.index("loading urm from") < text.index(f"Uvicorn running on http://127.0.0.1:{port}") \
            < text.index(f"ready: urm version ")
        assert f"on http://127.0.0.1:{port} after " in text
        rank = subprocess.run([sys.executable, "-m", "ppm_platform.cli", "rank", "999", "11", "777", "10"], env=env,
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
        assert rank.returncode == 0, rank.stdout + rank.stderr
        lines = rank.stdout.splitlines()
        assert lines[0].startswith("user 999: unknown: no online features, scored as a cold-start user; model urm")
        assert lines[0].endswith(f"scored by ppm serve at http://127.0.0.1:{port}")
        rows = {ln.split()[1]: ln for ln in lines[2:5]}
        assert rows["11"].endswith("yes    Eleven (1996)") and rows["777"].split()[4] == "no"
        assert "(warm: the server's online-store connection is open)" in lines[5]
        assert "unknown items (no online features, scored as cold-start items): 777" in rank.stdout
        deadline = time.monotonic() + 10
        while '"POST /rank HTTP/1.1" 200' not in log.read_text():  # the access log line of that request
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert '"GET /health HTTP/1.1" 200' in log.read_text()  # ppm rank's probe
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    assert "shutdown: urm served 1 /rank requests" in log.read_text()
