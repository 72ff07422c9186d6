"""Faults injected into the ranking service under load: a real uvicorn on
loopback, client threads sending ``POST /rank`` on keep-alive connections, and the faults of the fault table in
``docs/reliability.md`` (Redis killed and restarted or hung, a materialize of the online views, the SQLite online
store locked by another connection). Every reply is recorded with monotonic send / receive times, so a run yields
the outcome (statuses, errors, wrong scores) and the times (to the first 503, to recovery).

Used by ``tests/unit/test_serving_faults.py`` (outcomes asserted, generous timeouts, no time asserted) and
``benchmarks/faults.py`` (the measured times, ``benchmarks/results/faults_*.json``).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

#: the ``status`` field of a 503 the service answers while the online store is unavailable
STORE_UNAVAILABLE = "store_unavailable"


@dataclass(frozen=True)
class Reply:
    """One request of a :class:`Load`: ``sent`` / ``done`` (``time.monotonic()`` s), the HTTP ``status``
    (0: no response, e.g. a client timeout or a dropped connection; ``error`` says which), the JSON body."""

    body_index: int
    sent: float
    done: float
    status: int
    body: dict | None
    error: str | None = None


class LoopbackServer:
    """``app`` served by uvicorn on ``127.0.0.1:<free port>`` in a daemon thread (a context manager; the
    port is bound before the thread starts, so no race on it).

    Raises:
        TimeoutError: the server did not start within ``timeout_s``.
    """

    def __init__(self, app, timeout_s: float = 60.0):
        import uvicorn

        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True)
        self.timeout_s = timeout_s

    def __enter__(self) -> "LoopbackServer":
        self._thread.start()
        deadline = time.monotonic() + self.timeout_s
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise TimeoutError(f"uvicorn did not start on 127.0.0.1:{self.port} within {self.timeout_s} s")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self._thread.join(self.timeout_s)


class Load:
    """``threads`` client threads, each on its own keep-alive HTTP/1.1 connection to ``127.0.0.1:port``,
    sending ``bodies`` (``POST /rank`` JSON bodies) round-robin, back to back, until :meth:`stop`. A request
    without a response within ``timeout_s`` (a hang) is recorded with status 0, as is a dropped connection
    (the thread then reconnects)."""

    def __init__(self, port: int, bodies: list[dict], threads: int = 4, timeout_s: float = 30.0):
        if not bodies or threads < 1:
            raise ValueError(f"need at least one body and one thread (got {len(bodies)} bodies, {threads} threads)")
        self.port, self.bodies, self.timeout_s = port, [json.dumps(b) for b in bodies], timeout_s
        self._stop = threading.Event()
        self._replies: list[list[Reply]] = [[] for _ in range(threads)]
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def _run(self, i: int) -> None:
        out, n = self._replies[i], i
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout_s)
        while not self._stop.is_set():
            k = n % len(self.bodies)
            n += 1
            t0 = time.monotonic()
            try:
                conn.request("POST", "/rank", body=self.bodies[k], headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                data = r.read()
                try:
                    doc = json.loads(data)
                except ValueError:
                    doc = {"detail": data[:300].decode(errors="replace")}
                out.append(Reply(k, t0, time.monotonic(), r.status, doc))
            except Exception as e:  # no response at all: a failed request too
                out.append(Reply(k, t0, time.monotonic(), 0, None, f"{type(e).__name__}: {e}"))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout_s)
        conn.close()

    def start(self) -> "Load":
        for t in self._threads:
            t.start()
        return self

    def count(self, pred: Callable[[Reply], bool] = lambda r: True) -> int:
        """Replies so far that satisfy ``pred`` (all threads)."""
        return sum(pred(r) for x in self._replies for r in list(x))

    def wait(self, pred: Callable[[Reply], bool], n: int, timeout_s: float, what: str) -> None:
        """Block until ``n`` replies satisfy ``pred``. Raises ``TimeoutError`` naming ``what`` after
        ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while self.count(pred) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: {self.count(pred)} of {n} replies within {timeout_s} s; "
                                   f"last replies {[(r.status, r.body or r.error) for r in self.replies()[-3:]]}")
            time.sleep(0.02)

    def stop(self) -> list[Reply]:
        """Stop the threads (each finishes its request in flight) and return every reply, in send order."""
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout_s + 5)
        return self.replies()

    def replies(self) -> list[Reply]:
        return sorted((r for x in self._replies for r in list(x)), key=lambda r: r.sent)


def _scores(body: dict | None) -> list | None:
    return None if body is None else [(s["item_id"], round(s["click"], 6), round(s["order"], 6))
                                      for s in body.get("scores", [])]


def summarize(replies: list[Reply], fault_start: float, fault_end: float,
              reference: dict[int, list] | None = None) -> dict[str, Any]:
    """The fault-table figures of one run.

    Args:
        replies: every reply of the run (:meth:`Load.stop`).
        fault_start / fault_end: monotonic times the fault began / ended (e.g. Redis killed / listening again).
        reference: body index -> its scores before the fault (:func:`reference_scores`); a 200 with other
            scores counts in ``wrong_scores``.

    Returns:
        ``requests``, ``ok`` (200), ``unavailable`` (503 ``store_unavailable`` received after the fault
        began), ``failed`` (anything else, no response included) with ``failed_examples``, ``wrong_scores``; ``time_to_503_s`` (the first such
        503's receive time minus ``fault_start``; None if none), ``max_503_latency_s``; ``max_latency_s`` of
        the requests in flight during the fault; ``recovery_s`` (receive time of the first 200 of a request
        sent at or after ``fault_end``, minus ``fault_end``) and ``not_ok_after_recovery`` (non-200 replies
        sent after that one); ``fault_s``.
    """
    ok = [r for r in replies if r.status == 200]
    # a 503 for the store counts as the fault's only from its start (before it, it is a failure)
    unavailable = [r for r in replies if r.status == 503 and (r.body or {}).get("status") == STORE_UNAVAILABLE
                   and r.done >= fault_start]
    seen = {id(r) for r in unavailable}
    failed = [r for r in replies if r.status != 200 and id(r) not in seen]
    wrong = [r for r in ok if reference is not None and _scores(r.body) != reference.get(r.body_index)]
    during = [r for r in replies if r.done >= fault_start and r.sent <= fault_end]
    first_ok = next((r for r in replies if r.sent >= fault_end and r.status == 200), None)
    after = [r for r in replies if first_ok is not None and r.sent > first_ok.sent]
    first_503 = min((r.done for r in unavailable), default=None)
    return {
        "requests": len(replies), "ok": len(ok), "unavailable": len(unavailable), "failed": len(failed),
        "failed_examples": [f"{r.status} {r.body or r.error}" for r in failed[:3]], "wrong_scores": len(wrong),
        "fault_s": round(fault_end - fault_start, 3),
        "time_to_503_s": None if first_503 is None else round(first_503 - fault_start, 4),
        "max_503_latency_s": round(max((r.done - r.sent for r in unavailable), default=0.0), 4) if unavailable else None,
        "max_latency_s": round(max((r.done - r.sent for r in during), default=0.0), 4),
        "recovery_s": None if first_ok is None else round(first_ok.done - fault_end, 4),
        "not_ok_after_recovery": sum(r.status != 200 for r in after),
    }


def reference_scores(port: int, bodies: list[dict], timeout_s: float = 30.0) -> dict[int, list]:
    """Each body's scores from one request before any fault (body index -> scores).

    Raises:
        RuntimeError: a reference request did not answer 200.
    """
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    out = {}
    try:
        for i, b in enumerate(bodies):
            conn.request("POST", "/rank", body=json.dumps(b), headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            doc = json.loads(r.read())
            if r.status != 200:
                raise RuntimeError(f"reference request {b} answered {r.status}: {doc}")
            out[i] = _scores(doc)
    finally:
        conn.close()
    return out


def run_fault(port: int, bodies: list[dict], inject: Callable[[], tuple[float, float]], threads: int = 4,
              warm_replies: int = 20, after_ok: int = 20, after_s: float = 0.5, timeout_s: float = 60.0,
              ) -> tuple[dict[str, Any], list[Reply]]:
    """Load the service, inject a fault, keep loading until it has recovered; summarize.

    ``inject()`` performs the fault and returns its ``(start, end)`` monotonic times. It runs after
    ``warm_replies`` replies; the load then runs until ``after_ok`` 200s of requests sent after the fault's
    end and at least ``after_s`` more seconds (a recovery that does not come raises ``TimeoutError`` after
    ``timeout_s``, the load stopped first).

    Returns:
        (:func:`summarize` of the run plus ``threads``, the replies).
    """
    reference = reference_scores(port, bodies, timeout_s)
    load = Load(port, bodies, threads, timeout_s=timeout_s).start()
    try:
        load.wait(lambda r: True, warm_replies, timeout_s, "replies before the fault")
        start, end = inject()
        load.wait(lambda r: r.sent >= end and r.status == 200, after_ok, timeout_s, "200s after the fault")
        time.sleep(after_s)
    finally:
        replies = load.stop()
    return {"threads": threads, **summarize(replies, start, end, reference)}, replies


# ---- the faults ----------------------------------------------------------------------------------------
class RedisKill:
    """Kill a ``redis-server`` with SIGKILL, keep it down ``down_s`` seconds and start it again on the same
    port and folder (:func:`~ppm_platform.testing.cluster.start_redis` with ``persist=True``, so the data
    comes back from its append-only file). ``proc`` is the running server (the new one after a call)."""

    def __init__(self, proc: subprocess.Popen, workdir: Path, port: int, down_s: float = 2.0):
        self.proc, self.workdir, self.port, self.down_s = proc, workdir, port, down_s

    def __call__(self) -> tuple[float, float]:
        from ppm_platform.testing.cluster import start_redis

        start = time.monotonic()
        self.proc.kill()
        self.proc.wait()
        time.sleep(self.down_s)
        self.proc, _ = start_redis(self.workdir, self.port, persist=True)
        return start, time.monotonic()  # listening again


class RedisPause:
    """Stop a ``redis-server`` with SIGSTOP for ``pause_s`` seconds, then SIGCONT: a hung server (its
    connections stay open, the kernel still accepts new ones, nothing answers), which only the client's
    socket timeouts bound."""

    def __init__(self, proc: subprocess.Popen, pause_s: float = 2.0):
        self.proc, self.pause_s = proc, pause_s

    def __call__(self) -> tuple[float, float]:
        start = time.monotonic()
        self.proc.send_signal(signal.SIGSTOP)
        try:
            time.sleep(self.pause_s)
        finally:
            self.proc.send_signal(signal.SIGCONT)
        return start, time.monotonic()


class SqliteLock:
    """Hold ``BEGIN EXCLUSIVE`` on the SQLite database ``path`` from another connection for ``hold_s``
    seconds (no reader or writer gets in meanwhile), then commit. The fault starts once the lock is held."""

    def __init__(self, path: Path, hold_s: float):
        self.path, self.hold_s = Path(path), hold_s

    def __call__(self) -> tuple[float, float]:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            conn.execute("BEGIN EXCLUSIVE")
            start = time.monotonic()
            time.sleep(self.hold_s)
            conn.execute("COMMIT")
            return start, time.monotonic()
        finally:
            conn.close()


@contextlib.contextmanager
def registry_refresh(store, lock: threading.Lock, every_s: float = 0.05) -> Iterator[None]:
    """Within the block, refresh ``store``'s registry cache every ``every_s`` s under the service's ``lock``:
    what its ``cache_ttl_seconds`` expiry does inside a request, so the requests see each view's state while a
    materialize runs (MATERIALIZING included) instead of the cached registry of before it."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every_s):
            with lock:
                store.refresh_registry()

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join(30)


class Work:
    """A fault that is a piece of work (e.g. a materialize) run in the caller's thread, optionally inside a
    context (:func:`registry_refresh`); ``result`` holds what it returned."""

    def __init__(self, fn: Callable[[], Any], context: Callable[[], contextlib.AbstractContextManager] | None = None):
        self.fn, self.context, self.result = fn, context, None

    def __call__(self) -> tuple[float, float]:
        with (self.context() if self.context else contextlib.nullcontext()):
            start = time.monotonic()
            self.result = self.fn()
            return start, time.monotonic()
