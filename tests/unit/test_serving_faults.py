"""Serving through faults: the ranking service on a real uvicorn on loopback, real Feast online
stores (SQLite; Redis = a real ``redis-server``) over the tiny tables and URM of ``test_http_api``, under a
load of client threads (``ppm_platform.testing.faults``):

* Redis killed (SIGKILL) and started again: ``/rank`` answers 503 ``store_unavailable`` (never a hang or a
  500) while it is down and 200 with the same scores once it is back (no restart of the service, no row lost);
  Redis hung (SIGSTOP / SIGCONT): the same, bounded by the client's socket timeout;
* a full and a daily materialize of the online views during the load: no failed request (finding 8);
* the SQLite online store locked by another connection (``BEGIN EXCLUSIVE``): no failed request within the
  busy timeout; past it, 503 ``store_unavailable`` and recovery.

Outcomes are asserted with generous timeouts; the times are measured by ``benchmarks/faults.py`` and quoted in
docs/reliability.md, never asserted here."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from ppm_platform import feature_store as fsmod
from ppm_platform import pipeline
from ppm_platform.serving.app import create_app
from ppm_platform.serving.ranker import Ranker
from ppm_platform.testing.cluster import start_redis
from ppm_platform.testing.faults import (LoopbackServer, RedisKill, RedisPause, SqliteLock, Work, registry_refresh,
                                         run_fault)

try:  # pytest's default (prepend) import mode puts tests/unit on sys.path
    from test_http_api import AS_OF, build_served
except ImportError:  # tests/ made a package
    from tests.unit.test_http_api import AS_OF, build_served

#: known users (1-3) and a cold-start one, every item (12 is the model's OOV item)
BODIES = [{"user_id": u, "item_ids": [10, 11, 12]} for u in (1, 2, 3, 999)]
TIMEOUT_S = 120  # generous: 2 shared cores


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The tables, Feast repo (SQLite online store) and URM of ``test_http_api`` (built once)."""
    return build_served(tmp_path_factory.mktemp("faults"), serving={"item_cache_refresh_s": 0})


@pytest.fixture(scope="module")
def sqlite_served(built):
    """Yields ``(settings, app, port)``: the service on the SQLite online store, on loopback."""
    settings, ranker, *_ = built
    app = create_app(settings, ranker=ranker)
    with LoopbackServer(app) as srv:
        yield settings, app, srv.port


@pytest.fixture(scope="module")
def redis_served(built, tmp_path_factory):
    """The same repo and model on a Redis online store (every view materialized into it), whose data survives
    a SIGKILL (append-only file). Yields ``(settings, app, port, redis)``: ``redis`` = {"proc", "dir",
    "port"}, updated when it is restarted."""
    rdir = tmp_path_factory.mktemp("faults_redis")
    proc, addr = start_redis(rdir, persist=True)
    redis = {"proc": proc, "dir": rdir, "port": int(addr.split(":")[1])}
    try:
        settings = built[0].model_copy(update={"online_store": "redis", "redis": addr})
        fsmod.materialize(settings, end=AS_OF)
        app = create_app(settings, ranker=Ranker(settings))
        with LoopbackServer(app) as srv:
            yield settings, app, srv.port, redis
    finally:
        redis["proc"].kill()
        redis["proc"].wait()


def test_redis_killed_under_load_answers_503_then_recovers(redis_served):
    _, _, port, redis = redis_served
    kill = RedisKill(redis["proc"], redis["dir"], redis["port"], down_s=1.5)
    try:
        summary, replies = run_fault(port, BODIES, kill, threads=3, timeout_s=TIMEOUT_S)
    finally:
        redis["proc"] = kill.proc
    # no 500, no hang (a request without a response within the client timeout counts as failed)
    assert summary["failed"] == 0, summary
    assert summary["unavailable"] > 0, summary
    detail = next(r.body["detail"] for r in replies if r.status == 503)
    assert detail.startswith("online store unavailable: ConnectionError"), detail
    # back by itself (the same service process and Redis client), every row back: the same scores as before
    assert summary["recovery_s"] is not None and summary["not_ok_after_recovery"] == 0, summary
    assert summary["wrong_scores"] == 0 and summary["ok"] > 0, summary


def test_health_reports_a_dead_redis_as_503_and_recovers(redis_served):
    """/health probes the store: Redis down -> 503 ``store_unavailable`` (not a 500), back -> 200 at once."""
    import json
    import urllib.error
    import urllib.request

    from ppm_platform.testing.cluster import start_redis

    _, app, port, redis = redis_served

    def health() -> tuple[int, dict]:
        app.state.ppm["probe"] = (float("-inf"), app.state.ppm["probe"][1])  # due now, not in 5 s
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=TIMEOUT_S) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    assert health()[0] == 200
    redis["proc"].kill()
    redis["proc"].wait()
    try:
        status, body = health()
        assert status == 503 and body["status"] == "store_unavailable", body
        assert body["error"].startswith("online store unavailable: ConnectionError"), body
    finally:
        redis["proc"], _ = start_redis(redis["dir"], redis["port"], persist=True)
    status, body = health()
    assert status == 200 and body["status"] == "ok", body


def test_redis_hung_under_load_answers_503_then_recovers(redis_served):
    """A hung Redis (SIGSTOP) is bounded by the client's socket timeout: 503, never a request without an
    answer, and 200s with the same scores after SIGCONT."""
    _, _, port, redis = redis_served
    summary, replies = run_fault(port, BODIES, RedisPause(redis["proc"], pause_s=3.0), threads=3, timeout_s=TIMEOUT_S)
    assert summary["failed"] == 0 and summary["unavailable"] > 0, summary
    detail = next(r.body["detail"] for r in replies if r.status == 503)
    assert detail.startswith("online store unavailable: TimeoutError"), detail
    assert summary["recovery_s"] is not None and summary["not_ok_after_recovery"] == 0, summary
    assert summary["wrong_scores"] == 0, summary


def _materialize(settings, kind: str):
    if kind == "full":
        return lambda: fsmod.materialize(settings, end=AS_OF)
    day = datetime(2024, 1, 1, tzinfo=timezone.utc)  # the users' rows lie on Jan 1-2: a re-run of Jan 1
    return lambda: pipeline.online_user_features(settings, end=day + timedelta(days=1), start=day)


@pytest.mark.parametrize("kind", ["full", "daily"])
@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_materialize_under_load_fails_no_request(request, store, kind):
    settings, app, port, *_ = request.getfixturevalue(f"{store}_served")
    state = app.state.ppm
    # the service re-reads its registry all along (as its cache TTL would), so it sees the MATERIALIZING state
    work = Work(_materialize(settings, kind), context=lambda: registry_refresh(state["ranker"].store, state["lock"]))
    summary, _ = run_fault(port, BODIES, work, threads=3, timeout_s=TIMEOUT_S)
    assert work.result["views"]  # it ran
    # the same rows re-materialized: every request answered, with the scores of before
    assert summary["failed"] == summary["unavailable"] == summary["wrong_scores"] == 0, summary


def test_sqlite_locked_by_a_writer_fails_no_request(sqlite_served):
    """Within Python's sqlite3 busy timeout (5 s; Feast's SQLite store keeps the default) a reader waits for
    the lock: held 2 s, no request fails (this held before the 503 mapping too)."""
    settings, _, port = sqlite_served
    lock = SqliteLock(settings.feast_dir / "online_store.db", hold_s=2.0)
    summary, _ = run_fault(port, BODIES, lock, threads=3, timeout_s=TIMEOUT_S)
    assert summary["failed"] == summary["unavailable"] == summary["wrong_scores"] == 0, summary


def test_sqlite_locked_past_the_busy_timeout_answers_503_then_recovers(sqlite_served):
    """Held past the busy timeout, a request gets 503 ``database is locked`` (a 500 before), and the service
    serves again once the lock is gone."""
    settings, _, port = sqlite_served
    lock = SqliteLock(settings.feast_dir / "online_store.db", hold_s=6.5)
    summary, replies = run_fault(port, BODIES, lock, threads=2, timeout_s=TIMEOUT_S)
    assert summary["failed"] == 0 and summary["unavailable"] > 0, summary
    detail = next(r.body["detail"] for r in replies if r.status == 503)
    assert detail == "online store unavailable: OperationalError: database is locked", detail
    assert summary["recovery_s"] is not None and summary["not_ok_after_recovery"] == 0, summary
    assert summary["wrong_scores"] == 0, summary
