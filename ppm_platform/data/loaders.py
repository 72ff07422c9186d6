"""Bring-your-own-catalog loader: canonical tables from a folder of CSV or parquet files.

Layout of ``data_dir`` (DESIGN.md §2; each table as ``<name>.parquet`` or ``<name>.csv``):

- ``items``: item_id, title, image_uri (path relative to ``data_dir`` or absolute; empty = no image),
  categories (list; in CSV a ``|``-separated string), created_at (ISO-8601 or unix seconds)
- ``users``: user_id, optional age, gender, occupation
- ``interactions``: user_id, item_id, event_timestamp, click, order
- ``queries`` (optional): query, item_id, event_timestamp

Values are not validated here; :mod:`ppm_platform.data.validation` does that (with quarantine).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

REQUIRED = ("items", "users", "interactions")
OPTIONAL = ("queries",)


def _read(path: Path) -> pd.DataFrame:
    """Read one table file.

    Raises:
        SchemaError: the file is empty (no header row), or a CSV is not valid UTF-8 (the message names the
            file, line and byte offset of the first bad byte; re-encode it, e.g. ``iconv -f latin1 -t utf-8``).
    """
    from ppm_platform.data.validation import SchemaError

    if path.stat().st_size == 0:
        raise SchemaError(f"{path}: file is empty (no header row); an empty table needs at least its header")
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise SchemaError(f"{path}: not valid UTF-8 at byte {e.start} (line {line}): {raw[e.start:e.start + 1]!r}; "
                          "re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from e
    try:
        return pd.read_csv(path, keep_default_na=True, encoding="utf-8")
    except pd.errors.EmptyDataError as e:
        raise SchemaError(f"{path}: file is empty (no header row)") from e


def _find(data_dir: Path, name: str) -> Path | None:
    for ext in (".parquet", ".csv"):
        p = data_dir / f"{name}{ext}"
        if p.exists():
            return p
    return None


def load_canonical_dir(data_dir: Path, max_items: int | None = None) -> dict[str, pd.DataFrame]:
    """Read canonical tables from ``data_dir``.

    Image paths are resolved against ``data_dir`` (validation then rejects any that escape it); CSV
    ``categories`` are split on ``|``.

    Raises:
        FileNotFoundError: a required table is missing (the message names the files looked for).
        SchemaError: a file is empty or not valid UTF-8 (see :func:`_read`).
    """
    data_dir = Path(data_dir)
    out: dict[str, pd.DataFrame] = {}
    for name in (*REQUIRED, *OPTIONAL):
        p = _find(data_dir, name)
        if p is None:
            if name in REQUIRED:
                raise FileNotFoundError(f"{data_dir}: table {name!r} not found (looked for {name}.parquet, {name}.csv)")
            continue
        out[name] = _read(p)
    items = out["items"]
    if "categories" in items and len(items) and isinstance(items["categories"].dropna().iloc[0] if items["categories"].notna().any() else [], str):
        items["categories"] = items["categories"].fillna("").map(lambda s: [c for c in str(s).split("|") if c])
    if "image_uri" in items:
        items["image_uri"] = [None if (u is None or (isinstance(u, float)) or str(u).strip() == "")
                              else str(u) if Path(str(u)).is_absolute() else str(data_dir / str(u))
                              for u in items["image_uri"]]
    if max_items is not None:
        keep = set(pd.to_numeric(items["item_id"], errors="coerce").dropna().astype("int64").sort_values().head(max_items))
        out["items"] = items[pd.to_numeric(items["item_id"], errors="coerce").isin(keep)]
        out["interactions"] = out["interactions"][pd.to_numeric(out["interactions"]["item_id"], errors="coerce").isin(keep)]
        if "queries" in out:
            out["queries"] = out["queries"][pd.to_numeric(out["queries"]["item_id"], errors="coerce").isin(keep)]
    return out
