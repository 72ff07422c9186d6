"""Bounded concurrent load run against the HTTP ranking service on loopback; prints one JSON document.

Starts ``ppm serve`` (uvicorn, one process) on 127.0.0.1 at a free port in a child process, waits for
``GET /health`` = 200, then runs ``--clients`` threads (each with its own keep-alive ``http.client``
connection) sending ``POST /rank`` (1 user x ``--candidates`` items, users rotating over the most active
test-window users) until ``--seconds`` pass or ``--max-requests`` requests were sent, whichever first. Reports
throughput (requests/s), client-side latency p50/p95/p99 (ms), error count (any non-200 or transport error)
and the server-side lookup/model medians from the responses; then stops the server it started.

Usage: ``PPM_ARTIFACTS_DIR=... python benchmarks/load.py [--clients 8 --seconds 30 --candidates 100]``.
Zero errors is the goal; it is reported, never asserted.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pcts(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    a = np.asarray(values, dtype=float)
    return {"p50": round(float(np.percentile(a, 50)), 2), "p95": round(float(np.percentile(a, 95)), 2),
            "p99": round(float(np.percentile(a, 99)), 2), "max": round(float(a.max()), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--max-requests", type=int, default=20_000, help="upper bound on requests sent")
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--model", default="urm", choices=["urm", "base"])
    ap.add_argument("--startup-timeout", type=float, default=180.0)
    args = ap.parse_args()

    from ppm_platform.config import Settings

    settings = Settings.from_env()
    inter = pd.read_parquet(settings.tables_dir / "interactions.parquet")
    users = [int(u) for u in inter.tail(max(len(inter) // 10, 1))["user_id"].value_counts().index[:50]]
    cands = [int(i) for i in inter["item_id"].value_counts().index[: args.candidates]]
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "ppm_platform.cli", "serve", "--host", "127.0.0.1", "--port",
                               str(port), "--model", args.model], env=dict(os.environ),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    out: dict = {"benchmark": "serving load", "clients": args.clients, "seconds_limit": args.seconds,
                 "max_requests": args.max_requests, "candidates": args.candidates, "model": args.model,
                 "cpus": os.cpu_count(), "load_avg_start": list(os.getloadavg())}
    try:
        t_start = time.perf_counter()
        while True:
            if server.poll() is not None:
                raise SystemExit(f"server exited with {server.returncode}: {server.stderr.read().decode()[-2000:]}")
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                c.request("GET", "/health")
                r = c.getresponse()
                health = json.loads(r.read())
                if r.status == 200:
                    break
                raise SystemExit(f"/health answered {r.status}: {health}")
            except (ConnectionRefusedError, OSError):
                if time.perf_counter() - t_start > args.startup_timeout:
                    raise SystemExit("server did not start in time")
                time.sleep(0.5)
        out["startup_s"] = round(time.perf_counter() - t_start, 1)
        out["health"] = health

        lock = threading.Lock()
        sent = [0]
        lat, errors, server_lookup, server_model = [], [], [], []
        stop_at = time.perf_counter() + args.seconds

        def client(k: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            i = k
            while time.perf_counter() < stop_at:
                with lock:
                    if sent[0] >= args.max_requests:
                        return
                    sent[0] += 1
                body = json.dumps({"user_id": users[i % len(users)], "item_ids": cands})
                i += args.clients
                t0 = time.perf_counter()
                try:
                    conn.request("POST", "/rank", body=body, headers={"Content-Type": "application/json"})
                    r = conn.getresponse()
                    data = r.read()
                    dt = (time.perf_counter() - t0) * 1e3
                    if r.status != 200:
                        with lock:
                            errors.append(f"{r.status}: {data[:200]!r}")
                        continue
                    doc = json.loads(data)
                    ok = len(doc["scores"]) == len(cands)
                    with lock:
                        lat.append(dt)
                        server_lookup.append(doc["lookup_ms"])
                        server_model.append(doc["model_ms"])
                        if not ok:
                            errors.append(f"200 with {len(doc['scores'])} scores for {len(cands)} candidates")
                except Exception as e:  # transport error: count it, reconnect
                    with lock:
                        errors.append(f"{type(e).__name__}: {e}")
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.close()

        threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        out.update({
            "requests": sent[0], "ok": len(lat), "errors": len(errors), "error_samples": errors[:5],
            "wall_s": round(wall, 2), "throughput_rps": round(len(lat) / wall, 1),
            "latency_ms": _pcts(lat), "server_lookup_ms": _pcts(server_lookup),
            "server_model_ms": _pcts(server_model),
        })
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    out["load_avg_end"] = list(os.getloadavg())
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
