"""Load runs against the HTTP ranking service on loopback; prints one JSON document.

For each worker count of ``--workers`` (default 1 and 2), starts ``ppm serve --workers N`` (uvicorn) on
127.0.0.1 at a free port in a child process, waits until ``GET /health`` = 200 and warms every worker up, then
runs ``POST /rank`` (1 user x ``--candidates`` items, users rotating over the most active test-window users)
two ways:

* **closed loop**: ``--clients`` threads (16), each with its own keep-alive connection, send the next request
  as soon as the previous one is answered, for ``--seconds``: the service's peak throughput;
* **open loop**: requests are *scheduled* at a fixed rate (``--rate`` per second, 100) for ``--open-seconds``
  (60), whatever the answers do, and sent by a pool of connections; latency is measured from the scheduled
  time (a late send counts as waiting, so a saturated service shows as latency, not as a lower rate: no
  coordinated omission).

Reports per run: requests, errors (any non-200, short response or transport error), achieved rate,
client-side latency p50/p95/p99/max (ms) and the server-side lookup / model medians, with the cores and load
average. Then stops the server. Zero errors and p99 <= 100 ms at 100 rps with 2 workers are the goals;
reported, never asserted.

Usage: ``PPM_ARTIFACTS_DIR=... python benchmarks/load.py [--workers 1,2] [--rate 100] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

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


class Client:
    """One keep-alive connection; :meth:`rank` returns (ok, error text or None, server lookup ms, model ms)."""

    def __init__(self, port: int):
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def rank(self, body: str, n: int) -> tuple[bool, str | None, float, float]:
        try:
            self.conn.request("POST", "/rank", body=body, headers={"Content-Type": "application/json"})
            r = self.conn.getresponse()
            data = r.read()
            if r.status != 200:
                return False, f"{r.status}: {data[:200]!r}", 0.0, 0.0
            doc = json.loads(data)
            if len(doc["scores"]) != n:
                return False, f"200 with {len(doc['scores'])} scores for {n} candidates", 0.0, 0.0
            return True, None, doc["lookup_ms"], doc["model_ms"]
        except Exception as e:  # transport error: count it, reconnect
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            return False, f"{type(e).__name__}: {e}", 0.0, 0.0


class Tally:
    """Thread-safe outcome counts of one run: latencies (ms) and server timings of the OK answers, errors."""

    def __init__(self):
        self.lock = threading.Lock()
        self.lat, self.errors, self.lookup, self.model, self.sent = [], [], [], [], 0

    def add(self, ok: bool, err: str | None, ms: float, lookup_ms: float, model_ms: float) -> None:
        with self.lock:
            self.sent += 1
            if ok:
                self.lat.append(ms)
                self.lookup.append(lookup_ms)
                self.model.append(model_ms)
            else:
                self.errors.append(err)

    def summary(self, wall: float) -> dict:
        return {"requests": self.sent, "ok": len(self.lat), "errors": len(self.errors),
                "error_samples": self.errors[:5], "wall_s": round(wall, 2),
                "achieved_rps": round(len(self.lat) / wall, 1) if wall else None, "latency_ms": _pcts(self.lat),
                "server_lookup_ms": _pcts(self.lookup), "server_model_ms": _pcts(self.model)}


def closed_loop(port: int, bodies: list[str], n: int, clients: int, seconds: float) -> dict:
    tally = Tally()
    stop_at = time.perf_counter() + seconds

    def run(k: int) -> None:
        c, i = Client(port), k
        while time.perf_counter() < stop_at:
            body = bodies[i % len(bodies)]
            i += clients
            t0 = time.perf_counter()
            ok, err, lk, md = c.rank(body, n)
            tally.add(ok, err, (time.perf_counter() - t0) * 1e3, lk, md)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"mode": "closed", "clients": clients, **tally.summary(time.perf_counter() - t0)}


def open_loop(port: int, bodies: list[str], n: int, rate: float, seconds: float, pool: int = 64) -> dict:
    """Requests scheduled every 1/rate s; ``pool`` sender threads take them in order; latency from the
    scheduled time."""
    tally = Tally()
    todo: queue.Queue = queue.Queue()
    total = int(rate * seconds)
    t_start = time.perf_counter() + 0.5

    def sender() -> None:
        c = Client(port)
        while True:
            job = todo.get()
            if job is None:
                return
            k, due = job
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            ok, err, lk, md = c.rank(bodies[k % len(bodies)], n)
            tally.add(ok, err, (time.perf_counter() - due) * 1e3, lk, md)

    threads = [threading.Thread(target=sender, daemon=True) for _ in range(pool)]
    for t in threads:
        t.start()
    for k in range(total):  # the schedule is fixed up front; senders pick jobs in due order
        todo.put((k, t_start + k / rate))
    for _ in threads:
        todo.put(None)
    for t in threads:
        t.join()
    return {"mode": "open", "target_rps": rate, "sender_threads": pool,
            **tally.summary(time.perf_counter() - t_start)}


def start_server(workers: int, port: int, model: str, timeout: float) -> tuple[subprocess.Popen, float]:
    server = subprocess.Popen([sys.executable, "-m", "ppm_platform.cli", "serve", "--host", "127.0.0.1", "--port",
                               str(port), "--model", model, "--workers", str(workers)], env=dict(os.environ),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.perf_counter()
    while True:
        if server.poll() is not None:
            raise SystemExit(f"server exited with {server.returncode}: {server.stderr.read().decode()[-2000:]}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            c.request("GET", "/health")
            r = c.getresponse()
            body = json.loads(r.read())
            if r.status == 200:
                return server, time.perf_counter() - t0
            raise SystemExit(f"/health answered {r.status}: {body}")
        except (ConnectionRefusedError, OSError):
            if time.perf_counter() - t0 > timeout:
                raise SystemExit("server did not start in time")
            time.sleep(0.5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", default="1,2", help="worker counts to run")
    ap.add_argument("--clients", type=int, default=16, help="closed-loop clients")
    ap.add_argument("--seconds", type=float, default=30.0, help="closed-loop duration")
    ap.add_argument("--rate", type=float, default=100.0, help="open-loop requests per second")
    ap.add_argument("--open-seconds", type=float, default=60.0, help="open-loop duration")
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--model", default="urm", choices=["urm", "base"])
    ap.add_argument("--startup-timeout", type=float, default=240.0)
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args()

    from ppm_platform.config import Settings

    settings = Settings.from_env()
    inter = pd.read_parquet(settings.tables_dir / "interactions.parquet")
    users = [int(u) for u in inter.tail(max(len(inter) // 10, 1))["user_id"].value_counts().index[:50]]
    cands = [int(i) for i in inter["item_id"].value_counts().index[: args.candidates]]
    bodies = [json.dumps({"user_id": u, "item_ids": cands}) for u in users]
    doc: dict = {"benchmark": "serving load", "candidates": args.candidates, "model": args.model,
                 "cpus": os.cpu_count(), "load_avg_start": [round(x, 2) for x in os.getloadavg()], "runs": []}
    for workers in (int(w) for w in args.workers.split(",")):
        port = _free_port()
        server, startup = start_server(workers, port, args.model, args.startup_timeout)
        try:
            warm = Client(port)
            for k in range(30 * workers):  # every worker loads its item cache and warms its session
                warm.rank(bodies[k % len(bodies)], len(cands))
                if k % 10 == 0:
                    warm = Client(port)  # new connections spread over the workers
            for run in (closed_loop(port, bodies, len(cands), args.clients, args.seconds),
                        open_loop(port, bodies, len(cands), args.rate, args.open_seconds)):
                doc["runs"].append({"workers": workers, "startup_s": round(startup, 1), **run,
                                    "load_avg_after": [round(x, 2) for x in os.getloadavg()]})
                print(f"# workers {workers} {run['mode']}: {run['achieved_rps']} rps, p99 "
                      f"{run['latency_ms'].get('p99')} ms, {run['errors']} errors", file=sys.stderr, flush=True)
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
    doc["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(doc, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
