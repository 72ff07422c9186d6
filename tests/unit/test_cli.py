"""The ``ppm`` CLI: help text, exit codes, one-line errors (tracebacks only with --verbose), `ppm doctor`
checks on artifact folders the tests build, and `ppm run --profile` reaching the Dagster child process."""

import json
import socket
import sqlite3
import stat
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from ppm_platform import cli
from ppm_platform.cli import doctor, errors, orchestration
from ppm_platform.cli import rank as ranking


@pytest.fixture
def env(tmp_path, monkeypatch):
    data = tmp_path / "catalog"
    data.mkdir()
    monkeypatch.setenv("PPM_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    monkeypatch.setenv("PPM_DATASET", "canonical")
    monkeypatch.setenv("PPM_DATA_DIR", str(data))
    monkeypatch.delenv("PPM_PROFILE", raising=False)
    # serving.port: a free port, so `ppm rank` never finds a server another process runs on the default one
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"serving": {"port": _free_port(), "max_candidates": 4}}))
    monkeypatch.setenv("PPM_CONFIG", str(cfg))
    return tmp_path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("args", [[], ["demo"], ["run"], ["backfill"], ["rank"], ["doctor"], ["summary"]])
def test_help_everywhere_lists_exit_codes(args):
    res = CliRunner().invoke(cli.main, [*args, "--help"])
    assert res.exit_code == 0, res.output
    assert "Exit codes:" in res.output and "4  the Dagster materialization failed" in res.output


def test_run_help_documents_profile_and_select():
    out = CliRunner().invoke(cli.main, ["run", "--help"]).output
    assert "--profile [local|cluster]" in out and "--select" in out


def test_missing_artifacts_is_one_line_with_exit_3_and_traceback_only_when_verbose(env):
    res = CliRunner().invoke(cli.main, ["rank", "1", "2", "3"])
    assert res.exit_code == errors.EXIT_MISSING == 3
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: FileNotFoundError:") and "model.json not found" in lines[0]
    assert "Traceback" not in res.output
    verbose = CliRunner().invoke(cli.main, ["--verbose", "rank", "1", "2", "3"])
    assert verbose.exit_code == 3 and "Traceback (most recent call last)" in verbose.output


def test_bad_setting_is_exit_5(env, monkeypatch):
    monkeypatch.setenv("PPM_MAX_ITEMS", "many")
    res = CliRunner().invoke(cli.main, ["summary"])
    assert res.exit_code == errors.EXIT_BAD_INPUT == 5 and "max_items" in res.output


def test_summary_without_run_is_exit_3(env):
    res = CliRunner().invoke(cli.main, ["summary"])
    assert res.exit_code == 3 and "run `ppm demo` first" in res.output


def test_usage_error_is_exit_2():
    assert CliRunner().invoke(cli.main, ["rank", "1"]).exit_code == 2
    assert CliRunner().invoke(cli.main, ["run", "--profile", "moon"]).exit_code == 2


#: a stand-in for the Dagster child: noise on stdout/stderr (the log file's), the events of a run that
#: materializes ``items`` (a multi-asset step with ``users``) and ``urm_model``, one passed and one failed check;
#: exit 1 when the selection is ``fail_me``
FAKE_CHILD = r"""
import json, os, sys
sel = sys.argv[1]
print("26/12/02 04:06:40 WARN NativeCodeLoader: noise", file=sys.stderr)
print("Materializing 1 feature views ...")
evs = [{"type": "PIPELINE_START", "step": None},
       {"type": "STEP_START", "step": "canonical_tables"},
       {"type": "ASSET_MATERIALIZATION", "step": "canonical_tables", "asset": "items",
        "metadata": {"rows_in": 1682, "rows_out": 1680, "rows_quarantined": 2}},
       {"type": "ASSET_MATERIALIZATION", "step": "canonical_tables", "asset": "users", "metadata": {"rows_out": 943}},
       {"type": "STEP_SUCCESS", "step": "canonical_tables", "duration_s": 3.94},
       {"type": "ASSET_CHECK_EVALUATION", "step": "items_q", "asset": "items", "check": "items_q", "passed": True},
       {"type": "STEP_START", "step": "urm_model"}]
if sel == "fail_me":
    evs += [{"type": "STEP_FAILURE", "step": "urm_model", "error": "ValueError: no rows"},
            {"type": "PIPELINE_FAILURE", "step": None, "error": "steps failed"}]
else:
    evs += [{"type": "ASSET_MATERIALIZATION", "step": "urm_model", "asset": "urm_model",
             "metadata": {"rows": 80000, "test_click_auc": 0.74123, "train_seconds": 61.0}},
            {"type": "STEP_SUCCESS", "step": "urm_model", "duration_s": 65.25},
            {"type": "ASSET_CHECK_EVALUATION", "step": "urm_auc", "asset": "urm_model", "check": "urm_auc",
             "passed": False},
            {"type": "PIPELINE_SUCCESS", "step": None}]
with open(os.environ["PPM_DAGSTER_EVENTS"], "a") as f:
    for e in evs:
        f.write(json.dumps({"ts": 1.0, **e}) + "\n")
sys.exit(1 if sel == "fail_me" else 0)
"""


@pytest.fixture
def fake_dagster(monkeypatch, tmp_path):
    """Replace the Dagster child by FAKE_CHILD; records (select, partition_range) of each call."""
    import sys

    script = tmp_path / "fake_dagster.py"
    script.write_text(FAKE_CHILD)
    calls = []

    def command(select="*", partition_range=None):
        calls.append((select, partition_range))
        return [sys.executable, str(script), select]

    monkeypatch.setattr(orchestration, "dagster_command", command)
    return calls


def test_run_prints_one_line_per_asset_and_the_log_file_gets_the_rest(env, fake_dagster):
    res = CliRunner().invoke(cli.main, ["run", "--profile", "cluster", "--select", "urm_model+"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0] == "ppm run: materializing 'urm_model+' through Dagster (one line per asset as it finishes)"
    assert lines[1].split() == ["items", "3.9", "s", "1,680", "rows", "(2", "quarantined)"]
    assert lines[2].split() == ["users", "3.9", "s", "943", "rows"]
    assert lines[3].split() == ["urm_model", "65.2", "s", "test", "AUC", "click", "0.7412"]
    assert lines[4].split() == ["check", "FAILED:", "urm_auc", "on", "urm_model"]
    assert lines[5].startswith("3 assets in ") and "1 checks passed, 1 failed; full Dagster/Spark log: " in lines[5]
    assert len(lines) == 6 and "NativeCodeLoader" not in res.output and "Materializing" not in res.output
    log = next((env / "artifacts" / "logs").glob("run-*.log"))
    assert str(log) in lines[5] and "NativeCodeLoader: noise" in log.read_text()
    assert fake_dagster == [("urm_model+", None)]


def test_failed_run_names_the_step_and_the_log_with_exit_4(env, fake_dagster):
    bad = CliRunner().invoke(cli.main, ["run", "--select", "fail_me"])
    assert bad.exit_code == errors.EXIT_RUN_FAILED == 4
    assert "FAILED urm_model: ValueError: no rows" in bad.output
    last = bad.output.strip().splitlines()[-1]
    assert last.startswith("Error: 'fail_me': step urm_model failed: ValueError: no rows (dagster exit 1); full log: ")


def test_child_env_and_dagster_yaml(env, monkeypatch, tmp_path):
    from ppm_platform.config import Settings

    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("PYTHONWARNINGS", "error::UserWarning")
    s = Settings.from_env(profile="cluster")
    child = orchestration.child_env(s, tmp_path / "ev.jsonl")
    assert child["PPM_PROFILE"] == "cluster" and child["PPM_ARTIFACTS_DIR"] == str(env / "artifacts")
    assert child["DAGSTER_HOME"] == str(env / "artifacts" / "dagster_home")
    assert child[orchestration.EVENTS_ENV] == str(tmp_path / "ev.jsonl")
    filters = child["PYTHONWARNINGS"].split(",")
    assert filters[0] == "error::UserWarning" and "ignore::DeprecationWarning:ibis.backends.duckdb" in filters
    import yaml

    cfg = yaml.safe_load((env / "artifacts" / "dagster_home" / "dagster.yaml").read_text())
    assert cfg["telemetry"] == {"enabled": False} and cfg["nux"] == {"enabled": False}
    assert cfg["python_logs"]["python_log_level"] == "INFO"
    assert cfg["python_logs"]["dagster_handler_config"]["handlers"]["ppm_events"]["()"] == \
        "ppm_platform.cli.orchestration.DagsterEventHandler"
    own = tmp_path / "home"
    own.mkdir()
    (own / "dagster.yaml").write_text("telemetry:\n  enabled: true\n")
    cfg = yaml.safe_load(orchestration.write_dagster_yaml(own).read_text())  # a user's own keys are kept
    assert cfg["telemetry"] == {"enabled": True} and "ppm_events" in str(cfg["python_logs"])


def test_materialize_all_runs_the_main_job_and_ranges_go_to_asset_materialize():
    main_job = orchestration.dagster_command()
    assert main_job[-4:] == ["-m", "dagster_project.definitions", "-j", "ppm_main"] and "job" in main_job
    rng = orchestration.dagster_command(orchestration.DAILY_ASSETS, partition_range="1997-09-20...1997-09-21")
    assert rng[-4:] == ["--select", orchestration.DAILY_ASSETS, "--partition-range", "1997-09-20...1997-09-21"]
    assert "dagster" in rng and "asset" in rng and "materialize" in rng


class _Key:
    def __init__(self, *path):
        self.path = list(path)


class _Value:  # a Dagster MetadataValue: its .value
    def __init__(self, value):
        self.value = value


class _Event:
    def __init__(self, kind, step, data=None, message=""):
        self.event_type_value, self.step_key, self.event_specific_data, self.message = kind, step, data, message


def _record(event=None, level=20, message="msg"):
    import logging

    r = logging.LogRecord("dagster", level, __file__, 1, message, (), None)
    r.dagster_meta = {"dagster_event": event, "step_key": event.step_key if event else "s", "orig_message": message}
    return r


def test_event_from_record_reads_dagster_events_by_attribute():
    from types import SimpleNamespace as NS

    mat = NS(materialization=NS(asset_key=_Key("urm_model"), partition=None,
                                metadata={"test_click_auc": 0.74, "rows": _Value(10), "plot": _Value("x" * 200),
                                          "epochs": _Value([{"a": 1}, {"a": 2}]), "path": _Value(object())}))
    ev = orchestration.event_from_record(_record(_Event("ASSET_MATERIALIZATION", "urm_model", mat)))
    assert ev["type"] == "ASSET_MATERIALIZATION" and ev["asset"] == "urm_model" and ev["step"] == "urm_model"
    assert ev["metadata"] == {"test_click_auc": 0.74, "rows": 10, "epochs": 2}
    ok = orchestration.event_from_record(_record(_Event("STEP_SUCCESS", "urm_model", NS(duration_ms=1234.5))))
    assert ok["duration_s"] == 1.234
    err = NS(error=NS(cls_name="ValueError", message="no rows\nmore"))
    assert orchestration.event_from_record(_record(_Event("STEP_FAILURE", "x", err)))["error"] == "ValueError: no rows"
    chk = NS(asset_key=_Key("items"), check_name="q", passed=False)
    assert orchestration.event_from_record(_record(_Event("ASSET_CHECK_EVALUATION", "c", chk)))["passed"] is False
    assert orchestration.event_from_record(_record(_Event("STEP_OUTPUT", "x"))) is None  # not followed
    assert orchestration.event_from_record(_record(level=20)) is None  # an INFO message: the log file's
    assert orchestration.event_from_record(_record(level=40, message="boom"))["message"] == "boom"


def test_event_handler_from_dict_config_writes_json_lines_only_with_the_variable(monkeypatch, tmp_path):
    import json
    import logging
    import logging.config

    from types import SimpleNamespace as NS

    path = tmp_path / "ev.jsonl"
    monkeypatch.setenv(orchestration.EVENTS_ENV, str(path))
    logging.config.dictConfig({"version": 1, "disable_existing_loggers": False,
                               "handlers": {"ppm_events": {"()": "ppm_platform.cli.orchestration.DagsterEventHandler",
                                                           "level": "DEBUG"}},
                               "loggers": {"ppm_test_events": {"handlers": ["ppm_events"]}}})
    handler = logging.getLogger("ppm_test_events").handlers[0]
    handler.handle(_record(_Event("STEP_SUCCESS", "a", NS(duration_ms=10.0))))
    handler.close()
    logging.getLogger("ppm_test_events").handlers.clear()
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == ["a"]
    monkeypatch.delenv(orchestration.EVENTS_ENV)
    quiet = orchestration.DagsterEventHandler()  # a run started from the UI: nothing written
    quiet.handle(_record(_Event("STEP_SUCCESS", "b", NS(duration_ms=10.0))))
    assert len(path.read_text().splitlines()) == 1


def test_read_events_leaves_a_partial_line_for_the_next_call(tmp_path):
    p = tmp_path / "ev.jsonl"
    p.write_bytes(b'{"type": "STEP_START", "step": "a"}\n{"type": "STEP_SUC')
    evs, off = orchestration.read_events(p)
    assert [e["type"] for e in evs] == ["STEP_START"] and off == len(b'{"type": "STEP_START", "step": "a"}\n')
    with p.open("ab") as f:
        f.write(b'CESS", "step": "a"}\n')
    evs, off2 = orchestration.read_events(p, off)
    assert [e["type"] for e in evs] == ["STEP_SUCCESS"] and off2 == p.stat().st_size


@pytest.mark.parametrize("metadata, text", [
    ({"rows": 80000, "test_click_auc": 0.74123}, "test AUC click 0.7412"),
    ({"valid_click_auc": 0.7, "train_rows": 5}, "valid AUC click 0.7000"),
    ({"max_abs_diff": 3.2e-7, "parity_rows": 256}, "max |torch - onnxruntime| 3.2e-07"),
    ({"wall_ms": 9.123, "scored": 100}, "100 candidates ranked in 9.1 ms"),
    ({"items": 1682, "seconds": 50}, "1,682 items"),
    ({"feature_views": 9, "seconds": 1.0}, "9 feature views"),
    ({"skipped": "too few queries"}, "skipped: too few queries"),
    ({"seconds": 3.0}, ""),
])
def test_headline_is_the_figure_that_matters(metadata, text):
    assert orchestration.headline(metadata) == text


def test_java_version_parsing(tmp_path):
    for text, major in (('openjdk version "17.0.15" 2025-04-15', 17), ('java version "1.8.0_402"', 8),
                        ('openjdk version "21" 2023-09-19', 21)):
        fake = tmp_path / "java"
        fake.write_text(f"#!/bin/sh\necho '{text}' >&2\necho 'OpenJDK Runtime Environment' >&2\n")
        fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
        assert doctor.java_major_version(str(fake)) == (major, text)


def test_doctor_on_empty_artifacts_fails_with_fixes_and_exit_3(env):
    res = CliRunner().invoke(cli.main, ["doctor", "--no-spark"])
    assert res.exit_code == 3, res.output
    out = res.output
    for name in ("dataset", "feast_registry", "online_store", "models"):
        line = next(ln for ln in out.splitlines() if f"] {name}" in ln)
        assert "FAIL" in line, line
    assert "missing table(s) ['items', 'users', 'interactions']" in out
    assert "fix: run `ppm run --select online_store`" in out
    assert "spark" not in [ln.split("]")[1].split()[0] for ln in out.splitlines() if ln.startswith("[")]
    assert "checks failed: dataset, feast_registry, online_store, models" in out


def test_doctor_checks_pass_on_complete_folders(env):
    from ppm_platform.config import Settings

    s = Settings.from_env()
    for t in ("items", "users", "interactions"):
        (s.data_dir / f"{t}.csv").write_text("x\n1\n")
    assert doctor._check_dataset(s) == (True, f"canonical tables in {s.data_dir}: items.csv, users.csv, interactions.csv")
    s.feast_dir.mkdir(parents=True)
    con = sqlite3.connect(s.feast_dir / "online_store.db")
    con.execute("CREATE TABLE ppm_platform_user_profile (k TEXT)")
    con.executemany("INSERT INTO ppm_platform_user_profile VALUES (?)", [("a",), ("b",), ("c",)])
    con.commit()
    con.close()
    assert doctor._check_online_store(s) == (True, f"{s.feast_dir / 'online_store.db'}: 1 tables, 3 rows")
    ok, detail = doctor._check_models(s)
    assert not ok and detail.count("missing") == 1 and detail.count("model.json") == 3
    for m, files in (("ppm", ["model.json", "weights.safetensors"]),
                     ("base", ["model.json", "weights.safetensors", "model.onnx"]),
                     ("urm", ["model.json", "weights.safetensors", "model.onnx"])):
        (s.models_dir / m).mkdir(parents=True, exist_ok=True)
        for f in files:
            (s.models_dir / m / f).write_bytes(b"x")
    assert doctor._check_models(s)[0]


def test_empty_online_table_fails(env):
    from ppm_platform.config import Settings

    s = Settings.from_env()
    s.feast_dir.mkdir(parents=True)
    con = sqlite3.connect(s.feast_dir / "online_store.db")
    con.execute("CREATE TABLE ppm_platform_item_profile (k TEXT)")
    con.close()
    ok, detail = doctor._check_online_store(s)
    assert not ok and "ppm_platform_item_profile" in detail


def test_backfill_checks_the_range_then_runs_one_partition_range(env, fake_dagster):
    bad = CliRunner().invoke(cli.main, ["backfill", "--from", "1997-10-02", "--to", "1997-10-01"])
    assert bad.exit_code == 2 and "is before --from" in bad.output
    outside = CliRunner().invoke(cli.main, ["backfill", "--from", "1990-01-01", "--to", "1997-10-01"])
    assert outside.exit_code == 2 and "outside the partitions [1997-09-20, 1998-04-23)" in outside.output
    ok = CliRunner().invoke(cli.main, ["backfill", "--from", "1997-09-20", "--to", "1997-10-01"])
    assert ok.exit_code == 0, ok.output
    assert fake_dagster == [(orchestration.DAILY_ASSETS, "1997-09-20...1997-10-01")]


# ---- ppm rank ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, fragment", [
    (["1", "--", "-5"], "Invalid value for 'ITEM_IDS...': -5 is out of range"),
    (["1", str(2**63)], f"Invalid value for 'ITEM_IDS...': {2**63} is out of range"),
    (["-1", "2"], "No such option '-1'"),
    (["--", "-1", "2"], "Invalid value for 'USER_ID': -1 is out of range"),
    (["x", "2"], "Invalid value for 'USER_ID': 'x' is not an integer id"),
    (["1", "2.5"], "Invalid value for 'ITEM_IDS...': '2.5' is not an integer id"),
    (["1", "2", "3", "4", "5", "6"], "Invalid value for ITEM_IDS: 5 candidates, at most 4 allowed (serving.max_candidates)"),
])
def test_rank_checks_ids_as_post_rank_does_with_exit_2(env, args, fragment):
    res = CliRunner().invoke(cli.main, ["rank", *args])
    assert res.exit_code == errors.EXIT_USAGE == 2, res.output
    assert fragment in " ".join(res.output.split())


def test_rank_accepts_the_largest_int64_id():
    assert ranking.EntityIdType().convert(str(2**63 - 1), None, None) == 2**63 - 1


class _FakeServe(BaseHTTPRequestHandler):
    """GET /health and POST /rank as `ppm serve` answers them (``answer``: the /rank status and body)."""

    model = "urm"
    answer = (200, {"user_id": 7, "model": "urm", "model_version": "abc", "ppm_version": "p1", "user_known": False,
                    "unknown_item_ids": [99], "lookup_ms": 3.21, "model_ms": 0.5,
                    "scores": [{"item_id": 2, "click": 0.6, "order": 0.1, "known": True},
                               {"item_id": 99, "click": 0.4, "order": 0.2, "known": False}]})
    requests: list = []

    def _send(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802 -- http.server's name
        self._send(200, {"status": "ok", "model": type(self).model})

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append((self.headers["Content-Type"], body))
        self._send(*type(self).answer)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_serve(env, monkeypatch):
    """A fake `ppm serve` on the env's serving.port; `ppm rank` must not build a Ranker while it answers."""
    from ppm_platform.config import Settings

    monkeypatch.setattr(_FakeServe, "requests", [])
    server = ThreadingHTTPServer(("127.0.0.1", Settings.from_env().serving.port), _FakeServe)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(ranking, "rank_here", lambda *a: pytest.fail("scored in process while a server answers"))
    yield server
    server.shutdown()
    server.server_close()


def test_rank_through_a_running_server_prints_titles_user_known_and_warm_lookup(env, fake_serve):
    from ppm_platform.config import Settings
    from ppm_platform.io import write_parquet_atomic
    import pandas as pd

    s = Settings.from_env()
    write_parquet_atomic(pd.DataFrame({"item_id": [1, 2, 3], "title": ["One", "Two (1995)", "Three"]}),
                         s.tables_dir / "items.parquet")
    res = CliRunner().invoke(cli.main, ["rank", "7", "2", "99"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0] == (f"user 7: unknown: no online features, scored as a cold-start user; model urm (version abc); "
                        f"scored by ppm serve at http://127.0.0.1:{s.serving.port}")
    assert lines[2].split() == ["1", "2", "0.6000", "0.1000", "yes", "Two", "(1995)"]
    assert lines[3].split() == ["2", "99", "0.4000", "0.2000", "no"]
    assert lines[4] == "lookup 3.2 ms (warm: the server's online-store connection is open); model 0.5 ms"
    assert lines[5] == "unknown items (no online features, scored as cold-start items): 99"
    assert lines[6].startswith("ranked in ") and len(lines) == 7
    assert _FakeServe.requests == [("application/json", {"user_id": 7, "item_ids": [2, 99]})]


@pytest.mark.parametrize("status, body, code", [
    (422, {"detail": "item_ids: too many"}, 2),
    (503, {"detail": "URM was trained with ppm_version a", "status": "version_mismatch"}, 5),
    (503, {"detail": "online store unavailable: TimeoutError", "status": "store_unavailable"}, 1),
    (503, {"detail": "model not loaded: FileNotFoundError"}, 3),
])
def test_rank_maps_server_errors_to_exit_codes(env, fake_serve, monkeypatch, status, body, code):
    monkeypatch.setattr(_FakeServe, "answer", (status, body))
    res = CliRunner().invoke(cli.main, ["rank", "7", "2"])
    assert res.exit_code == code, res.output
    assert f"ppm serve answered {status}: {body['detail']}" in res.output


def test_rank_scores_in_process_when_no_server_serves_the_model(env, fake_serve, monkeypatch):
    calls = []

    def here(settings, model, user_id, item_ids, why):
        calls.append(why)
        return ranking.Ranking(user_id, True, model, "v1", [(2, 0.5, 0.1, True)], 150.0, 1.0, f"this process ({why})",
                               "first lookup (cold): this process opened the online store", warm_lookup_ms=8.5)

    monkeypatch.setattr(ranking, "rank_here", here)
    monkeypatch.setattr(_FakeServe, "model", "base")
    res = CliRunner().invoke(cli.main, ["rank", "7", "2"])
    assert res.exit_code == 0, res.output
    port = fake_serve.server_address[1]
    assert calls == [f"ppm serve at http://127.0.0.1:{port} serves base, not urm"]
    assert ("lookup 150.0 ms (first lookup (cold): this process opened the online store), warm lookup 8.5 ms "
            "(the same lookup again); model 1.0 ms") in res.output
    assert CliRunner().invoke(cli.main, ["rank", "--local", "7", "2"]).exit_code == 0 and calls[-1] == "--local"
    assert CliRunner().invoke(cli.main, ["rank", "--model", "base", "7", "2"]).exit_code == 0 and len(calls) == 2


def test_rank_with_a_url_nobody_answers_is_exit_3(env):
    res = CliRunner().invoke(cli.main, ["rank", "--url", f"http://127.0.0.1:{_free_port()}", "7", "2"])
    assert res.exit_code == 3 and "no ppm serve answered at http://127.0.0.1:" in res.output


def test_live_view_redraws_one_line_and_clears_it_before_each_asset_line(capsys):
    lines = []
    p = orchestration.RunProgress(echo=lines.append, live=True)
    p.feed({"type": "STEP_START", "step": "urm_model", "ts": 100.0})
    p.status(now=112.4)
    assert capsys.readouterr().out == "\r\033[K  ... urm_model 12 s (0 assets done)"
    p.feed({"type": "ASSET_MATERIALIZATION", "step": "urm_model", "asset": "urm_model", "metadata": {"rows": 5}})
    p.feed({"type": "STEP_SUCCESS", "step": "urm_model", "duration_s": 12.5})
    assert capsys.readouterr().out == "\r\033[K" and lines == ["  urm_model                   12.5 s  5 rows"]
    quiet = orchestration.RunProgress(echo=lines.append, live=False)  # not a terminal: no live line at all
    quiet.status()
    assert capsys.readouterr().out == ""
