"""Fault table harness (serving through faults): prints one JSON document (committed run:
``benchmarks/results/faults_*.json``; ``docs/reliability.md`` quotes only that run).

The service is the one of ``tests/unit/test_serving_faults.py``: a real uvicorn on loopback over the tiny Feast
repo and URM of ``tests/unit/test_http_api.py`` (``build_served``; SQLite online store, and the same repo
materialized into a real ``redis-server`` with an append-only file), under ``--threads`` client threads sending
``POST /rank`` back to back (4 users incl. a cold one x 3 items). Each fault (``ppm_platform.testing.faults``)
is injected after ``warm`` replies; the load goes on until 20 200s of requests sent after the fault ended:

* ``redis_killed``: SIGKILL, down ``--down-s`` s, started again on the same port and folder;
* ``redis_hung``: SIGSTOP for ``--down-s`` s, then SIGCONT (only the client's socket timeout bounds it);
* ``materialize_full`` / ``materialize_daily`` on each store: ``feature_store.materialize`` of every view /
  ``pipeline.online_user_features`` of one day, the service re-reading its registry every 50 ms meanwhile;
* ``sqlite_locked``: ``BEGIN EXCLUSIVE`` from another connection for ``--lock-s`` s (within the busy timeout)
  and ``sqlite_locked_past_busy_timeout`` for ``--long-lock-s`` s.

Per row: requests sent, ``failed`` (not 200 and not a 503 ``store_unavailable`` during the fault; includes
requests without a response), 503s, ``time_to_503_s`` (fault start -> the first 503 received),
``max_503_latency_s``, ``max_latency_s`` of requests in flight during the fault, ``recovery_s`` (fault end ->
the first 200 of a request sent after it), ``not_ok_after_recovery``, ``wrong_scores`` (200s whose scores
differ from the same request's before the fault). Goals are reported, never asserted.

Usage: ``python benchmarks/faults.py [--threads 4] [--down-s 3] [--lock-s 3] [--long-lock-s 7] [--out FILE]``
(needs ``redis-server`` on PATH; builds everything in a temp folder, ~2 min on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "unit"))  # build_served and its tables live with the tests

GOALS = {"failed": 0, "time_to_503_s_max": 1.0, "recovery_s_max": 5.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--down-s", type=float, default=3.0, help="seconds Redis stays killed / hung")
    ap.add_argument("--lock-s", type=float, default=3.0, help="SQLite lock within the busy timeout")
    ap.add_argument("--long-lock-s", type=float, default=7.0, help="SQLite lock past the busy timeout")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args()

    import feast
    import redis as redis_py

    from ppm_platform import feature_store as fsmod
    from ppm_platform import pipeline
    from ppm_platform.serving.app import create_app
    from ppm_platform.serving.ranker import Ranker
    from ppm_platform.testing.cluster import start_redis
    from ppm_platform.testing.faults import (LoopbackServer, RedisKill, RedisPause, SqliteLock, Work,
                                             registry_refresh, run_fault)
    from test_http_api import AS_OF, build_served
    from test_serving_faults import BODIES

    rows = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ppm_faults_") as tmp:
        tmp = Path(tmp)
        settings, ranker, *_ = build_served(tmp / "app", serving={"item_cache_refresh_s": 0})
        (tmp / "redis").mkdir()
        proc, addr = start_redis(tmp / "redis", persist=True)
        try:
            rsettings = settings.model_copy(update={"online_store": "redis", "redis": addr})
            fsmod.materialize(rsettings, end=AS_OF)
            apps = {"sqlite": (settings, create_app(settings, ranker=ranker)),
                    "redis": (rsettings, create_app(rsettings, ranker=Ranker(rsettings)))}
            day = datetime(2024, 1, 1, tzinfo=timezone.utc)

            def row(store, fault, how, inject, app, port):
                summary, _ = run_fault(port, BODIES, inject, threads=args.threads, timeout_s=120)
                rows.append({"fault": fault, "store": store, "injected": how, **summary})
                print(f"{fault} ({store}): {summary['requests']} requests, {summary['failed']} failed, "
                      f"{summary['unavailable']} 503, time_to_503 {summary['time_to_503_s']}, "
                      f"recovery {summary['recovery_s']}", file=sys.stderr)

            for store, (s, app) in apps.items():
                state = app.state.ppm
                with LoopbackServer(app) as srv:
                    if store == "redis":
                        kill = RedisKill(proc, tmp / "redis", int(addr.split(":")[1]), down_s=args.down_s)
                        try:
                            row(store, "redis_killed", f"SIGKILL, restarted after {args.down_s} s (same port, "
                                "append-only file)", kill, app, srv.port)
                        finally:
                            proc = kill.proc
                        row(store, "redis_hung", f"SIGSTOP for {args.down_s} s, then SIGCONT",
                            RedisPause(proc, args.down_s), app, srv.port)
                    refresh = lambda: registry_refresh(state["ranker"].store, state["lock"])  # noqa: E731
                    row(store, "materialize_full", "feature_store.materialize of every view during the load",
                        Work(lambda: fsmod.materialize(s, end=AS_OF), refresh), app, srv.port)
                    row(store, "materialize_daily", "pipeline.online_user_features of one day during the load",
                        Work(lambda: pipeline.online_user_features(s, end=day + timedelta(days=1), start=day),
                             refresh), app, srv.port)
                    if store == "sqlite":
                        db = s.feast_dir / "online_store.db"
                        row(store, "sqlite_locked", f"BEGIN EXCLUSIVE held {args.lock_s} s by another connection",
                            SqliteLock(db, args.lock_s), app, srv.port)
                        row(store, "sqlite_locked_past_busy_timeout",
                            f"BEGIN EXCLUSIVE held {args.long_lock_s} s (busy timeout 5 s)",
                            SqliteLock(db, args.long_lock_s), app, srv.port)
        finally:
            proc.kill()
            proc.wait()
    doc = {
        "date": date.today().isoformat(), "seconds": round(time.perf_counter() - t0, 1),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "feast": feast.__version__,
                    "redis_py": redis_py.__version__},
        "setup": {"threads": args.threads, "bodies": BODIES, "data": "tests/unit/test_http_api.py tables "
                  "(3 users x 3 items), URM exported to ONNX; uvicorn on 127.0.0.1",
                  "redis_client": {"socket_timeout_s": fsmod.REDIS_SOCKET_TIMEOUT_S,
                                   "connect_timeout_s": fsmod.REDIS_CONNECT_TIMEOUT_S, "retries": fsmod.REDIS_RETRIES},
                  "sqlite_busy_timeout_s": 5.0},
        "goals": GOALS,
        "rows": rows,
    }
    text = json.dumps(doc, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
