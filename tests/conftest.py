"""Test-suite setup (../shared/notes/stack.md §10): offline Hugging Face, Spark workers on this venv's
python and on loopback, feast's typeguard instrumentation off (it doubles `import feast`)."""

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

import typeguard  # noqa: E402  (must be patched before anything imports feast)


def _no_typecheck(target=None, **_kw):
    return (lambda t: t) if target is None else target


typeguard.typechecked = _no_typecheck

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def spark():
    """One local Spark session for the whole test session (local[2], UTC, fast JVM flags)."""
    from ppm_platform.config import Settings
    from ppm_platform.features.spark import get_spark

    s = get_spark(Settings.from_env(spark={"master": "local[2]", "shuffle_partitions": 2}))
    yield s
    s.stop()
