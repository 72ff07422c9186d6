"""``ppm rank``: score candidate items for a user through a running ``ppm serve`` when there is one (an HTTP
call: no model, no Feast in this process), else in this process with a
:class:`~ppm_platform.serving.ranker.Ranker`; print the ranking with titles, whether the user is known, and
the lookup time with what it measured (a cold first lookup or a warm one).

The ids are checked as ``POST /rank`` checks them (``0 <= id < 2**63``, at most
``serving.max_candidates``) before anything is loaded. Only this module's light imports run on the server
path (the standard library's HTTP client, pyarrow for the titles); the standalone path imports Feast, which
is most of its time.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import click

from ppm_platform.config import Settings

#: the largest entity id the online store holds (Feast stores ids as int64), as ``POST /rank`` accepts
MAX_ENTITY_ID = 2**63 - 1

#: seconds the server probe (``GET /health``) may take before ``ppm rank`` scores in this process
PROBE_TIMEOUT_S = 0.5


class EntityIdType(click.ParamType):
    """A click argument type for a user or item id: a base-10 integer in ``[0, 2**63)`` (``POST /rank``'s
    bounds); anything else is a usage error (exit 2) naming the argument."""

    name = "ID"

    def convert(self, value, param, ctx):
        if isinstance(value, int) and not isinstance(value, bool):
            n = value
        else:
            try:
                n = int(str(value).strip(), 10)
            except ValueError:
                self.fail(f"{value!r} is not an integer id", param, ctx)
        if not 0 <= n <= MAX_ENTITY_ID:
            self.fail(f"{n} is out of range: ids are 0 <= id < 2**63 (int64, as POST /rank accepts)", param, ctx)
        return n


@dataclass
class Ranking:
    """One ranking, from the server or from this process.

    Attributes:
        rows: ``(item_id, click, order, known)`` per candidate, best click first.
        lookup_ms: the feature read of the call shown; ``lookup_note`` says what it measured.
        warm_lookup_ms: standalone only: the same lookup again (the connection open), or None.
    """

    user_id: int
    user_known: bool
    model: str
    model_version: str | None
    rows: list[tuple[int, float, float, bool]]
    lookup_ms: float
    model_ms: float
    source: str
    lookup_note: str
    warm_lookup_ms: float | None = None
    unknown_item_ids: list[int] = field(default_factory=list)


def server_url(settings: Settings) -> str:
    """The URL ``ppm serve`` listens on by default (``settings.serving``; a wildcard bind is reached on
    loopback)."""
    host = settings.serving.host
    host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    return f"http://{host}:{settings.serving.port}"


def probe_server(url: str, timeout: float = PROBE_TIMEOUT_S) -> dict | None:
    """``GET <url>/health`` within ``timeout`` seconds: its JSON body (200 or 503), or None when nothing that
    looks like ``ppm serve`` answers."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=timeout) as r:
            body = json.loads(r.read())
    except urllib.error.HTTPError as e:  # 503: a server that is up but not ready
        try:
            body = json.loads(e.read())
        except ValueError:
            return None
    except (OSError, ValueError):  # refused, timed out, not HTTP, not JSON
        return None
    return body if isinstance(body, dict) and "model" in body else None


class ServerError(Exception):
    """``POST /rank`` answered an error: ``status`` (HTTP code), ``detail`` (its message), ``kind``
    (``status`` field: ``version_mismatch``, ``store_unavailable``, or None)."""

    def __init__(self, status: int, detail: str, kind: str | None):
        super().__init__(f"ppm serve answered {status}: {detail}")
        self.status, self.detail, self.kind = status, detail, kind


def rank_via_server(url: str, user_id: int, item_ids: list[int], timeout: float = 30.0) -> Ranking:
    """``POST <url>/rank`` (docs/serving.md) and its answer as a :class:`Ranking`.

    Raises:
        ServerError: a 4xx/5xx answer.
        OSError: the server cannot be reached.
    """
    req = urllib.request.Request(f"{url.rstrip('/')}/rank", method="POST",
                                 data=json.dumps({"user_id": user_id, "item_ids": item_ids}).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body = json.loads(r.read())
    except urllib.error.HTTPError as e:
        try:
            err = json.loads(e.read())
        except ValueError:
            err = {}
        raise ServerError(e.code, str(err.get("detail", e.reason)), err.get("status")) from None
    return Ranking(user_id=body["user_id"], user_known=body["user_known"], model=body["model"],
                   model_version=body.get("model_version"),
                   rows=[(s["item_id"], s["click"], s["order"], s["known"]) for s in body["scores"]],
                   lookup_ms=body["lookup_ms"], model_ms=body["model_ms"], source=f"ppm serve at {url}",
                   lookup_note="warm: the server's online-store connection is open",
                   unknown_item_ids=body.get("unknown_item_ids", []))


def rank_here(settings: Settings, model: str, user_id: int, item_ids: list[int], why: str) -> Ranking:
    """Score in this process: a :class:`~ppm_platform.serving.ranker.Ranker` without item cache (one call has
    nothing to fill it with), ranked twice: the ranking and lookup of the first call (cold: this process
    opens the online store), and the lookup of the second (warm).

    Raises:
        FileNotFoundError: no exported model yet (``ppm demo``).
    """
    from ppm_platform.serving.ranker import Ranker

    ranker = Ranker(settings, model, item_cache=False)
    res = ranker.rank(user_id, item_ids)
    warm = ranker.rank(user_id, item_ids).lookup_ms
    s = res.scores
    rows = list(zip(s["item_id"].tolist(), s["click"].tolist(), s["order"].tolist(), s["known"].tolist()))
    return Ranking(user_id=res.user_id, user_known=bool(res.user_known), model=model,
                   model_version=ranker.model_version, rows=rows, lookup_ms=res.lookup_ms, model_ms=res.model_ms,
                   source=f"this process ({why})", lookup_note="first lookup (cold): this process opened the "
                   "online store", warm_lookup_ms=warm, unknown_item_ids=list(res.unknown_item_ids))


def titles(items_table: Path, item_ids: list[int]) -> dict[int, str]:
    """``item_id -> title`` of ``item_ids`` from the canonical items table (empty when there is no table or
    no ``title`` column). Read with pyarrow alone: pandas is not imported on the server path."""
    if not items_table.exists():
        return {}
    import pyarrow.parquet as pq

    f = pq.ParquetFile(items_table)  # not pq.read_table: its dataset layer imports pandas (~0.2 s)
    if "title" not in f.schema_arrow.names:  # a catalog without titles
        return {}
    t = f.read(columns=["item_id", "title"])
    wanted = set(item_ids)
    return {i: title for i, title in zip(t.column("item_id").to_pylist(), t.column("title").to_pylist())
            if i in wanted}


def format_ranking(r: Ranking, names: dict[int, str]) -> list[str]:
    """The lines ``ppm rank`` prints: the header (user known or cold-start, model, who scored), one row per
    candidate (rank, item, click, order, known, title), and the timings with what the lookup measured."""
    who = "known" if r.user_known else "unknown: no online features, scored as a cold-start user"
    version = f" (version {r.model_version})" if r.model_version else ""
    out = [f"user {r.user_id}: {who}; model {r.model}{version}; scored by {r.source}",
           f"{'rank':>4}  {'item_id':>8}  {'click':>7}  {'order':>7}  {'known':<5}  title"]
    for i, (item, click_p, order_p, known) in enumerate(r.rows):
        out.append(f"{i + 1:>4}  {item:>8}  {click_p:>7.4f}  {order_p:>7.4f}  {'yes' if known else 'no':<5}  "
                   f"{names.get(item, '')}".rstrip())
    lookup = f"lookup {r.lookup_ms:.1f} ms ({r.lookup_note})"
    if r.warm_lookup_ms is not None:
        lookup += f", warm lookup {r.warm_lookup_ms:.1f} ms (the same lookup again)"
    out.append(f"{lookup}; model {r.model_ms:.1f} ms")
    if r.unknown_item_ids:
        out.append(f"unknown items (no online features, scored as cold-start items): "
                   f"{', '.join(map(str, r.unknown_item_ids))}")
    return out


def run_rank(settings: Settings, user_id: int, item_ids: list[int], model: str, url: str | None,
             local: bool) -> tuple[Ranking, float]:
    """Rank through ``url`` (given: it must answer), else through the server of ``settings.serving`` when its
    ``/health`` answers within :data:`PROBE_TIMEOUT_S` for ``model``, else in this process. Returns the ranking
    and its wall seconds.

    Raises:
        ConnectionError: ``url`` was given and nothing answers there.
        ServerError: the server refused the request.
    """
    t0 = time.perf_counter()
    if local:
        return rank_here(settings, model, user_id, item_ids, "--local"), time.perf_counter() - t0
    target = url or server_url(settings)
    health = probe_server(target)
    if health is None:
        if url:
            raise ConnectionError(f"no ppm serve answered at {url}/health within {PROBE_TIMEOUT_S} s")
        why = f"no ppm serve at {target}"
    elif health.get("model") != model:
        why = f"ppm serve at {target} serves {health.get('model')}, not {model}"
    else:
        return rank_via_server(target, user_id, item_ids), time.perf_counter() - t0
    return rank_here(settings, model, user_id, item_ids, why), time.perf_counter() - t0
