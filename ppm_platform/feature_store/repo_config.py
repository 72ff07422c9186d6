"""The Feast repo config of ppm-platform, built in code from :class:`~ppm_platform.config.Settings`, and the
:class:`feast.FeatureStore` opened on it.

This module is the one source of the Feast config: the library opens stores with :func:`get_store`, and the two
committed files ``feature_repo/feature_store.yaml`` (``local``) and ``feature_repo/feature_store.cluster.yaml``
(``cluster``) that the Feast CLI reads are :func:`cli_yaml` of it (``tests/unit/test_feature_store.py`` checks
that they are; regenerate them with :func:`write_cli_yaml`).

Why in code and not read from the yaml: Feast expands ``$VAR`` in ``feature_store.yaml``
(``os.path.expandvars``) but has no ``${VAR:-default}``, so a yaml could not honour ``PPM_ARTIFACTS_DIR`` with a
default. :func:`~ppm_platform.feature_store.definitions.apply_definitions` also writes the resolved config of
the current settings to ``<feast_dir>/feature_store.yaml`` (``feast -c feature_repo -f <that file> ui``).

Profiles (``settings.profile``): ``local`` = the ASOF DuckDB offline store
(:mod:`ppm_platform.feature_store.offline_store`) + SQLite online store (registry and online db under
``settings.feast_dir``); ``cluster`` = Spark offline store (master from ``settings.spark.master``) + Redis online
store (``settings.redis``, ``host:port``). ``settings.online_store`` overrides the profile's online store.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ppm_platform.config import Settings

if TYPE_CHECKING:  # feast import is slow (6-12 s): keep it out of module import
    from feast import FeatureStore

PROJECT = "ppm_platform"
#: Feast ``offline_store.type`` of the ``local`` profile: Feast's DuckDB store with an ASOF point-in-time join
ASOF_STORE_TYPE = "ppm_platform.feature_store.offline_store.AsofDuckDBOfflineStore"
#: Feast ``registry.registry_store_type`` of both profiles: Feast's file registry with atomic writes
REGISTRY_STORE_TYPE = "ppm_platform.feature_store.registry_store.AtomicFileRegistryStore"
#: rows per online-store write batch while materializing (Feast ``materialization.online_write_batch_size``)
MATERIALIZE_BATCH_ROWS = 10_000

#: Redis client bounds (added to ``settings.redis`` unless it names them, e.g. ``"host:6379,socket_timeout=5"``):
#: seconds one socket read/write and one connect may block. redis-py waits forever by default, so a hung Redis
#: would hang every ``/rank``; a killed one is refused at once (no timeout involved)
REDIS_SOCKET_TIMEOUT_S = 1.0
REDIS_CONNECT_TIMEOUT_S = 0.5
#: retries of a Redis command that failed on its connection, immediate (redis-py's default is 3 with 1-10 s
#: exponential backoff, timeouts included, so a request took seconds to fail while Redis was down); one retry
#: on a new connection covers a pooled connection that a restarted Redis closed while idle. A timeout is not
#: retried, so a hung Redis fails a request after one REDIS_SOCKET_TIMEOUT_S
REDIS_RETRIES = 1


class _FileRegistryServeWhileMaterializingFilter(logging.Filter):
    """Drops Feast's advisory that ``serve_features_while_materializing`` "typically has no effect" on a file
    registry: on ours it does (the file registry honours it; without it reads of a materializing view fail,
    ``tests/unit/test_feature_store.py::test_online_reads_keep_serving_while_a_view_is_materializing``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("`serve_features_while_materializing` is enabled but `registry_type`")


logging.getLogger("feast.repo_config").addFilter(_FileRegistryServeWhileMaterializingFilter())


def redis_connection_string(conn: str) -> str:
    """Feast's Redis ``connection_string`` (``host:port[,param=value...]``, passed to ``redis.Redis``) with
    ``socket_timeout`` / ``socket_connect_timeout`` set to :data:`REDIS_SOCKET_TIMEOUT_S` /
    :data:`REDIS_CONNECT_TIMEOUT_S` where ``conn`` does not set them."""
    given = {p.split("=", 1)[0].strip() for p in conn.split(",") if "=" in p}
    extra = [f"{k}={v}" for k, v in (("socket_timeout", REDIS_SOCKET_TIMEOUT_S),
                                     ("socket_connect_timeout", REDIS_CONNECT_TIMEOUT_S)) if k not in given]
    return ",".join([conn, *extra])


def repo_config_dict(settings: Settings) -> dict[str, Any]:
    """The ``feature_store.yaml`` content for ``settings`` (absolute paths), as a dict."""
    feast_dir = settings.feast_dir
    cfg: dict[str, Any] = {
        "project": PROJECT,
        "provider": "local",
        # serve_features_while_materializing: materialize flips a view to MATERIALIZING in the registry, and
        # Feast >= 0.64 refuses online reads of such a view (feast#6780) -- a serving outage for every
        # materialize or daily run; with it, reads keep the last materialized values until the run ends.
        # registry_store_type: the registry file is replaced atomically, never rewritten in place (a server
        # refreshing its cache could read a half-written registry during a materialize)
        "registry": {"registry_type": "file", "path": str(feast_dir / "registry.db"),
                     "registry_store_type": REGISTRY_STORE_TYPE,
                     "cache_ttl_seconds": 60, "serve_features_while_materializing": True},
        "entity_key_serialization_version": 3,
        # materialize reads the latest row per entity (a window in the offline store), not every row of the
        # range followed by a pandas dedupe, and writes the online store in batches: Feast's defaults hold a
        # view's whole history in pandas (docs/scale.md §4)
        "materialization": {"pull_latest_features": True, "online_write_batch_size": MATERIALIZE_BATCH_ROWS},
    }
    online = settings.online_store or ("redis" if settings.profile == "cluster" else "sqlite")
    cfg["online_store"] = ({"type": "redis", "connection_string": redis_connection_string(settings.redis)}
                           if online == "redis" else {"type": "sqlite", "path": str(feast_dir / "online_store.db")})
    if settings.profile == "cluster":
        sp = settings.spark
        cfg["offline_store"] = {"type": "spark", "spark_conf": {
            "spark.master": sp.master,
            "spark.ui.enabled": "false",
            "spark.sql.session.timeZone": "UTC",
            "spark.sql.shuffle.partitions": str(sp.shuffle_partitions),
            "spark.sql.execution.arrow.pyspark.enabled": "true",
            "spark.driver.memory": sp.driver_memory,
            "spark.driver.extraJavaOptions": sp.java_options,
        }}
    else:
        cfg["offline_store"] = {"type": ASOF_STORE_TYPE}
    return cfg


def write_repo_config(settings: Settings, path: Path) -> Path:
    """Write :func:`repo_config_dict` of ``settings`` as yaml to ``path`` (temp file + rename). Returns ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(repo_config_dict(settings), sort_keys=False))
    os.replace(tmp, path)
    return path


# ---- the committed yaml files of the Feast CLI ----------------------------------------------------------
#: profile -> the committed Feast CLI config in ``feature_repo/``
CLI_YAML_FILES = {"local": "feature_store.yaml", "cluster": "feature_store.cluster.yaml"}
#: the artifacts folder the committed files point at, relative to ``feature_repo/`` (the default
#: ``PPM_ARTIFACTS_DIR``, ``<repo>/artifacts``)
_CLI_ARTIFACTS_DIR = "../artifacts"
#: settings values the cluster file leaves to Feast's ``$VAR`` expansion (no defaults there: both must be set)
_CLI_ENV_PLACEHOLDERS = {"redis": "${PPM_REDIS}", "spark_master": "${PPM_SPARK_MASTER}"}
_CLI_HEADERS = {
    "local": """\
# GENERATED by ppm_platform.feature_store.repo_config.write_cli_yaml from the config in code: do not edit
# (tests/unit/test_feature_store.py checks this file equals the generated one).
# Local profile (default): ASOF DuckDB offline store over the parquet feature tables, SQLite online store,
# file registry. Paths are relative to this folder and point into <repo>/artifacts (the default
# PPM_ARTIFACTS_DIR). Only the Feast CLI reads this file (`cd feature_repo && feast apply` / `feast ui`); the
# library builds the same config in code from Settings, so it honours PPM_ARTIFACTS_DIR / PPM_PROFILE. Feast
# has no ${VAR:-default} syntax, hence the fixed relative paths. For another artifacts dir or profile use the
# resolved copy that apply_definitions() writes:
#   feast -c feature_repo -f $PPM_ARTIFACTS_DIR/feast/feature_store.yaml apply
""",
    "cluster": """\
# GENERATED by ppm_platform.feature_store.repo_config.write_cli_yaml from the config in code: do not edit
# (tests/unit/test_feature_store.py checks this file equals the generated one).
# Cluster profile: Spark offline store (sources are SparkSource over the same parquet paths, picked by
# PPM_PROFILE=cluster in feature_repo/features.py) and Redis online store; the registry stays a file under
# the artifacts folder. The Spark master and Redis address are expanded by Feast from the environment, and
# both must be set (Feast's expandvars has no defaults):
#   PPM_PROFILE=cluster PPM_SPARK_MASTER=spark://host:7077 PPM_REDIS=host:6379 \\
#     feast -c feature_repo -f feature_repo/feature_store.cluster.yaml apply
""",
}


def cli_repo_config_dict(profile: str) -> dict[str, Any]:
    """The config of the committed Feast CLI file of ``profile``: :func:`repo_config_dict` of the default
    settings of that profile, with paths relative to ``feature_repo/`` and, in ``cluster``, the Redis address
    and Spark master left as ``${PPM_REDIS}`` / ``${PPM_SPARK_MASTER}`` for Feast to expand.

    Raises:
        KeyError: ``profile`` is not one of :data:`CLI_YAML_FILES`.
    """
    CLI_YAML_FILES[profile]  # noqa: B018 - the KeyError for an unknown profile
    base = Settings.from_env(env={}, profile=profile)
    settings = base.model_copy(update={
        "artifacts_dir": Path(_CLI_ARTIFACTS_DIR), "redis": _CLI_ENV_PLACEHOLDERS["redis"],
        "spark": base.spark.model_copy(update={"master": _CLI_ENV_PLACEHOLDERS["spark_master"]})})
    return repo_config_dict(settings)


def cli_yaml(profile: str) -> str:
    """The text of the committed ``feature_repo/`` Feast config of ``profile`` (:data:`CLI_YAML_FILES`): a
    header saying what it is, then :func:`cli_repo_config_dict` as yaml."""
    return _CLI_HEADERS[profile] + yaml.safe_dump(cli_repo_config_dict(profile), sort_keys=False, width=4096)


def write_cli_yaml(feature_repo_dir: Path) -> list[Path]:
    """(Re)write every committed Feast CLI config under ``feature_repo_dir``; returns the paths written."""
    out = []
    for profile, name in CLI_YAML_FILES.items():
        path = Path(feature_repo_dir) / name
        path.write_text(cli_yaml(profile))
        out.append(path)
    return out


# ---- the store ------------------------------------------------------------------------------------------
def get_store(settings: Settings) -> "FeatureStore":
    """A :class:`feast.FeatureStore` configured from ``settings`` (:func:`repo_config_dict`). On a Redis online
    store its client retries a command that lost its connection :data:`REDIS_RETRIES` time(s) without backoff
    and a timed-out one never (Feast's config has no retry setting, so the policy is set on the client Feast
    creates)."""
    from feast import FeatureStore, RepoConfig

    settings.feast_dir.mkdir(parents=True, exist_ok=True)
    config = RepoConfig(**repo_config_dict(settings))
    config.repo_path = settings.feature_repo_dir
    store = FeatureStore(repo_path=str(settings.feature_repo_dir), config=config)
    if config.online_store.type == "redis" and config.online_store.redis_type.value == "redis":
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.retry import Retry

        # creating the client does not connect (redis-py connects on the first command)
        client = store._get_provider().online_store._get_client(config.online_store)
        client.set_retry(Retry(NoBackoff(), REDIS_RETRIES, supported_errors=(RedisConnectionError,)))
    return store
