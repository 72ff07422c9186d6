"""Spark for the feature jobs: the SparkSession (``local[*]`` by default, a standalone master in the
``cluster`` profile), the shared writers that turn a Spark DataFrame into the platform's parquet layouts (one
consolidated file, or a folder of day files), and the driver / worker helpers every job uses (partitions,
progress, worker logging)."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import threading
import time
import uuid
from datetime import date
from pathlib import Path

import pyarrow as pa

from ppm_platform.config import Settings
from ppm_platform.io import SPARK_DAY_COLUMN, consolidate_day_dirs, consolidate_parquet_dir

log = logging.getLogger("ppm_platform.features")

#: the driver JVM's log4j 2 configuration: WARN and above, without the native-hadoop start-up notice
LOG4J2_CONFIG = Path(__file__).with_name("log4j2.properties")


def get_spark(settings: Settings, app_name: str = "ppm-platform"):
    """Return (or reuse) the SparkSession configured by ``settings.spark``.

    Session time zone is UTC so timestamps round-trip unchanged; Python workers run this interpreter
    (``PYSPARK_PYTHON``), so they see the same packages as the driver. JVM flags: ``SparkSettings.java_options``
    (C1-only JIT + SerialGC, which about halve the session start on small machines).
    """
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark.sql import SparkSession

    sp = settings.spark
    builder = (
        SparkSession.builder.appName(app_name)
        .master(sp.master)
        .config("spark.driver.memory", sp.driver_memory)
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(sp.shuffle_partitions))
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(sp.arrow_batch_rows))
        .config("spark.driver.extraJavaOptions",
                f"{sp.java_options} -Dlog4j2.configurationFile={LOG4J2_CONFIG.as_uri()}")
        .config("spark.executor.extraJavaOptions", sp.java_options)
        .config("spark.pyspark.python", sys.executable)
        .config("spark.python.worker.reuse", str(sp.python_worker_reuse).lower())
    )
    return builder.getOrCreate()


def release_heap(spark) -> None:
    """Return the driver JVM's free heap to the OS after a Spark stage: one full GC (``System.gc()``),
    which with ``SparkSettings.java_options``' ``MaxHeapFreeRatio=20`` / ``-ShrinkHeapInSteps`` shrinks the
    heap to its live set + 20 %. Spark keeps its session (and JVM) for the whole Dagster run, and a JVM never
    shrinks an idle heap on its own, so without this the Spark JVM would hold its peak through PPM / URM
    training. Takes well under a second; in the ``cluster`` profile only the driver is collected (executors
    live on the workers).

    Raises nothing: a session that is already stopped is left alone.
    """
    sc = spark.sparkContext
    if sc._jsc is None:  # stopped
        return
    sc._jvm.System.gc()


# ---- driver / worker helpers of every Spark job -----------------------------------------------------------
def worker_logger() -> logging.Logger:
    """The ``ppm_platform.features`` logger, made visible (INFO on stderr) inside a Spark Python worker, whose
    logging is otherwise unconfigured. On a driver with configured logging it is returned unchanged."""
    root = logging.getLogger()
    if not root.handlers and not log.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(asctime)s %(name)s [pid %(process)d] %(message)s"))
        log.addHandler(h)
        log.setLevel(logging.INFO)
        log.propagate = False
    return log


def default_partitions(spark) -> int:
    """About two partitions per core of the Spark application (so both cores stay busy to the end)."""
    return max(1, 2 * int(spark.sparkContext.defaultParallelism))


# ---- the shared writers: Spark DataFrame -> the platform's parquet layouts -------------------------------------
def spark_tmp_dir(out_path: Path) -> Path:
    """A fresh folder next to ``out_path`` for Spark's part files (same file system, so the consolidated
    file is renamed into place atomically)."""
    return Path(out_path).parent / f".{Path(out_path).name}.spark-{uuid.uuid4().hex[:8]}"


def write_consolidated(df, out_path: Path, schema: pa.Schema, sort_by: list[str]) -> pa.Table:
    """Write a Spark DataFrame to a temp folder next to ``out_path``, then consolidate it into one sorted
    parquet file at ``out_path`` (atomic). The temp folder is removed on failure too."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = spark_tmp_dir(out_path)
    try:
        df.write.mode("overwrite").parquet(str(tmp))
        return consolidate_parquet_dir(tmp, out_path, schema=schema, sort_by=sort_by)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_day_folders(df, out_path: Path, schema: pa.Schema, sort_by: list[str], ts_column: str = "event_timestamp",
                      day: date | None = None) -> int:
    """Write a Spark DataFrame as the day-partitioned dataset folder ``out_path`` (one
    ``<YYYY-MM-DD>.parquet`` per UTC day of ``ts_column``, rows sorted by ``sort_by``; see
    :func:`ppm_platform.io.consolidate_day_dirs`): Spark writes partitioned by day (no collect), then each day
    is cast to ``schema`` and sorted on its own, so memory holds one day's rows, not the table.

    Args:
        day: None = replace the whole folder (full rebuild); a day = replace that day's file only.

    Returns:
        Rows written.
    """
    from pyspark.sql import functions as F

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = spark_tmp_dir(out_path)
    try:  # the session time zone is UTC (get_spark), so to_date is the UTC day
        (df.withColumn(SPARK_DAY_COLUMN, F.to_date(F.col(ts_column)))
         .write.mode("overwrite").partitionBy(SPARK_DAY_COLUMN).parquet(str(tmp)))
        return consolidate_day_dirs(tmp, out_path, schema, sort_by, day)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def driver_progress(spark, desc: str, interval_s: float = 5.0):
    """Show the progress of the Spark jobs run inside the ``with`` block on the driver: a tqdm bar of finished
    / total tasks with rate and ETA when stderr is a terminal (silent otherwise, tqdm ``disable=None``), and a
    log line every ``interval_s`` seconds (``ppm_platform.features`` logger) with tasks done, elapsed seconds and
    ETA in seconds. Polls ``SparkContext.statusTracker()`` (PySpark docs, "StatusTracker") from a daemon thread;
    the workers' own per-batch logs give items/s.
    """
    from tqdm.auto import tqdm

    logger = worker_logger()  # visible on the driver too when nothing configured logging (the Dagster run process)
    tracker = spark.sparkContext.statusTracker()
    stop = threading.Event()
    seen: dict[int, tuple[int, int]] = {}
    bar = tqdm(total=0, desc=desc, unit="task", disable=None, leave=False)
    t0 = time.perf_counter()

    def poll() -> None:
        last_log = 0.0
        while not stop.wait(0.5):
            try:
                for sid in tracker.getActiveStageIds():
                    info = tracker.getStageInfo(sid)
                    if info is not None:
                        seen[sid] = (info.numCompletedTasks, info.numTasks)
            except Exception:  # the session may be stopping; progress is best-effort
                return
            done, total = sum(d for d, _ in seen.values()), sum(t for _, t in seen.values())
            bar.total = total
            bar.n = done
            bar.refresh()
            elapsed = time.perf_counter() - t0
            if elapsed - last_log >= interval_s and total:
                eta = f"{elapsed / done * (total - done):.0f} s" if done else "? (no task finished yet)"
                logger.info("%s: %d/%d Spark tasks done, %.0f s elapsed, ETA %s", desc, done, total, elapsed, eta)
                last_log = elapsed

    th = threading.Thread(target=poll, name=f"progress-{desc}", daemon=True)
    th.start()
    try:
        yield
    finally:
        stop.set()
        th.join(timeout=2)
        bar.close()
