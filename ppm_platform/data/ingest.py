"""Ingest: raw frames -> validated canonical tables + quarantine + profile feature tables, as parquet.

Used by the ``items``/``users``/``interactions``/``queries`` assets. Bring-your-own-catalog users call
:func:`ingest_frames` with their own frames; MovieLens goes through :func:`ingest_movielens`.
"""

from __future__ import annotations

import logging
import re
from datetime import date
from pathlib import Path

import pandas as pd

from ppm_platform.config import Settings
from ppm_platform.data import catalog, schemas
from ppm_platform.data.movielens import load_movielens
from ppm_platform.data.validation import (EmptyTableError, IngestResult, validate_interactions, validate_items,
                                          validate_queries, validate_users)
from ppm_platform.io import to_arrow, write_parquet_atomic

log = logging.getLogger("ppm_platform.data")

_YEAR = re.compile(r"\((\d{4})\)\s*$")


def ingest_frames(settings: Settings, raw: dict[str, pd.DataFrame], catalog_root: Path | None) -> dict[str, IngestResult]:
    """Validate raw ``items``, ``users``, ``interactions`` (and optional ``queries``) frames, write the
    clean tables to ``settings.tables_dir`` and the rejected rows to ``settings.quarantine_dir``.

    Interactions are checked against the *clean* users and items, so a row pointing at a quarantined item
    is itself quarantined ("unknown item_id"). Rows a loader failed on the source format (``source_error``,
    see ``validation.PROVENANCE_COLUMNS``) are quarantined first with that reason, their file
    (``source_file``) and line (``source_line``). The quarantine is also written to ``quarantine.duckdb``
    (:func:`write_quarantine_db`). Returns the per-table results (row accounting checked).

    Raises:
        SchemaError: a table is structurally unusable (missing required column, bad dtype).
        EmptyTableError: ``items``, ``users`` or ``interactions`` has no valid row (the quarantine is written
            first, so the reasons can be inspected; no canonical table is written).
    """
    settings.ensure_dirs()
    # error messages name the file a loader read the table from (``attrs["source_file"]``), else the table
    src = {name: str(df.attrs.get("source_file", name)) for name, df in raw.items()}
    items = validate_items(raw["items"], catalog_root, source=src["items"])
    users = validate_users(raw["users"], source=src["users"])
    inter = validate_interactions(raw["interactions"], set(users.clean["user_id"]), set(items.clean["item_id"]),
                                  source=src["interactions"])
    results = {"items": items, "users": users, "interactions": inter}
    if "queries" in raw:
        results["queries"] = validate_queries(raw["queries"], set(items.clean["item_id"]), source=src["queries"])
    for name, res in results.items():
        res.check_accounting()
        write_parquet_atomic(res.quarantined, catalog.path(settings, f"{name}_quarantine"))
        if res.columns_dropped:
            log.warning("ingest %s: dropped %d unknown column(s) %s", name, len(res.columns_dropped),
                        res.columns_dropped)
    write_quarantine_db(settings, list(results))
    empty = [n for n in ("items", "users", "interactions") if results[n].rows_out == 0]
    if empty:
        raise EmptyTableError("; ".join(
            f"table {n!r} has no valid rows (rows_in={results[n].rows_in}, quarantined={results[n].rows_quarantined}"
            f" {results[n].reasons})" for n in empty) + f"; see the quarantine in {quarantine_db_path(settings)}")
    for name, res in results.items():
        write_parquet_atomic(res.clean, catalog.path(settings, name), schemas.CANONICAL[name])
        log.info("ingest %s: %s", name, res.summary())
    return results


def quarantine_db_path(settings: Settings) -> Path:
    """``<artifacts>/quarantine.duckdb``: the queryable copy of the quarantine (see :func:`write_quarantine_db`)."""
    return catalog.path(settings, "quarantine_db")


def write_quarantine_db(settings: Settings, tables: list[str]) -> Path:
    """Write ``quarantine.duckdb`` (DuckDB database file) with one table per canonical table (all quarantined
    and field-repaired rows: original columns as text + ``row_number``, ``quarantine_reason``, ``action``) and
    a ``quarantine_summary(table_name, quarantine_reason, action, rows)`` table.

    Built in a temp file next to the target and renamed into place (a crash never leaves a half-written
    database). Query it with ``duckdb artifacts/quarantine.duckdb "SELECT * FROM items"`` or from Python
    ``duckdb.connect(path, read_only=True)``.

    Returns:
        The database path.
    """
    import os
    import uuid

    import duckdb

    path = quarantine_db_path(settings)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        con = duckdb.connect(str(tmp))
        try:
            con.execute("CREATE TABLE quarantine_summary (table_name VARCHAR, quarantine_reason VARCHAR, "
                        "action VARCHAR, rows BIGINT)")
            for name in tables:
                src = str(catalog.path(settings, f"{name}_quarantine")).replace("'", "''")
                con.execute(f'CREATE TABLE "{name}" AS SELECT * FROM read_parquet(\'{src}\')')
                con.execute(f"INSERT INTO quarantine_summary SELECT '{name}', quarantine_reason, action, count(*) "
                            f'FROM "{name}" GROUP BY ALL ORDER BY ALL')
            con.execute("CHECKPOINT")
        finally:
            con.close()
        os.replace(tmp, path)
    finally:
        for p in (tmp, tmp.with_name(tmp.name + ".wal")):
            if p.exists():
                p.unlink()
    return path


def load_raw(settings: Settings) -> tuple[dict[str, pd.DataFrame], Path]:
    """The raw frames of the dataset ``settings.dataset`` names (MovieLens-100K or a canonical-table folder)
    and the folder relative image paths resolve against.

    Raises:
        FileNotFoundError: the dataset is not where the settings say.
    """
    data_dir = settings.require_dataset()
    if settings.dataset == "canonical":
        from ppm_platform.data.loaders import load_canonical_dir

        return load_canonical_dir(data_dir, settings.max_items), data_dir
    return load_movielens(data_dir, settings.max_items), data_dir


def ingest_dataset(settings: Settings) -> dict[str, IngestResult]:
    """Ingest the dataset that ``settings.dataset`` names: MovieLens-100K or a canonical-table folder."""
    raw, root = load_raw(settings)
    return ingest_frames(settings, raw, catalog_root=root)


def interactions_daily_dir(settings: Settings) -> Path:
    """``tables/interactions_daily``: the day-partitioned interactions (one ``<YYYY-MM-DD>.parquet`` per day)."""
    return catalog.path(settings, "interactions_daily")


def ingest_interactions_day(settings: Settings, day: date) -> IngestResult:
    """Daily partition of the interaction log: the source's interactions whose timestamp falls on UTC ``day``,
    validated like the full ingest (:func:`~ppm_platform.data.validation.validate_interactions`) against the
    canonical ``users`` / ``items`` tables, written to ``interactions_daily/<day>.parquet`` (an empty day
    writes an empty file); the day's rejected rows go to ``quarantine/interactions_daily/<day>.parquet``.

    Rows whose timestamp does not parse belong to no day: only the full ingest's quarantine counts them.

    Raises:
        FileNotFoundError: the canonical ``users``/``items`` tables are missing (materialize ingest first).
        AssertionError: row accounting broken (rows_in != rows_out + rows_quarantined).
    """
    from ppm_platform.data.validation import parse_utc
    from ppm_platform.io import write_day_partition

    for t in ("users", "items"):
        if not catalog.path(settings, t).exists():
            raise FileNotFoundError(f"{catalog.path(settings, t)} missing: materialize the ingest assets "
                                    "(canonical_tables) before daily interaction partitions")
    raw, _ = load_raw(settings)
    inter = raw["interactions"]
    start = pd.Timestamp(day, tz="UTC")
    ts = parse_utc(inter["event_timestamp"], f"{settings.data_dir}: interactions column 'event_timestamp'")
    on_day = inter[((ts >= start) & (ts < start + pd.Timedelta(days=1))).to_numpy()]
    users = pd.read_parquet(catalog.path(settings, "users"), columns=["user_id"])["user_id"]
    items = pd.read_parquet(catalog.path(settings, "items"), columns=["item_id"])["item_id"]
    res = validate_interactions(on_day, set(users), set(items), source=f"{settings.data_dir} (interactions of {day})")
    res.check_accounting()
    write_parquet_atomic(res.quarantined, catalog.day_path(settings, "interactions_daily_quarantine", day))
    write_day_partition(to_arrow(res.clean, schemas.INTERACTIONS), interactions_daily_dir(settings), day,
                        sort_by=["event_timestamp", "user_id", "item_id"])
    log.info("interactions_daily %s: %s", day, res.summary())
    return res


def ingest_movielens(settings: Settings) -> dict[str, IngestResult]:
    """Load MovieLens-100K from ``settings.data_dir`` (subset by ``settings.max_items``) and ingest it.

    Raises:
        FileNotFoundError: the dataset is not where the settings say (one clear message).
    """
    return ingest_dataset(settings.model_copy(update={"dataset": "movielens"}))


def build_profiles(settings: Settings) -> dict[str, int]:
    """Write the ``item_profile`` and ``user_profile`` feature tables from the canonical tables.

    Item rows are stamped with ``created_at``; user rows with the epoch (MovieLens has no sign-up time;
    a user's demographic profile is taken as known before any of their events).
    """
    items = pd.read_parquet(catalog.path(settings, "items"))
    users = pd.read_parquet(catalog.path(settings, "users"))
    year = items["title"].str.extract(_YEAR, expand=False)
    item_profile = pd.DataFrame({
        "item_id": items["item_id"], "event_timestamp": items["created_at"],
        "categories": items["categories"].map(list),
        "release_year": pd.to_numeric(year, errors="coerce").astype("Int64"),
    })
    user_profile = pd.DataFrame({
        "user_id": users["user_id"], "event_timestamp": pd.Timestamp("1970-01-01", tz="UTC"),
        "age": users["age"], "gender": users["gender"], "occupation": users["occupation"],
    })
    write_parquet_atomic(item_profile, catalog.path(settings, "item_profile"), schemas.ITEM_PROFILE)
    write_parquet_atomic(user_profile, catalog.path(settings, "user_profile"), schemas.USER_PROFILE)
    return {"item_profile_rows": len(item_profile), "user_profile_rows": len(user_profile)}
