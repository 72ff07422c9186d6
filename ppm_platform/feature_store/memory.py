"""The DuckDB memory cap of the ``local`` profile's offline store, shared by training-set retrieval and
materialize (DuckDB spills joins and windows beyond it; docs/scale.md §4 has the measurements)."""

from __future__ import annotations

import contextlib
import logging

from ppm_platform.config import Settings

log = logging.getLogger("ppm_platform.feature_store")


@contextlib.contextmanager
def limit_duckdb_memory(settings: Settings, limit: str | None):
    """Within the block, cap the memory of the DuckDB connection Feast's DuckDB offline store runs on (ibis'
    default backend, process-wide) at ``limit`` (e.g. ``"1GB"``; DuckDB spills joins and windows beyond it to
    ``<artifacts>/.duckdb_spill``); the previous limit is restored after. The spill folder is set once per
    process and kept (DuckDB cannot switch it once used). No-op for ``limit`` None or outside the ``local``
    profile."""
    if not limit or settings.profile != "local":
        yield
        return
    import ibis

    con = ibis.get_backend()
    old = con.raw_sql("SELECT current_setting('memory_limit')").fetchone()[0]
    spill = settings.artifacts_dir / ".duckdb_spill"
    if con.raw_sql("SELECT current_setting('temp_directory')").fetchone()[0] != str(spill):
        try:
            con.raw_sql(f"SET temp_directory = '{spill}'")
        except Exception as e:  # already used by an earlier query of this process: keep that folder
            log.info("DuckDB temp_directory kept (%s)", e)
    con.raw_sql(f"SET memory_limit = '{limit}'")
    try:
        yield
    finally:
        con.raw_sql(f"SET memory_limit = '{old}'")  # DuckDB removes its own spill files when a query ends
