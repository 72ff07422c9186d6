"""Library API over the Feast feature store (DESIGN.md §3-4): register the definitions of
``feature_repo/features.py``, build point-in-time training sets, materialize to the online store, and read
online features for serving. No Dagster import here; the assets call these functions.

The package's rooms:

* :mod:`~ppm_platform.feature_store.repo_config`: the Feast repo config built in code from
  :class:`~ppm_platform.config.Settings` (the one source; the committed ``feature_repo/*.yaml`` are generated
  from it) and :func:`get_store`.
* :mod:`~ppm_platform.feature_store.definitions`: load / apply the definitions, check their sources exist.
* :mod:`~ppm_platform.feature_store.training_sets`: point-in-time retrieval and training-set streaming under a
  memory cap (:mod:`~ppm_platform.feature_store.memory`).
* :mod:`~ppm_platform.feature_store.online`: materialize, online reads, the online store's errors.
* :mod:`~ppm_platform.feature_store.offline_store`: the ASOF DuckDB offline store (a Feast plugin).
* :mod:`~ppm_platform.feature_store.registry_store`: Feast's file registry with atomic writes (a Feast plugin).

This module re-exports the public functions callers use. The two plugin modules import Feast at import time
and are loaded by Feast from the config's class paths, not from here.
"""

from ppm_platform.feature_store.definitions import apply_definitions, load_definitions
from ppm_platform.feature_store.memory import limit_duckdb_memory
from ppm_platform.feature_store.online import (
    materialize,
    online_store_errors,
    overwrite_online_rows,
    read_online_items,
    read_online_user,
)
from ppm_platform.feature_store.repo_config import (
    ASOF_STORE_TYPE,
    PROJECT,
    REDIS_CONNECT_TIMEOUT_S,
    REDIS_RETRIES,
    REDIS_SOCKET_TIMEOUT_S,
    REGISTRY_STORE_TYPE,
    get_store,
    redis_connection_string,
    repo_config_dict,
)
from ppm_platform.feature_store.training_sets import (
    DEFAULT_CHUNK_ROWS,
    STREAM_CHUNK_ROWS,
    get_training_frame,
    streams_arrow_batches,
    write_training_set,
)

__all__ = [
    "ASOF_STORE_TYPE", "DEFAULT_CHUNK_ROWS", "PROJECT", "REDIS_CONNECT_TIMEOUT_S", "REDIS_RETRIES",
    "REDIS_SOCKET_TIMEOUT_S", "REGISTRY_STORE_TYPE", "STREAM_CHUNK_ROWS",
    "apply_definitions", "get_store", "get_training_frame", "limit_duckdb_memory", "load_definitions",
    "materialize", "online_store_errors", "overwrite_online_rows", "read_online_items", "read_online_user",
    "redis_connection_string", "repo_config_dict", "streams_arrow_batches", "write_training_set",
]
