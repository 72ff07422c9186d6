"""HTTP ranking service: ``POST /rank`` and ``GET /health`` over :class:`~ppm_platform.serving.ranker.Ranker`.

Built with FastAPI (https://fastapi.tiangolo.com) and served by uvicorn (``ppm serve``). Contract:

``POST /rank`` body ``{"user_id": int, "item_ids": [int, ...]}`` (1 to ``settings.serving.max_candidates``
ids, each ``0 <= id < 2**63``; JSON integers only, ``"7"`` or ``7.5`` are rejected; no other keys) ->
``200 {"user_id", "model", "model_version", "ppm_version", "user_known", "unknown_item_ids", "lookup_ms",
"model_ms", "scores": [{"item_id", "click", "order", "known"}, ...]}`` with ``scores`` in descending click
probability; ``model_version`` is the weights hash of the model version that scored the request.

Errors are JSON ``{"detail": message}``: ``413`` body larger than ``settings.serving.max_body_bytes``;
``422`` malformed JSON, missing/extra keys, non-integer or out-of-range ids, empty or too many candidates;
``503`` the Ranker refuses (``VersionMismatchError``: the online PPM caches were produced by another PPM
than the URM's), the model is not loaded, or the online store is down or locked past its timeouts
(``status="store_unavailable"``: Redis refused or timed out, SQLite ``database is locked``; the next request
tries again, so the service recovers by itself). A client error is never a 500.

Cold start (defined behaviour, see :class:`~ppm_platform.serving.ranker.Ranker`): unknown users and items
are scored with the trained fallbacks (OOV id row, zero-impression counters, learned no-content input) and
flagged: ``user_known=false``, ``unknown_item_ids``, ``known=false`` per score row.

``GET /health`` -> ``200 {"status": "ok", "model", "ppm_version", "user_feature_service",
"item_feature_service", "cache_versions_seen", "error": null}``; ``503`` with ``status="version_mismatch"``
(and the error) when the online caches hold another ``ppm_version``, ``status="unavailable"`` when the model
could not be loaded. A probe of the online store (1 user + 5 items the model was trained on) is reused for
serving.health_probe_s and never waits for a running /rank.

Model updates (:mod:`ppm_platform.serving.reload`): the service follows the model published at
``models/<name>`` -- a watch thread checks it every ``serving.model_watch_s`` seconds and ``POST /admin/reload``
checks at once (``200 {"reloaded", "model_id", "model_version", "previous_model_id", "error", "deferred"}``);
a new version's Ranker is built off the request path and swapped in, no request fails.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from ppm_platform.data import catalog
from ppm_platform.config import Settings
from ppm_platform.feature_store import online_store_errors
from ppm_platform.serving.ranker import Ranker, VersionMismatchError
from ppm_platform.serving.reload import ModelReloader

#: the service's log lines ("loading", "ready", "shutdown") go to uvicorn's own logger, so ``--log-level`` and
#: uvicorn's format apply to them
log = logging.getLogger("uvicorn.error")

#: an entity id as Feast stores it: a non-negative int64, JSON integer only (strict: no "7", no 7.0)
EntityId = Annotated[int, Field(strict=True, ge=0, le=2**63 - 1)]


class RankRequest(BaseModel):
    """``POST /rank`` body."""

    model_config = ConfigDict(extra="forbid")
    user_id: EntityId
    item_ids: list[EntityId] = Field(min_length=1)


class ScoreRow(BaseModel):
    item_id: int
    click: float
    order: float
    known: bool


class RankResponse(BaseModel):
    """``POST /rank`` response; ``scores`` sorted by ``click`` descending."""

    user_id: int
    model: str
    model_version: str | None
    ppm_version: str | None
    user_known: bool
    unknown_item_ids: list[int]
    lookup_ms: float
    model_ms: float
    scores: list[ScoreRow]


class BodyTooLarge(HTTPException):
    """413: the request body is larger than ``settings.serving.max_body_bytes``."""

    def __init__(self, limit: int, size: int | None = None):
        what = f"request body of {size} bytes" if size is not None else "request body"
        super().__init__(status_code=413, detail=f"{what} exceeds the limit of {limit} bytes")


class BodyLimitMiddleware:
    """Pure ASGI middleware bounding the request body *before* it is parsed: a declared ``Content-Length``
    is checked up front; a streamed (chunked) body is counted as it is received and the request fails with
    413 as soon as it passes the limit (the exception is an ``HTTPException``, so FastAPI's body parsing
    re-raises it unchanged)."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                return await JSONResponse({"detail": "invalid Content-Length header"}, 400)(scope, receive, send)
            if int(declared) > self.max_bytes:
                exc = BodyTooLarge(self.max_bytes, int(declared))
                return await JSONResponse({"detail": exc.detail}, 413)(scope, receive, send)
        received = 0

        async def bounded_receive():
            nonlocal received
            msg = await receive()
            if msg["type"] == "http.request":
                received += len(msg.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return msg

        return await self.app(scope, bounded_receive, send)


def _is_json(content_type: str | None) -> bool:
    """Whether a ``Content-Type`` header names JSON (``application/json`` or ``application/<x>+json``), as
    FastAPI decides whether to parse a body."""
    main = (content_type or "").split(";")[0].strip().lower()
    return main == "application/json" or (main.startswith("application/") and main.endswith("+json"))


def _error_message(err: dict[str, Any], content_type: str | None = None) -> str:
    if tuple(err.get("loc", ())) == ("body",) and not _is_json(content_type):
        # FastAPI parses a body as JSON only when its Content-Type says so; any other body reaches the model as
        # raw bytes and fails as "not a dictionary", which does not say what to change
        got = f"Content-Type: {content_type}" if content_type else "no Content-Type header"
        return f"body: send the JSON object with Content-Type: application/json (got {got})"
    if err.get("type") == "json_invalid":
        pos = [p for p in err.get("loc", ()) if isinstance(p, int)]
        return f"body: invalid JSON{f' at character {pos[0]}' if pos else ''} ({err.get('msg', 'JSON decode error')})"
    loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
    return f"{loc or 'body'}: {err.get('msg', 'invalid')}"


def create_app(settings: Settings, model_name: str | None = None, ranker: Ranker | None = None,
               watch: bool | None = None) -> FastAPI:
    """Build the ranking service.

    Args:
        settings: platform settings (``settings.serving`` holds the limits).
        model_name: ``urm`` or ``base`` (default ``settings.serving.model``).
        ranker: an existing Ranker (tests); default: built from ``settings`` at start-up. If building it
            fails (no model exported yet), ``/health`` answers 503 ``unavailable`` with the reason.
        watch: follow the published model with a watch thread every ``serving.model_watch_s`` seconds
            (:class:`~ppm_platform.serving.reload.ModelReloader`); default: when ``ranker`` is not given (a
            given one is kept until ``POST /admin/reload`` finds another published version).

    Returns:
        a FastAPI app; requests are scored one at a time (a lock around the Ranker: the online-store
        connection and the 1-thread onnxruntime session are shared; scale with worker processes, ``serve``).
    """
    cfg = settings.serving
    name = model_name or cfg.model
    lock = threading.Lock()
    # probe: the last /health probe (monotonic time, result), reused for serving.health_probe_s
    state: dict[str, Any] = {"ranker": ranker, "load_error": None, "lock": lock, "probe": (None, None),
                             "served": 0}
    if ranker is None:
        try:
            state["ranker"] = Ranker(settings, name)
        except Exception as e:  # reported by /health, refused by /rank
            state["load_error"] = f"{type(e).__name__}: {e}"
    reloader = ModelReloader(state, lock, lambda: Ranker(settings, name), catalog.model_dir(settings, name),
                             cfg.model_watch_s if (ranker is None if watch is None else watch) else 0.0)
    state["reloader"] = reloader.start()

    def shutdown() -> None:
        reloader.stop()
        log.info("shutdown: %s served %d /rank requests", name, state["served"])

    app = FastAPI(title="ppm-platform ranking", version="1",
                  description="URM / IDRec ranking from the Feast online store with onnxruntime.",
                  on_shutdown=[shutdown])

    app.add_middleware(BodyLimitMiddleware, max_bytes=cfg.max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        ctype = request.headers.get("content-type")
        return JSONResponse({"detail": "; ".join(_error_message(e, ctype) for e in errors[:5])
                             + (f" (+{len(errors) - 5} more)" if len(errors) > 5 else "")}, status_code=422)

    @app.exception_handler(Exception)
    async def internal_error(_request: Request, exc: Exception):  # a bug, not a client error: no stack leak
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)

    @app.get("/health")
    def health():
        r: Ranker | None = state["ranker"]
        if r is None:
            return JSONResponse({"status": "unavailable", "model": name, "error": state["load_error"]},
                                status_code=503)
        at, probe = state["probe"]
        if probe is None or time.monotonic() - at >= cfg.health_probe_s:
            # only the first probe waits for the Ranker; a later one never queues behind a /rank (probes
            # every second from a load balancer must not slow ranking): if it is busy, the last result answers
            if lock.acquire(blocking=probe is None):
                try:
                    probe = r.probe()
                    at = time.monotonic()
                    state["probe"] = (at, probe)
                except online_store_errors() as e:  # the store is down: 503, and probe again on the next call
                    at = time.monotonic()
                    probe = {"status": "store_unavailable", "error": f"online store unavailable: "
                             f"{type(e).__name__}: {e}", "cache_versions_seen": sorted(r.cache_versions_seen)}
                    state["probe"] = (float("-inf"), probe)
                finally:
                    lock.release()
        body = {"status": probe["status"], "model": r.model_name, "model_version": r.model_version,
                "model_id": r.model_id, "reload_error": reloader.last["error"],
                "reload_deferred": reloader.last["deferred"], "ppm_version": r.ppm_version,
                "user_feature_service": r.user_service, "item_feature_service": r.item_service,
                "cache_versions_seen": probe["cache_versions_seen"], "error": probe["error"],
                "probe_age_s": round(time.monotonic() - at, 3)}
        return JSONResponse(body, status_code=200 if probe["status"] == "ok" else 503)

    @app.post("/rank", response_model=RankResponse)
    def rank(req: RankRequest):
        r: Ranker | None = state["ranker"]
        if r is None:
            return JSONResponse({"detail": f"model not loaded: {state['load_error']}"}, status_code=503)
        if len(req.item_ids) > cfg.max_candidates:
            return JSONResponse({"detail": f"item_ids: {len(req.item_ids)} candidates, at most "
                                           f"{cfg.max_candidates} allowed (serving.max_candidates)"},
                                status_code=422)
        try:
            with lock:
                res = r.rank(req.user_id, list(req.item_ids))
                state["served"] += 1
        except VersionMismatchError as e:
            return JSONResponse({"detail": str(e), "status": "version_mismatch"}, status_code=503)
        except online_store_errors() as e:  # the store is down or locked past its timeouts: retry, not a bug
            return JSONResponse({"detail": f"online store unavailable: {type(e).__name__}: {e}",
                                 "status": "store_unavailable"}, status_code=503)
        s = res.scores
        # the RankResponse shape, built as plain JSON: returning a Response skips FastAPI's re-validation of
        # the declared response_model (N pydantic rows; ~2 ms at 500 candidates) while /docs keeps the schema
        return JSONResponse({
            "user_id": res.user_id, "model": r.model_name, "model_version": r.model_version,
            "ppm_version": r.ppm_version,
            "user_known": bool(res.user_known), "unknown_item_ids": [int(i) for i in res.unknown_item_ids],
            "lookup_ms": round(res.lookup_ms, 3), "model_ms": round(res.model_ms, 3),
            "scores": [{"item_id": int(i), "click": float(c), "order": float(o), "known": bool(k)}
                       for i, c, o, k in zip(s["item_id"].tolist(), s["click"].tolist(), s["order"].tolist(),
                                             s["known"].tolist())]})

    @app.post("/admin/reload")
    def reload():
        """Check the published model now; swap it in if it is another version (see ModelReloader.check)."""
        return JSONResponse(reloader.check(retry_now=True))

    app.state.ppm = state
    return app


#: environment variables naming the model the worker processes of ``ppm serve --workers N`` serve, and the URL
#: their parent listens on (for their "ready" line)
SERVE_MODEL_ENV, SERVE_URL_ENV = "PPM_SERVE_MODEL", "PPM_SERVE_URL"


def app_from_env() -> FastAPI:
    """The app of one worker process of ``ppm serve --workers N`` (a uvicorn factory): settings from the
    ``PPM_*`` environment, the model from ``PPM_SERVE_MODEL``. Each worker builds its own Ranker: its own
    ONNX sessions, Feast store (online-store connection) and item cache, and logs when it is ready."""
    settings = Settings.from_env()
    name = os.environ.get(SERVE_MODEL_ENV) or settings.serving.model
    log.info("worker %d: loading %s from %s", os.getpid(), name, catalog.model_dir(settings, name))
    app = create_app(settings, name)

    def ready() -> None:  # the parent bound the socket before starting the workers
        log.info("worker %d: %s on %s", os.getpid(), _ready_message(app, name), os.environ.get(SERVE_URL_ENV, "?"))

    app.router.on_startup.append(ready)

    return app


def _ready_message(app: FastAPI, name: str) -> str:
    state = app.state.ppm
    r = state["ranker"]
    if r is None:
        return f"up WITHOUT a model ({state['load_error']}): /health answers 503, /rank refuses"
    return f"ready: {name} version {r.model_version} ({r.model_id})"


#: ``--log-level`` choices (uvicorn's)
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


def serve(settings: Settings, host: str | None = None, port: int | None = None, model_name: str | None = None,
          log_level: str = "info", workers: int = 1, access_log: bool = False) -> None:
    """Run the service with uvicorn (blocking) on ``host:port`` (defaults ``settings.serving``).

    Logs (uvicorn's logger and format, at ``log_level``): "loading" before the model is read, "ready" with the
    URL once the model is loaded and the socket listens, "shutdown" with the number of /rank requests served.

    Args:
        workers: uvicorn worker processes (uvicorn docs, "Deployment": ``--workers``); > 1 runs
            :func:`app_from_env` in each, all on the same port. A process scores one request at a time, so
            workers are how the service uses more than one core.
        log_level: one of :data:`LOG_LEVELS`.
        access_log: uvicorn's per-request access log (one line per request, at ``info``).

    Raises:
        ValueError: ``workers < 1`` or an unknown ``log_level``.
    """
    import uvicorn

    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if log_level not in LOG_LEVELS:
        raise ValueError(f"log_level must be one of {LOG_LEVELS}, got {log_level!r}")
    host, port = host or settings.serving.host, port or settings.serving.port
    name = model_name or settings.serving.model
    url = f"http://{host}:{port}"
    if workers > 1:
        os.environ[SERVE_MODEL_ENV], os.environ[SERVE_URL_ENV] = name, url
        uvicorn.run("ppm_platform.serving.app:app_from_env", factory=True, workers=workers, host=host, port=port,
                    log_level=log_level, access_log=access_log)
        return
    config = uvicorn.Config(None, host=host, port=port, log_level=log_level, access_log=access_log)  # logging set up
    log.info("loading %s from %s (Feast store, ONNX sessions, item cache)", name, catalog.model_dir(settings, name))
    t0 = time.perf_counter()
    app = create_app(settings, name)
    loaded_s = time.perf_counter() - t0

    class ReadyServer(uvicorn.Server):
        """uvicorn's server, logging "ready" once its socket listens (after start-up, never before)."""

        async def startup(self, sockets=None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                log.info("%s on %s after %.1f s (POST /rank, GET /health; Ctrl+C stops)",
                         _ready_message(app, name), url, loaded_s)

    config.app = app
    ReadyServer(config).run()
