"""The Dagster child process of the CLI: ``dagster job execute`` / ``dagster asset materialize`` on
``dagster_project.definitions``, its environment, its ``dagster.yaml``, its event stream and its log file.

Dagster runs in a child process so that the library never imports Dagster and a CLI run is the same run the
Dagster UI shows (same ``DAGSTER_HOME``). What the terminal gets and what the log file gets:

- the child's stdout and stderr (Dagster's console log at INFO, Spark, Feast, our stages' messages) go to
  ``<artifacts>/logs/<command>-<UTC time>.log``, named at the end of the command;
- the terminal gets one line per asset as it finishes (name, seconds, the figure that matters: AUC for a
  model, rows for a table; :func:`headline`), failed checks and steps, and on a terminal a live line naming
  the running step.

Per-asset events come from the run's own event stream, not from parsing text: the ``dagster.yaml`` the CLI
writes (:func:`write_dagster_yaml`) installs :class:`DagsterEventHandler` as a ``python_logs`` handler
(Dagster docs, "Python logging": ``dagster_handler_config``); Dagster hands every run event to it, and it
appends one JSON line per event of interest to the file named by ``$PPM_DAGSTER_EVENTS``. Runs started by the
UI have no such variable, so the handler does nothing there.

Dependency noise is turned off where it starts: the run's console log level is INFO (Dagster's per-step
DEBUG events stay in the UI's event log), telemetry and the first-run dialog are off in ``dagster.yaml``, and
the warnings of dependencies that are not the user's business are filtered in the child by
``PYTHONWARNINGS`` (:data:`CHILD_WARNING_FILTERS`, each scoped to its module or message).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable

from ppm_platform.config import REPO_ROOT, Settings

#: the assets of the daily partitions (dagster_project/defs/daily), in dependency order
DAILY_ASSETS = "interactions_daily,user_features_daily,online_user_features"

#: what ``ppm demo`` materializes: the ``ppm_main`` graph up to the online ranking and the Base baseline's ONNX
#: export (not the evaluation reports, not the daily partitions)
DEMO_SELECTION = "*ranking_demo,*base_onnx"

#: environment variable naming the JSON-lines file :class:`DagsterEventHandler` appends to
EVENTS_ENV = "PPM_DAGSTER_EVENTS"

#: ``PYTHONWARNINGS`` entries of the child (``action:message:category:module``; message and module are
#: regular expressions matched at the start): each names the dependency it silences
CHILD_WARNING_FILTERS = (
    # DuckDB's deprecation of fetch_arrow_table(), called inside ibis's DuckDB backend (Feast's offline store)
    "ignore::DeprecationWarning:ibis.backends.duckdb",
    # Dagster's notices about its own CLI commands and the yaml-defined log handler above
    "ignore:Function `asset_materialize_command` is superseded",
    "ignore:Function `job_execute_command` is superseded",
    "ignore:Handling yaml-defined logging configuration",
)

#: Dagster event types the handler records
_EVENT_TYPES = {"STEP_START", "STEP_SUCCESS", "STEP_FAILURE", "ASSET_MATERIALIZATION", "ASSET_CHECK_EVALUATION",
                "PIPELINE_START", "PIPELINE_SUCCESS", "PIPELINE_FAILURE", "PIPELINE_CANCELED"}


#: the settings ppm-platform needs in ``dagster.yaml``, merged under what the file already holds (a user's own
#: values win). The event handler records only when :data:`EVENTS_ENV` is set (a ``ppm`` run), so UI runs on the
#: same instance write nothing.
INSTANCE_SETTINGS = {
    "telemetry": {"enabled": False},
    "nux": {"enabled": False},
    "python_logs": {"python_log_level": "INFO", "dagster_handler_config": {"handlers": {"ppm_events": {
        "()": "ppm_platform.cli.orchestration.DagsterEventHandler", "level": "DEBUG"}}}},
    # one slot per concurrency pool (the heavy steps' pools: dagster_project/policies.py), at run granularity:
    # the run queue of `dagster dev` starts a run only when each pool its steps use has a free slot; steps never
    # wait (with op granularity a run killed mid-step keeps its slot and the next run's step waits forever)
    "concurrency": {"pools": {"default_limit": 1, "granularity": "run"}},
}


def _merge_missing(into: dict, defaults: dict) -> dict:
    """``into`` with every key of ``defaults`` it lacks (recursively into nested dicts); its own values win."""
    for k, v in defaults.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge_missing(into[k], v)
        elif k not in into:
            into[k] = v
    return into


def write_dagster_yaml(home: Path, extra: dict | None = None) -> Path:
    """Create ``home`` if needed and write ``home/dagster.yaml`` with :data:`INSTANCE_SETTINGS` (and ``extra``,
    e.g. a run coordinator for a webserver without daemon) under the keys the file already has. The one writer
    of the instance config: ``ppm`` runs, ``make ui`` (``python -m dagster_project.instance``), the screenshot
    script and the UI tests. Run and event storage stay Dagster's default (SQLite under ``home``).

    Returns:
        the path of ``dagster.yaml``.

    Raises:
        yaml.YAMLError: an existing ``dagster.yaml`` is not valid YAML.
        ValueError: an existing ``dagster.yaml`` is not a mapping (names the file).
    """
    import yaml

    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    path = home / "dagster.yaml"
    current = yaml.safe_load(path.read_text()) if path.exists() else None
    current = {} if current is None else current
    if not isinstance(current, dict):
        raise ValueError(f"{path}: expected a YAML mapping, got {type(current).__name__}")
    text = yaml.safe_dump(_merge_missing(current, copy.deepcopy({**INSTANCE_SETTINGS, **(extra or {})})),
                          sort_keys=False)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


def _scalar_metadata(metadata) -> dict:
    """Dagster metadata values -> JSON scalars: numbers, short text and booleans as they are; a JSON list as
    its length; everything else (markdown, paths, tables) dropped."""
    out = {}
    for k, v in (metadata or {}).items():
        value = getattr(v, "value", v)
        if isinstance(value, bool) or isinstance(value, (int, float)) or (isinstance(value, str) and len(value) <= 80):
            out[k] = value
        elif isinstance(value, list):
            out[k] = len(value)
    return out


def event_from_record(record: logging.LogRecord) -> dict | None:
    """The compact JSON form of a Dagster log record, or None for one this module does not follow.

    Read by attribute from the record's ``dagster_meta`` (Dagster's ``DagsterLogRecordMetadata``: its
    ``dagster_event`` with ``event_type_value``, ``step_key`` and ``event_specific_data``), so this module
    needs no Dagster import. Records without an event are kept when WARNING or above (a stage's warning).

    Returns:
        ``{"ts": unix seconds, "type": event type, "step": step key, ...}`` with, by type: ``duration_s``
        (STEP_SUCCESS), ``error`` (STEP_FAILURE, PIPELINE_FAILURE), ``asset`` + ``metadata`` (scalars only,
        ASSET_MATERIALIZATION), ``asset`` + ``check`` + ``passed`` (ASSET_CHECK_EVALUATION), ``message`` (LOG).
    """
    meta = getattr(record, "dagster_meta", None) or {}
    event = meta.get("dagster_event")
    base = {"ts": round(record.created, 3), "step": meta.get("step_key")}
    if event is None:
        if record.levelno < logging.WARNING:
            return None
        return {**base, "type": "LOG", "level": record.levelname, "message": str(meta.get("orig_message") or "")}
    kind = getattr(event, "event_type_value", None)
    if kind not in _EVENT_TYPES:
        return None
    out = {**base, "type": kind, "step": getattr(event, "step_key", None) or base["step"]}
    data = getattr(event, "event_specific_data", None)
    if kind == "STEP_SUCCESS":
        out["duration_s"] = round(getattr(data, "duration_ms", 0.0) / 1e3, 3)
    elif kind in ("STEP_FAILURE", "PIPELINE_FAILURE"):
        err = getattr(data, "error", None)
        first = (getattr(err, "message", "") or event.message or "").strip().splitlines()
        out["error"] = (f"{err.cls_name}: " if getattr(err, "cls_name", None) else "") + (first[0] if first else "")
    elif kind == "ASSET_MATERIALIZATION":
        mat = getattr(data, "materialization", None)
        out["asset"] = "/".join(mat.asset_key.path)
        out["metadata"] = _scalar_metadata(mat.metadata)
        if getattr(mat, "partition", None):
            out["partition"] = mat.partition
    elif kind == "ASSET_CHECK_EVALUATION":
        out["asset"] = "/".join(data.asset_key.path)
        out["check"], out["passed"] = data.check_name, bool(data.passed)
    return out


class DagsterEventHandler(logging.Handler):
    """A ``logging`` handler Dagster builds from ``dagster.yaml`` in every run (see the module docstring):
    appends :func:`event_from_record` of each record as one JSON line to ``$PPM_DAGSTER_EVENTS``, one
    ``write`` per line on an ``O_APPEND`` descriptor (lines of concurrent step processes do not interleave).
    Without the variable (a run started from the UI) it does nothing."""

    def __init__(self, level: int = logging.DEBUG):
        super().__init__(level)
        path = os.environ.get(EVENTS_ENV)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if path else None

    def emit(self, record: logging.LogRecord) -> None:
        if self._fd is None:
            return
        try:
            ev = event_from_record(record)
            if ev is not None:
                os.write(self._fd, (json.dumps(ev, default=str) + "\n").encode())
        except Exception:  # noqa: BLE001 -- a progress line must never fail the run
            self.handleError(record)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        super().close()


def child_env(settings: Settings, events_path: Path | None = None) -> dict[str, str]:
    """The environment of the Dagster child: this process's, plus ``DAGSTER_HOME`` (default
    ``<artifacts>/dagster_home``, created, with :func:`write_dagster_yaml`), offline Hugging Face, the Spark
    driver on loopback with this interpreter, :data:`CHILD_WARNING_FILTERS`, ``$PPM_DAGSTER_EVENTS`` =
    ``events_path`` when given, and the ``PPM_*`` settings the child rebuilds :class:`Settings` from."""
    env = dict(os.environ)
    env.setdefault("DAGSTER_HOME", str(settings.artifacts_dir / "dagster_home"))
    write_dagster_yaml(Path(env["DAGSTER_HOME"]))
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("PYSPARK_PYTHON", sys.executable)
    env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    env["PYTHONWARNINGS"] = ",".join(filter(None, [env.get("PYTHONWARNINGS"), *CHILD_WARNING_FILTERS]))
    if events_path is not None:
        env[EVENTS_ENV] = str(events_path)
    env["PPM_ARTIFACTS_DIR"] = str(settings.artifacts_dir)
    env["PPM_DATA_DIR"] = str(settings.data_dir)
    env["PPM_PROFILE"] = settings.profile
    return env


def dagster_command(select: str = "*", partition_range: str | None = None) -> list[str]:
    """The child's command line. ``select="*"`` runs the ``ppm_main`` job (every unpartitioned asset: one run
    cannot mix the daily partitions with unpartitioned assets); otherwise ``dagster asset materialize
    --select`` (``partition_range`` = ``"<first day>...<last day>"`` backfills those days in one run)."""
    base = [sys.executable, "-m", "dagster"]
    if select == "*":
        return [*base, "job", "execute", "-m", "dagster_project.definitions", "-j", "ppm_main"]
    cmd = [*base, "asset", "materialize", "-m", "dagster_project.definitions", "--select", select]
    if partition_range:
        cmd += ["--partition-range", partition_range]
    return cmd


# ---- what the terminal shows ------------------------------------------------------------------------------
#: (metadata key, format) in priority order: the first key an asset reports is its one headline figure
HEADLINES: tuple[tuple[str, str], ...] = (
    ("test_click_auc", "test AUC click {:.4f}"),
    ("valid_click_auc", "valid AUC click {:.4f}"),
    ("recall@10_after", "held-out recall@10 {:.3f}"),
    ("map_finetuned", "held-out mAP {:.3f}"),
    ("max_abs_diff", "max |torch - onnxruntime| {:.1e}"),
    ("wall_ms", "ranked in {:.1f} ms"),
    ("rows_out", "{:,} rows"),
    ("rows", "{:,} rows"),
    ("items", "{:,} items"),
    ("feature_views", "{} feature views"),
    ("views", "{} feature views materialized"),
    ("days", "{} days"),
    ("skipped", "skipped: {}"),
)


def headline(metadata: dict) -> str:
    """The one figure that matters of an asset's metadata (:data:`HEADLINES`), or ``""``."""
    for key, fmt in HEADLINES:
        v = metadata.get(key)
        if v is None or isinstance(v, bool):
            continue
        try:
            text = fmt.format(v)
        except (ValueError, TypeError):
            continue
        if key == "rows_out" and metadata.get("rows_quarantined"):
            text += f" ({metadata['rows_quarantined']:,} quarantined)"
        if key == "wall_ms" and metadata.get("scored"):
            text = f"{metadata['scored']} candidates " + text
        return text
    return ""


@dataclass
class RunProgress:
    """Turns the event stream of one run into terminal lines (:meth:`feed`) and keeps its tallies.

    Lines: ``<asset> <seconds> s  <headline>`` per asset when its step succeeds, ``FAILED`` lines for a failed
    step or check. ``live`` (a terminal): :meth:`status` is a one-line view of the running step, redrawn in
    place. ``echo`` writes one line (default: print).
    """

    echo: Callable[[str], None] = print
    live: bool = False
    started: dict[str, float] = field(default_factory=dict)
    pending: dict[str, list[dict]] = field(default_factory=dict)
    assets: list[str] = field(default_factory=list)
    checks_passed: int = 0
    checks_failed: list[str] = field(default_factory=list)
    failed_steps: dict[str, str] = field(default_factory=dict)
    run_error: str | None = None
    _status_shown: bool = False

    def _line(self, text: str) -> None:
        if self._status_shown:
            sys.stdout.write("\r\033[K")
            self._status_shown = False
        self.echo(text)

    def feed(self, ev: dict) -> None:
        """Consume one event (:func:`event_from_record`'s form)."""
        kind, step = ev.get("type"), ev.get("step")
        if kind == "STEP_START" and step:
            self.started[step] = ev.get("ts", time.time())
        elif kind == "ASSET_MATERIALIZATION" and step:
            self.pending.setdefault(step, []).append(ev)
        elif kind == "STEP_SUCCESS" and step:
            self.started.pop(step, None)
            for m in self.pending.pop(step, []):
                name = m["asset"] + (f"[{m['partition']}]" if m.get("partition") else "")
                self.assets.append(name)
                self._line(f"  {name:<24} {ev.get('duration_s', 0.0):>7.1f} s  {headline(m.get('metadata', {}))}"
                           .rstrip())
        elif kind == "STEP_FAILURE" and step:
            self.started.pop(step, None)
            self.failed_steps[step] = ev.get("error", "")
            self._line(f"  FAILED {step}: {ev.get('error', '')}"[:300])
        elif kind == "ASSET_CHECK_EVALUATION":
            if ev.get("passed"):
                self.checks_passed += 1
            else:
                self.checks_failed.append(ev.get("check", "?"))
                self._line(f"  check FAILED: {ev.get('check')} on {ev.get('asset')}")
        elif kind == "PIPELINE_FAILURE":
            self.run_error = ev.get("error") or "run failed"
        elif kind == "LOG" and ev.get("level") in ("ERROR", "CRITICAL"):
            self._line(f"  {ev['level'].lower()}: {ev.get('step') or 'run'}: {ev.get('message', '')}"[:300])

    def status(self, now: float | None = None) -> None:
        """Redraw the live line (terminal only): the running step(s) and their seconds so far."""
        if not self.live:
            return
        now = time.time() if now is None else now
        running = ", ".join(f"{s} {now - t:.0f} s" for s, t in self.started.items()) or "starting"
        sys.stdout.write(f"\r\033[K  ... {running} ({len(self.assets)} assets done)"[:200])
        sys.stdout.flush()
        self._status_shown = True

    def clear(self) -> None:
        """Remove the live line."""
        if self._status_shown:
            sys.stdout.write("\r\033[K")
            sys.stdout.flush()
            self._status_shown = False

    def failure(self) -> str:
        """One phrase naming what failed (steps, checks or the run's error), for the CLI's error line."""
        if self.failed_steps:
            step, err = next(iter(self.failed_steps.items()))
            return f"step {step} failed: {err}"
        if self.checks_failed:
            return f"check(s) failed: {', '.join(self.checks_failed)}"
        return self.run_error or "the run failed"


def read_events(path: Path, offset: int = 0) -> tuple[list[dict], int]:
    """The complete JSON lines of ``path`` from byte ``offset``; returns ``(events, new offset)`` (a line still
    being written is left for the next call)."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n") + 1
    events = []
    for raw in data[:end].splitlines():
        try:
            events.append(json.loads(raw))
        except ValueError:
            continue
    return events, offset + end


@dataclass
class RunOutcome:
    """One child run: its exit code, the full log file, the events file, and its :class:`RunProgress`."""

    rc: int
    log_path: Path
    events_path: Path
    progress: RunProgress


def materialize(settings: Settings, select: str = "*", partition_range: str | None = None, *,
                label: str = "run", echo: Callable[[str], None] = print, live: bool | None = None,
                stream_log: bool = False) -> RunOutcome:
    """Materialize ``select`` (:func:`dagster_command`) in a Dagster child process and follow it.

    Args:
        label: names the log file: ``<artifacts>/logs/<label>-<UTC time>.log`` (and ``.events.jsonl``).
        echo: where the per-asset lines go.
        live: redraw a one-line view of the running step (default: stdout is a terminal).
        stream_log: also copy the child's full output to this process's stdout (Dagster's console log with
            every DEBUG event, as ``dagster asset materialize`` prints it) instead of the per-asset lines.

    Returns:
        the :class:`RunOutcome` (``rc`` 0 = success).
    """
    logs = settings.artifacts_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    log_path, events_path = logs / f"{label}-{stamp}.log", logs / f"{label}-{stamp}.events.jsonl"
    events_path.write_bytes(b"")
    progress = RunProgress(echo=echo, live=(sys.stdout.isatty() if live is None else live) and not stream_log)
    cmd = dagster_command(select, partition_range)
    if stream_log:  # the console logger at DEBUG: every event, as Dagster's own CLI shows them
        cfg = logs / f"{label}-{stamp}.run_config.yaml"
        cfg.write_text("loggers:\n  console:\n    config:\n      log_level: DEBUG\n")
        cmd += ["-c", str(cfg)]
    env = child_env(settings, events_path)
    offset = 0
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE if stream_log else log, stderr=subprocess.STDOUT)
        if stream_log:
            for line in proc.stdout:
                log.write(line)
                sys.stdout.buffer.write(line)
                sys.stdout.flush()
        try:
            while True:
                rc = proc.poll()
                events, offset = read_events(events_path, offset)
                if not stream_log:
                    for ev in events:
                        progress.feed(ev)
                else:
                    _feed_quietly(progress, events)
                if rc is not None:
                    break
                progress.status()
                time.sleep(0.25)
        except KeyboardInterrupt:
            proc.terminate()
            proc.wait(timeout=30)
            raise
        finally:
            progress.clear()
    return RunOutcome(rc, log_path, events_path, progress)


def _feed_quietly(progress: RunProgress, events: Iterable[dict]) -> None:
    """Tally the events without printing (``stream_log``: the full log is on the terminal already)."""
    echo, progress.echo = progress.echo, (lambda _line: None)
    try:
        for ev in events:
            progress.feed(ev)
    finally:
        progress.echo = echo
