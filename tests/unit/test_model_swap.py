"""Model swap without downtime: a published model is replaced while it is read and served.

Publication (``save_model``): a reader resolving the published model while versions are published gets a
complete folder every time (weights matching model.json, both graphs of that version); a failing ``finish``
publishes nothing; a plain model folder becomes a version; old versions are pruned.

Serving: a real uvicorn on loopback over a tiny real Feast store (SQLite) and real onnxruntime; threads send
``/rank`` while another model is published; 0 failed requests, every response scored by the model version it
reports, and the service switches to the new version by its watch. ``POST /admin/reload`` without the watch;
a model whose caches are not online yet and a model that cannot load are kept off, the old one serves.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from ppm_platform.models import URM, URMConfig
from ppm_platform.models.ppm import PPMConfig
from ppm_platform.serving.app import create_app
from ppm_platform.serving.onnx_export import SERVING_FILE, export_urm_onnx
from ppm_platform.model_store import (
    KEEP_VERSIONS,
    load_urm,
    model_version,
    read_model_json,
    resolve_model_dir,
    save_model,
    versions_dir,
)
from ppm_platform.features.encoding import FeatureVectorizer

try:  # pytest's default (prepend) import mode puts tests/unit on sys.path
    from test_feature_store import DM, ITEMS, L
    from test_http_api import VERSION, online_tables
except ImportError:  # tests/ made a package
    from tests.unit.test_feature_store import DM, ITEMS, L
    from tests.unit.test_http_api import VERSION, online_tables

TIMEOUT_S = 120  # generous: 2 shared cores


def _cfg(enc: FeatureVectorizer | None = None) -> URMConfig:
    v = dict(n_users=enc.n_users, n_items=enc.n_items, user_side_cardinalities=enc.user_side_cardinalities,
             n_genres=enc.n_genres, n_user_dense=enc.n_user_dense, n_item_dense=enc.n_item_dense) if enc else \
        dict(n_users=5, n_items=5, user_side_cardinalities=(3,), n_genres=2, n_user_dense=1, n_item_dense=1)
    return URMConfig(**v, max_len=L, emb_dim=4, cross_layers=1, dnn_hidden=(8,), n_experts=2, expert_hidden=8,
                     tower_hidden=4, dropout=0.0, use_ppm=True,
                     ppm=PPMConfig(me_dim=6, d_model=DM, n_layers=1, n_heads=1, ff_dim=4, max_len=L,
                                   n_time_buckets=4, readout_hidden=4, dropout=0.0))


# ------------------------------------------------------------------------------------- publication
def _stand_in_graphs(stage: Path) -> None:
    """finish hook: two files stamped with the version's weights hash (what a reader checks), slowly."""
    v = read_model_json(stage)["version"]
    for f in ("model.onnx", SERVING_FILE):
        (stage / f).write_text(v)
        time.sleep(0.002)


def test_reader_during_publication_always_gets_a_complete_folder(tmp_path):
    out = tmp_path / "models" / "urm"
    cfg = _cfg()
    torch.manual_seed(0)
    model = URM(cfg).eval()
    save_model(model, cfg, out, "urm", {"step": 0}, finish=_stand_in_graphs)
    published = [model_version(model)]
    stop, errors, seen, reads = threading.Event(), [], set(), [0, 0]

    def resolving_reader():  # the Ranker's way: resolve once, read every file from that folder
        while not stop.is_set():
            try:
                d = resolve_model_dir(out)
                doc = read_model_json(d)
                assert (d / "model.onnx").read_text() == doc["version"] == (d / SERVING_FILE).read_text()
                loaded, _ = load_urm(d)  # verifies the weights' hash against model.json
                seen.add(model_version(loaded))
                reads[0] += 1
            except Exception as e:
                errors.append(repr(e))

    def path_reader():  # a reader of models/urm/<file> as before versioning: never a missing file
        while not stop.is_set():
            try:
                json.loads((out / "model.json").read_text())
                assert (out / "model.onnx").is_file() and (out / "weights.safetensors").is_file()
                reads[1] += 1
            except Exception as e:
                errors.append(repr(e))

    threads = [threading.Thread(target=f) for f in (resolving_reader, path_reader)]
    for t in threads:
        t.start()
    try:
        for step in range(1, 41):
            with torch.no_grad():
                next(model.parameters()).add_(0.01)  # other weights, another version
            save_model(model, cfg, out, "urm", {"step": step}, finish=_stand_in_graphs)
            published.append(model_version(model))
            time.sleep(0.002)
    finally:
        stop.set()
        for t in threads:
            t.join(TIMEOUT_S)
    assert errors == []
    assert reads[0] > 40 and reads[1] > 40
    assert len(seen) >= 2 and seen <= set(published)  # the readers saw the versions change, only published ones
    # the link is relative (the artifacts folder can move), the last version is current, old ones pruned
    assert out.is_symlink() and not os.path.isabs(os.readlink(out))
    assert read_model_json(out)["metadata"] == {"step": 40}
    kept = sorted(p.name for p in versions_dir(out).iterdir())
    assert len(kept) == KEEP_VERSIONS and not [n for n in kept if n.startswith(".")]
    assert resolve_model_dir(out).name == kept[-1] and kept[-1].endswith(published[-1])
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp link left


def test_failed_finish_publishes_nothing_and_a_plain_folder_becomes_a_version(tmp_path):
    out = tmp_path / "models" / "urm"
    cfg = _cfg()
    a, b = URM(cfg).eval(), URM(cfg).eval()
    # a plain folder (saved before versioning): kept as a version when the first version is published
    save_model(a, cfg, tmp_path / "elsewhere", "urm", {"m": "a"})
    shutil.copytree(tmp_path / "elsewhere", out)  # follows the link: a real folder
    assert not out.is_symlink() and resolve_model_dir(out) == out.resolve()

    def broken(stage: Path) -> None:
        (stage / "model.onnx").write_text("half")
        raise ValueError("ONNX parity failed")

    with pytest.raises(ValueError, match="parity"):
        save_model(b, cfg, out, "urm", {"m": "b"}, finish=broken)
    assert not out.is_symlink() and read_model_json(out)["metadata"] == {"m": "a"}  # nothing published
    assert [p.name for p in versions_dir(out).iterdir()] == []  # the stage is gone
    save_model(b, cfg, out, "urm", {"m": "b"})
    assert out.is_symlink() and load_urm(out)[1] == {"m": "b"}
    plain = [p for p in versions_dir(out).iterdir() if p.name.endswith(f"{model_version(a)}-plain")]
    assert len(plain) == 1 and load_urm(plain[0])[1] == {"m": "a"}
    with pytest.raises(FileNotFoundError, match="model.json"):
        resolve_model_dir(tmp_path / "models" / "base")


# ------------------------------------------------------------------------------------- serving
@pytest.fixture(scope="module")
def online(tmp_path_factory):
    """The tables of test_http_api, applied and materialized (one ppm_version, VERSION, in the caches); the
    encoder and the offline point-in-time frame the models are checked against."""
    settings, frame = online_tables(tmp_path_factory.mktemp("swap"),
                                    serving={"model_watch_s": 0.1, "item_cache_refresh_s": 0})
    enc = FeatureVectorizer.fit(frame, max_len=L, ppm_dim=DM, counter_windows=tuple(settings.counters.windows_days),
                             rate_prior={"click": 0.5, "order": 0.2, "strength": 10.0})
    return settings, enc, frame


def _publish(online, seed: int, ppm_version: str = VERSION, graphs: bool = True) -> tuple[str, dict[int, float]]:
    """Publish a URM initialised with ``seed`` (with its ONNX graphs, exported into the stage); returns its
    weights hash and the click probability torch gives user 1 for each item (the offline frame)."""
    settings, enc, frame = online
    cfg = _cfg(enc)
    torch.manual_seed(seed)
    model = URM(cfg).eval()
    meta = {"feature_encoder": enc.to_dict(), "ppm_version": ppm_version, "user_feature_service": "urm_user",
            "item_feature_service": "urm_item", "training_feature_service": "urm_training"}
    save_model(model, cfg, settings.models_dir / "urm", "urm", meta, finish=(
        lambda stage: export_urm_onnx(model, enc.transform(frame), stage / "model.onnx", dynamo=False))
        if graphs else None)
    rows = frame[frame["user_id"] == 1].reset_index(drop=True)
    with torch.no_grad():
        probs = torch.sigmoid(model.forward_dict({k: torch.from_numpy(np.ascontiguousarray(v))
                                                  for k, v in enc.transform(rows).items()})).numpy()
    return model_version(model), {int(i): float(p) for i, p in zip(rows["item_id"], probs[:, 0])}


BODY = json.dumps({"user_id": 1, "item_ids": list(ITEMS)})


def _clicks(doc: dict) -> dict[int, float]:
    return {s["item_id"]: s["click"] for s in doc["scores"]}


def _matches(doc: dict, expected: dict[str, dict[int, float]]) -> bool:
    want = expected[doc["model_version"]]
    return all(abs(c - want[i]) <= 1e-5 for i, c in _clicks(doc).items())


def test_model_published_under_load_is_served_without_a_failed_request(online):
    settings = online[0]
    v_a, clicks_a = _publish(online, seed=1)  # B is published below, during the load
    app = create_app(settings)  # builds its Ranker from the published model and watches it (0.1 s)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    srv = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    srv.start()
    stop = threading.Event()
    log: list[list[dict]] = [[] for _ in range(4)]
    errors: list[str] = []

    def load(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while not stop.is_set():
            try:
                conn.request("POST", "/rank", body=BODY, headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                data = r.read()
                if r.status != 200:
                    errors.append(f"{r.status} {data[:300]!r}")
                else:
                    log[i].append({**json.loads(data), "t": time.monotonic()})
            except Exception as e:  # a refused or dropped connection is a failed request too
                errors.append(repr(e))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.close()

    def wait_for(pred, what: str) -> None:
        deadline = time.monotonic() + TIMEOUT_S
        while not pred():
            assert time.monotonic() < deadline, f"{what} not within {TIMEOUT_S} s; errors {errors[:3]}"
            time.sleep(0.05)

    threads = [threading.Thread(target=load, args=(i,)) for i in range(len(log))]
    try:
        wait_for(lambda: server.started, "server start")
        for t in threads:
            t.start()
        wait_for(lambda: all(len(x) >= 5 for x in log), "5 responses per thread on model A")
        v_b, clicks_b = _publish(online, seed=2)  # while the threads send
        published_at = time.monotonic()
        assert v_b != v_a and max(abs(clicks_a[i] - clicks_b[i]) for i in ITEMS) > 1e-3
        wait_for(lambda: all(sum(d["model_version"] == v_b for d in x) >= 5 for x in log),
                 "5 responses per thread on model B")
    finally:
        stop.set()
        for t in threads:
            t.join(TIMEOUT_S)
    try:
        assert errors == []
        expected = {v_a: clicks_a, v_b: clicks_b}
        for x in log:
            versions = [d["model_version"] for d in x]
            assert versions[0] == v_a and versions[-1] == v_b
            # per thread (requests in sequence): A until the swap, B after, never back
            assert versions == sorted(versions, key=lambda v: v == v_b)
            assert all(_matches(d, expected) for d in x)  # scored by the model it reports, never a mix
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        c.request("GET", "/health")
        h = json.loads(c.getresponse().read())
        assert h["status"] == "ok" and h["model_version"] == v_b and h["reload_error"] is None
        assert h["model_id"] == resolve_model_dir(settings.models_dir / "urm").name
        c.request("POST", "/admin/reload")
        r = json.loads(c.getresponse().read())
        assert r["reloaded"] is False and r["model_version"] == v_b  # nothing new: nothing rebuilt
        assert app.state.ppm["reloader"].reloads == 1
        first_b = min(d["t"] for x in log for d in x if d["model_version"] == v_b)
        print(f"swap under load: {sum(map(len, log))} requests from {len(log)} threads, 0 errors, first response "
              f"of B {first_b - published_at:.2f} s after its publication (watch {settings.serving.model_watch_s} s)")
    finally:
        server.should_exit = True
        srv.join(TIMEOUT_S)


def test_admin_reload_and_the_models_kept_off(online):
    settings = online[0]
    v_c, clicks_c = _publish(online, seed=3)
    client = TestClient(create_app(settings, watch=False))

    def rank() -> dict:
        r = client.post("/rank", json={"user_id": 1, "item_ids": list(ITEMS)})
        assert r.status_code == 200, r.text
        return r.json()

    assert rank()["model_version"] == v_c
    c_id = resolve_model_dir(settings.models_dir / "urm").name
    v_d, clicks_d = _publish(online, seed=4)
    assert rank()["model_version"] == v_c  # no watch: the old model until asked
    r = client.post("/admin/reload").json()
    assert r["reloaded"] is True and r["model_version"] == v_d and r["previous_model_id"] == c_id
    assert _matches(rank(), {v_d: clicks_d})

    # a URM trained on another PPM whose caches are not online yet: built, but kept off while D scores
    v_e, _ = _publish(online, seed=5, ppm_version="p-next")
    r = client.post("/admin/reload").json()
    assert r["reloaded"] is False and r["model_version"] == v_d and "ppm_version p-next" in r["deferred"]
    assert rank()["model_version"] == v_d
    assert client.get("/health").json()["reload_deferred"] == r["deferred"]

    # a version that cannot load (no ONNX graphs): the error is reported, D keeps serving
    _publish(online, seed=6, graphs=False)
    r = client.post("/admin/reload").json()
    assert r["reloaded"] is False and "model.onnx not found" in r["error"]
    assert rank()["model_version"] == v_d
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["model_version"] == v_d and "model.onnx" in h["reload_error"]

    v_f, clicks_f = _publish(online, seed=7)  # a good one again: taken at once
    r = client.post("/admin/reload").json()
    assert r["reloaded"] is True and r["model_version"] == v_f and r["error"] is None
    assert _matches(rank(), {v_f: clicks_f})


def test_export_onnx_reports_the_published_record_or_exports_into_a_new_version(online):
    """urm_onnx's stage: a published version without graphs gets them in a new version (same weights),
    parity-checked on the training set's last rows; a version with them is reported, nothing re-exported."""
    from ppm_platform import pipeline

    settings, _, frame = online
    frame.to_parquet(settings.artifacts_dir / "training_set.parquet")
    v_g, _ = _publish(online, seed=8, graphs=False)
    g_dir = resolve_model_dir(settings.models_dir / "urm")
    res = pipeline.export_onnx(settings, "urm")
    new_dir = resolve_model_dir(settings.models_dir / "urm")
    assert res["exported"] is True and res["model_id"] == new_dir.name != g_dir.name
    assert res["max_abs_diff"] <= 1e-5 and res["serving"]["max_abs_diff"] <= 1e-5
    assert res["parity_rows"] == len(frame)
    assert read_model_json(new_dir)["version"] == v_g and load_urm(new_dir)[1] == load_urm(g_dir)[1]
    assert {p.name for p in new_dir.iterdir()} == {"weights.safetensors", "model.json", "model.onnx", SERVING_FILE,
                                                   pipeline.ONNX_RECORD}
    again = pipeline.export_onnx(settings, "urm")
    assert again["exported"] is False and again["model_id"] == res["model_id"]
    assert again["max_abs_diff"] == res["max_abs_diff"]
