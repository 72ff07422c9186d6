"""Model swap without downtime: the HTTP service follows the model published at ``models/<name>``.

A model is published atomically (:func:`~ppm_platform.model_store.save_model`: a complete version
folder, then one rename of the ``models/<name>`` symlink). :class:`ModelReloader` watches that link: a
background thread resolves it every ``serving.model_watch_s`` seconds (one ``realpath``; no operator step,
works in every worker process of ``ppm serve --workers N`` and on any file system, where inotify would not
see a rename over NFS), and ``POST /admin/reload`` runs the same check at once (deploy scripts that want to
know the new model is live before they go on). A signal (SIGHUP) was not chosen: uvicorn's supervisor owns
the signals of ``--workers N`` and one signal would not report the outcome.

When the link points at another version, a new :class:`~ppm_platform.serving.ranker.Ranker` is built in
full -- ONNX sessions, Feast store, item cache loaded -- off the request path, then swapped in under the
lock ``/rank`` holds while it scores; a request already past its read of the Ranker finishes on the old
one, which is then closed (its item cache refresh thread stops; it stays usable). Nothing changes for a
request but the model that scores it.

Guards: a new Ranker that cannot be built (files missing, a feature service gone) is not swapped in: the old
one keeps serving, the error is reported by ``/health`` and the build is retried after
:data:`RETRY_S` (at once by ``POST /admin/reload``). A new model whose ``ppm_version`` the online caches do
not hold yet (its probe reports ``version_mismatch``) while the old one's probe is ``ok`` is kept aside and
re-probed at every check: it takes over once the caches are materialized at its version (or once the old one
fails too), so publishing the URM before its caches costs no request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ppm_platform.model_store import resolve_model_dir

log = logging.getLogger("ppm_platform.serving.reload")

#: seconds before a version whose Ranker failed to build is tried again by the watch
RETRY_S = 30.0


def _probe_error(ranker) -> str | None:
    """None when ``ranker``'s probe of the online store is ``ok``, else why not (a refusal or a read error)."""
    try:
        probe = ranker.probe()
    except Exception as e:  # the store unreachable: neither Ranker is known to score
        return f"{type(e).__name__}: {e}"
    return None if probe["status"] == "ok" else probe["error"]


class ModelReloader:
    """Keeps ``state["ranker"]`` on the model published at ``link`` (see the module docstring).

    Args:
        state: the service's shared state; reads and replaces ``"ranker"``, clears ``"load_error"`` and the
            cached ``"probe"`` of ``/health`` on a swap.
        lock: the lock ``/rank`` and the ``/health`` probe hold while they use a Ranker.
        build: builds a Ranker of the currently published model (e.g. ``lambda: Ranker(settings, name)``).
        link: the published model (``catalog.model_dir(settings, name)``, :mod:`ppm_platform.data.catalog`).
        interval_s: seconds between two checks of the watch thread (0: no thread, :meth:`check` only).
    """

    def __init__(self, state: dict[str, Any], lock: threading.Lock, build: Callable[[], Any], link: Path,
                 interval_s: float):
        self.state, self.lock, self.build, self.link, self.interval_s = state, lock, build, Path(link), interval_s
        self._check_lock = threading.Lock()  # one check (and one build) at a time: the watch and the endpoint
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failed: tuple[Path, float] | None = None  # (version folder, monotonic time) of the last failed build
        self._pending = None  # a built Ranker waiting for the online caches of its ppm_version
        #: the last check's outcome (``/health`` reports it)
        self.last: dict[str, Any] = {"reloaded": False, "error": None, "deferred": None}
        #: swaps done so far
        self.reloads = 0

    def start(self) -> "ModelReloader":
        """Start the watch thread (daemon; no-op when ``interval_s`` is 0 or it runs already)."""
        if self.interval_s > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="ppm-model-watch", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the watch thread and close a Ranker kept aside."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._check_lock:
            self._drop_pending()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.check()
            except Exception:  # the watch must outlive any one failure
                log.exception("model watch: check failed")

    def _drop_pending(self) -> None:
        if self._pending is not None:
            self._pending.close()
            self._pending = None

    def check(self, retry_now: bool = False) -> dict[str, Any]:
        """Load the published model if it is another version than the served one.

        Args:
            retry_now: try a version whose build failed at once (default: after :data:`RETRY_S`).

        Returns:
            ``{"reloaded": bool, "model_id", "model_version", "previous_model_id", "error", "deferred"}``:
            ``error`` the build failure of the published version (the old model keeps serving), ``deferred``
            why a built model waits (its ``version_mismatch``).
        """
        with self._check_lock:
            self.last = out = self._check(retry_now)
            return out

    def _served(self, reloaded: bool = False, previous=None, error=None, deferred=None) -> dict[str, Any]:
        r = self.state["ranker"]
        return {"reloaded": reloaded, "model_id": getattr(r, "model_id", None),
                "model_version": getattr(r, "model_version", None),
                "previous_model_id": getattr(previous, "model_id", None), "error": error, "deferred": deferred}

    def _check(self, retry_now: bool) -> dict[str, Any]:
        try:
            target = resolve_model_dir(self.link)
        except FileNotFoundError as e:  # nothing published (yet): keep what serves
            return self._served(error=None if self.state["ranker"] is not None else str(e))
        old = self.state["ranker"]
        if old is not None and old.model_dir == target:
            self._drop_pending()
            return self._served()
        new = self._pending if self._pending is not None and self._pending.model_dir == target else None
        if new is None:
            self._drop_pending()
            if self._failed and self._failed[0] == target and not retry_now and \
                    time.monotonic() - self._failed[1] < RETRY_S:
                return self._served(error=self.last.get("error"))
            try:
                new = self.build()  # off the request path: requests keep scoring on `old` meanwhile
            except Exception as e:
                self._failed = (target, time.monotonic())
                log.warning("model watch: %s could not be loaded, still serving %s: %s", target,
                            getattr(old, "model_id", None), e)
                return self._served(error=f"{target.name}: {type(e).__name__}: {e}")
            self._failed = None
        if old is not None:
            new_error = _probe_error(new)  # its own store, no request uses it yet: no lock
            if new_error is not None:
                with self.lock:
                    old_ok = _probe_error(old) is None
                if old_ok:  # the old model still scores: wait for the caches of the new one's version
                    self._pending = new
                    return self._served(deferred=new_error)
        self._pending = None
        with self.lock:
            previous = self.state["ranker"]
            self.state["ranker"] = new
            self.state["load_error"] = None
            self.state["probe"] = (None, None)  # /health probes the new Ranker next
        self.reloads += 1
        if previous is not None:
            previous.close()
        log.info("model watch: now serving %s (was %s)", new.model_id, getattr(previous, "model_id", None))
        return self._served(reloaded=True, previous=previous)
