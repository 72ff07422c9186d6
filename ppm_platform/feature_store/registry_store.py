"""Feast file registry store whose writes are atomic (Feast ``registry.registry_store_type`` of both profiles,
:func:`ppm_platform.feature_store.repo_config.repo_config_dict`).

Feast's :class:`~feast.infra.registry.file.FileRegistryStore` rewrites ``registry.db`` in place (``open(path,
"wb")``: truncate, then write). A process that reads the registry meanwhile -- the ranking service refreshing
its registry cache (``cache_ttl_seconds``) while a materialize records its interval or flips a view's state --
parses an empty or partial file, and ``/rank`` requests during a materialize failed with
``FeatureViewNotFoundException`` (``tests/unit/test_serving_faults.py``). Here the new registry goes to a temp
file in the same folder, is fsynced and renamed over the old one (``os.replace``, atomic on POSIX), so a reader
gets the old or the new registry, whole. Reads are Feast's.

Concurrent *writers* (two materializations at once) still read-modify-write the registry and the later write
wins, as with Feast's store; the pipeline runs one materialize of a view at a time.
"""

from __future__ import annotations

import uuid

from feast.infra.registry.file import FileRegistryStore
from feast.protos.feast.core.Registry_pb2 import Registry as RegistryProto
from feast.utils import _utc_now

from ppm_platform.io import write_bytes_atomic


class AtomicFileRegistryStore(FileRegistryStore):
    """:class:`FileRegistryStore` with an atomic write (temp file + fsync + rename; see the module docstring)."""

    def _write_registry(self, registry_proto: RegistryProto) -> None:
        registry_proto.version_id = str(uuid.uuid4())  # as Feast's store stamps it
        registry_proto.last_updated.FromDatetime(_utc_now())
        write_bytes_atomic(registry_proto.SerializeToString(), self._filepath)
