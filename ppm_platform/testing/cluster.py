"""Start / stop a real local cluster on loopback for the ``cluster`` profile: a Spark standalone master +
worker from the installed pyspark distribution, and a ``redis-server`` (the OS package).

The pip wheel of pyspark ships ``jars/`` but not the ``sbin/start-master.sh`` scripts, so the daemons are
started the way those scripts do underneath (Spark docs, "Spark Standalone Mode", *Starting a Cluster
Manually*)::

    java -cp "<pyspark>/jars/*" org.apache.spark.deploy.master.Master --host 127.0.0.1 --port P --webui-port 0
    java -cp "<pyspark>/jars/*" org.apache.spark.deploy.worker.Worker spark://127.0.0.1:P --cores 1 --memory 2g

The worker builds each executor's classpath from ``$SPARK_HOME/jars``, but only if ``$SPARK_HOME/RELEASE``
exists (Spark's launcher ``AbstractCommandBuilder.findJarsDir``; otherwise it looks for a source build and
fails with "Cannot find any build directories"); the wheel has no ``RELEASE`` file, so :func:`spark_home_shim`
makes a folder with ``RELEASE`` and a ``jars`` link to the wheel's jars, and the daemons run with
``SPARK_HOME`` = that folder (the installed package is left untouched) and ``SPARK_SCALA_VERSION`` set
(also needed by the launcher outside a source build).
Used by ``tests/integration/test_cluster_profile.py``, ``benchmarks/`` and ``docs/scale.md``::

    with local_cluster() as c:          # c.spark_master = "spark://127.0.0.1:P", c.redis = "127.0.0.1:R"
        env = c.env()                   # {"PPM_PROFILE": "cluster", "PPM_SPARK_MASTER": ..., "PPM_REDIS": ...}

or from a shell: ``python -m ppm_platform.testing.cluster`` (prints the exports, stops on Ctrl-C).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator


def spark_home() -> Path:
    """The installed pyspark distribution folder (has ``jars/``), used as ``SPARK_HOME``."""
    import pyspark

    home = Path(pyspark.__file__).resolve().parent
    if not (home / "jars").is_dir():
        raise FileNotFoundError(f"{home}/jars not found: pyspark is not a full distribution")
    return home


def spark_home_shim(workdir: Path) -> Path:
    """``<workdir>/spark-home`` with a ``RELEASE`` file and ``jars`` -> the pyspark wheel's jars (see the
    module docstring). Idempotent. Returns the folder to use as ``SPARK_HOME``."""
    src = spark_home()
    home = workdir / "spark-home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "RELEASE").write_text(f"Spark (pyspark wheel at {src}) for ppm_platform.testing.cluster\n")
    for name in ("jars", "bin", "conf"):
        link = home / name
        if (src / name).exists() and not link.exists():
            link.symlink_to(src / name, target_is_directory=True)
    return home


def scala_version() -> str:
    """Scala binary version of the pyspark jars (e.g. ``"2.13"``, from ``spark-core_<v>-*.jar``); the
    worker's launcher needs it as ``SPARK_SCALA_VERSION`` outside a source build."""
    for jar in sorted((spark_home() / "jars").glob("spark-core_*.jar")):
        return jar.name.split("_", 1)[1].split("-", 1)[0]
    raise FileNotFoundError(f"no spark-core_*.jar in {spark_home() / 'jars'}")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, what: str, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}; log {log}:\n{log.read_text()[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{what} did not listen on 127.0.0.1:{port} within {timeout_s} s; log {log}")


def _wait_log(log: Path, needle: str, proc: subprocess.Popen, what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}; log {log}:\n{log.read_text()[-2000:]}")
        if log.exists() and needle in log.read_text(errors="replace"):
            return
        time.sleep(0.3)
    raise TimeoutError(f"{what}: {needle!r} not in {log} within {timeout_s} s:\n{log.read_text()[-2000:]}")


@dataclass
class LocalCluster:
    """Handles of the processes started by :func:`local_cluster` (stopped by :meth:`stop`)."""

    spark_master: str
    redis: str
    workdir: Path
    procs: list[subprocess.Popen] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        """The settings that select this cluster: ``PPM_PROFILE=cluster`` + master URL + Redis address."""
        return {"PPM_PROFILE": "cluster", "PPM_SPARK_MASTER": self.spark_master, "PPM_REDIS": self.redis}

    def stop(self) -> None:
        """SIGTERM every started process (workers first), SIGKILL after 10 s. Idempotent."""
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs.clear()


def start_redis(workdir: Path, port: int | None = None, timeout_s: float = 20,
                persist: bool = False) -> tuple[subprocess.Popen, str]:
    """Start ``redis-server`` on 127.0.0.1. Returns ``(process, "127.0.0.1:port")``.

    ``persist``: an append-only file in ``workdir`` fsynced after every write (``appendfsync always``), so a
    server killed with SIGKILL and started again on the same ``workdir`` has every write back (fault tests);
    default: no persistence.

    Raises:
        FileNotFoundError: ``redis-server`` is not installed (``make redis``: ``apt-get install -y redis-server``).
    """
    exe = shutil.which("redis-server")
    if exe is None:
        raise FileNotFoundError("redis-server not found on PATH: install the OS package (`make redis`, or as "
                                "root: apt-get update && apt-get install -y redis-server; .ci/run and "
                                "`make test` do this)")
    port = port or free_port()
    log = workdir / "redis.log"
    aof = ["yes", "--appendfsync", "always"] if persist else ["no"]
    proc = subprocess.Popen([exe, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly",
                             *aof, "--dir", str(workdir), "--logfile", str(log)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    _wait_port(port, proc, "redis-server", log, timeout_s)
    return proc, f"127.0.0.1:{port}"


def start_spark_standalone(workdir: Path, cores: int = 1, memory: str = "2g", timeout_s: float = 120,
                           daemon_heap: str = "512m", workers: int = 1) -> tuple[list[subprocess.Popen], str]:
    """Start a Spark standalone master and ``workers`` workers on 127.0.0.1 from the pyspark jars.

    Args:
        cores, memory: what each worker offers to executors (``--cores``, ``--memory``).
        daemon_heap: ``-Xmx`` of the master and worker JVMs themselves.
        workers: worker daemons (each its own JVM, one executor per application); logs
            ``spark-worker.log``, ``spark-worker-2.log``, ...

    Returns:
        ``([master, worker, ...], "spark://127.0.0.1:P")`` once every worker has registered with the master.

    Raises:
        RuntimeError / TimeoutError: a daemon exited or did not come up (message includes its log tail).
    """
    home = spark_home_shim(workdir)
    java = shutil.which("java") or (Path(os.environ["JAVA_HOME"]) / "bin" / "java" if "JAVA_HOME" in os.environ else None)
    if java is None:
        raise FileNotFoundError("java not found (Spark needs Java 17)")
    env = dict(os.environ, SPARK_HOME=str(home), SPARK_LOCAL_IP="127.0.0.1", SPARK_SCALA_VERSION=scala_version(),
               PYSPARK_PYTHON=os.environ.get("PYSPARK_PYTHON", sys.executable),
               SPARK_WORKER_DIR=str(workdir / "worker"))
    cp = f"{home}/jars/*"
    jopts = [f"-Xmx{daemon_heap}", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"]
    port = free_port()
    master_log = workdir / "spark-master.log"
    master = subprocess.Popen([str(java), *jopts, "-cp", cp, "org.apache.spark.deploy.master.Master",
                               "--host", "127.0.0.1", "--port", str(port), "--webui-port", "0"],
                              env=env, stdout=master_log.open("w"), stderr=subprocess.STDOUT)
    procs = [master]
    try:
        _wait_port(port, master, "spark master", master_log, timeout_s)
        url = f"spark://127.0.0.1:{port}"
        started = []
        for i in range(workers):
            worker_log = workdir / ("spark-worker.log" if i == 0 else f"spark-worker-{i + 1}.log")
            worker = subprocess.Popen([str(java), *jopts, "-cp", cp, "org.apache.spark.deploy.worker.Worker", url,
                                       "--host", "127.0.0.1", "--cores", str(cores), "--memory", memory,
                                       "--webui-port", "0", "--work-dir", str(workdir / "worker")],
                                      env=env, stdout=worker_log.open("w"), stderr=subprocess.STDOUT)
            procs.append(worker)
            started.append((worker_log, worker))
        for worker_log, worker in started:  # the JVMs start side by side
            _wait_log(worker_log, "Successfully registered with master", worker, "spark worker", timeout_s)
    except BaseException:
        for p in procs:
            p.kill()
            p.wait()
        raise
    return procs, url


@contextlib.contextmanager
def local_cluster(workdir: Path | None = None, cores: int = 1, memory: str = "2g",
                  workers: int = 1) -> Iterator[LocalCluster]:
    """Context manager: a Spark standalone master + ``workers`` workers and a Redis server on loopback, stopped
    on exit.

    Args:
        workdir: logs and worker scratch (default: a fresh temp folder, removed on exit).
        cores, memory: each worker's offer (``--cores``, ``--memory``).
    """
    own = workdir is None
    wd = Path(workdir or tempfile.mkdtemp(prefix="ppm-cluster-"))
    wd.mkdir(parents=True, exist_ok=True)
    cluster = LocalCluster(spark_master="", redis="", workdir=wd)
    try:
        rproc, raddr = start_redis(wd)
        cluster.procs.append(rproc)
        cluster.redis = raddr
        sprocs, url = start_spark_standalone(wd, cores=cores, memory=memory, workers=workers)
        cluster.procs.extend(sprocs)
        cluster.spark_master = url
        yield cluster
    finally:
        cluster.stop()
        if own:
            shutil.rmtree(wd, ignore_errors=True)


if __name__ == "__main__":  # pragma: no cover - manual use (docs/scale.md)
    with local_cluster(Path(sys.argv[1]) if len(sys.argv) > 1 else None) as c:
        for k, v in c.env().items():
            print(f"export {k}={v}")
        print("# cluster up; Ctrl-C to stop", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
