"""The ``ppm`` CLI: help text, exit codes, one-line errors (tracebacks only with --verbose), `ppm doctor`
checks on artifact folders the tests build, and `ppm run --profile` reaching the Dagster child process."""

import sqlite3
import stat

import pytest
from click.testing import CliRunner

from ppm_platform import cli
from ppm_platform.cli import commands, doctor, errors, orchestration


@pytest.fixture
def env(tmp_path, monkeypatch):
    data = tmp_path / "catalog"
    data.mkdir()
    monkeypatch.setenv("PPM_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    monkeypatch.setenv("PPM_DATASET", "canonical")
    monkeypatch.setenv("PPM_DATA_DIR", str(data))
    monkeypatch.delenv("PPM_CONFIG", raising=False)
    monkeypatch.delenv("PPM_PROFILE", raising=False)
    return tmp_path


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


def test_run_passes_profile_and_selection_to_dagster_and_maps_failure_to_4(env, monkeypatch):
    calls = []

    def fake_call(cmd, env, cwd):
        calls.append((cmd, env))
        return 1 if "fail_me" in cmd else 0

    monkeypatch.setattr(orchestration.subprocess, "call", fake_call)
    ok = CliRunner().invoke(cli.main, ["run", "--profile", "cluster", "--select", "urm_model+"])
    assert ok.exit_code == 0, ok.output
    cmd, child_env = calls[0]
    assert cmd[-2:] == ["--select", "urm_model+"] and "dagster_project.definitions" in cmd
    assert child_env["PPM_PROFILE"] == "cluster"
    assert child_env["PPM_ARTIFACTS_DIR"] == str(env / "artifacts")
    bad = CliRunner().invoke(cli.main, ["run", "--select", "fail_me"])
    assert bad.exit_code == errors.EXIT_RUN_FAILED == 4 and "materialization of 'fail_me' failed" in bad.output


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


def test_backfill_checks_the_range_then_runs_one_partition_range(env, monkeypatch):
    calls = []
    monkeypatch.setattr(commands, "materialize", lambda s, select, partition_range=None: calls.append((select, partition_range)) or 0)
    bad = CliRunner().invoke(cli.main, ["backfill", "--from", "1997-10-02", "--to", "1997-10-01"])
    assert bad.exit_code == 2 and "is before --from" in bad.output
    outside = CliRunner().invoke(cli.main, ["backfill", "--from", "1990-01-01", "--to", "1997-10-01"])
    assert outside.exit_code == 2 and "outside the partitions [1997-09-20, 1998-04-23)" in outside.output
    ok = CliRunner().invoke(cli.main, ["backfill", "--from", "1997-09-20", "--to", "1997-10-01"])
    assert ok.exit_code == 0, ok.output
    assert calls == [(orchestration.DAILY_ASSETS, "1997-09-20...1997-10-01")]


def test_materialize_all_runs_the_main_job_and_ranges_go_to_asset_materialize(monkeypatch, tmp_path):
    from ppm_platform.config import Settings

    cmds = []
    monkeypatch.setattr(orchestration.subprocess, "call", lambda cmd, **kw: cmds.append(cmd) or 0)
    s = Settings(artifacts_dir=tmp_path)
    orchestration.materialize(s)
    orchestration.materialize(s, orchestration.DAILY_ASSETS, partition_range="1997-09-20...1997-09-21")
    assert cmds[0][-4:] == ["-m", "dagster_project.definitions", "-j", "ppm_main"] and "job" in cmds[0]
    assert cmds[1][-4:] == ["--select", orchestration.DAILY_ASSETS, "--partition-range", "1997-09-20...1997-09-21"]
