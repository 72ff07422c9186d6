"""SparkSession construction for the platform (``local[*]`` by default, a standalone master in the
``cluster`` profile)."""

from __future__ import annotations

import os
import sys

from ppm_platform.config import Settings


def get_spark(settings: Settings, app_name: str = "ppm-platform"):
    """Return (or reuse) the SparkSession configured by ``settings.spark``.

    Session time zone is UTC so timestamps round-trip unchanged; Python workers run this interpreter
    (``PYSPARK_PYTHON``), so they see the same packages as the driver. JVM flags from
    ../shared/notes/stack.md §4 (C1-only JIT + SerialGC: SparkSession start 19 s -> 9 s on 2 cores).
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
        .config("spark.driver.extraJavaOptions", sp.java_options)
        .config("spark.executor.extraJavaOptions", sp.java_options)
        .config("spark.pyspark.python", sys.executable)
        .config("spark.python.worker.reuse", str(sp.python_worker_reuse).lower())
    )
    return builder.getOrCreate()


def release_heap(spark) -> None:
    """Return the driver JVM's free heap to the OS after a Spark stage: one full GC (``System.gc()``),
    which with ``SparkSettings.java_options``' ``MaxHeapFreeRatio=20`` / ``-ShrinkHeapInSteps`` shrinks the
    heap to its live set + 20 %. Spark keeps its session (and JVM) for the whole Dagster run, and a JVM never
    shrinks an idle heap on its own, so without this the Spark JVM held its peak (~1.2 GiB at 1e6
    impressions) through PPM / URM training (issue #8 memory). Takes well under a second; in the
    ``cluster`` profile only the driver is collected (executors live on the workers).

    Raises nothing: a session that is already stopped is left alone.
    """
    sc = spark.sparkContext
    if sc._jsc is None:  # stopped
        return
    sc._jvm.System.gc()
