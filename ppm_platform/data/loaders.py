"""Bring-your-own-catalog loader: canonical tables from a folder of CSV or parquet files.

Layout of ``data_dir`` (DESIGN.md §2; each table as ``<name>.parquet`` or ``<name>.csv``):

- ``items``: item_id, title, image_uri (path relative to ``data_dir`` or absolute; empty = no image),
  categories (list; in CSV a ``|``-separated string), created_at (ISO-8601 or unix seconds)
- ``users``: user_id, optional age, gender, occupation
- ``interactions``: user_id, item_id, event_timestamp, click, order
- ``queries`` (optional): query, item_id, event_timestamp

Values are not validated here; :mod:`ppm_platform.data.validation` does that (with quarantine). What only the
file format can tell is checked here, before anything is read into typed columns (a typed read would drop or coerce it silently): a CSV
record with the wrong number of fields (a stray delimiter, a cut line) is kept as a row with ``source_error =
"wrong field count (expected N)"``, its line and raw text (``validation.PROVENANCE_COLUMNS``), and is
quarantined first; every CSV row carries its ``source_line``; every frame names its file in
``attrs["source_file"]``. Nothing is dropped: the ``max_items`` subset keeps every row whose ``item_id`` is not
a valid id, so validation quarantines it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
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
    df = _read_csv(path, raw.decode("utf-8"))
    df.attrs["source_file"] = str(path)
    return df


def _read_csv(path: Path, text: str) -> pd.DataFrame:
    """One CSV table with its header; the records whose field count differs from the header's become rows
    with ``source_error`` set (their values null, their text in ``source_record``); every row gets the
    1-based ``source_line`` its record starts on. Blank lines hold no record (pandas skips them too).

    The records are split once with :mod:`csv` (which knows the line of every record, quoted newlines
    included), and the well-formed ones are re-read by pandas, so their values get the same types as a plain
    ``pd.read_csv`` of the file. When some record is bad, the columns are ``object`` (a float column would
    round ids above 2**53).

    Raises:
        SchemaError: no header row, or the CSV cannot be split (e.g. a quote never closed), naming file and line.
    """
    import csv
    import io

    from ppm_platform.data.validation import SchemaError

    # the physical lines exactly as the csv reader counts them (\n, \r\n or \r; str.splitlines splits on more)
    lines = [ln.rstrip("\r\n") for ln in io.StringIO(text, newline="")]
    reader = csv.reader(io.StringIO(text, newline=""))
    header, good, starts, bad = None, [], [], []
    end = 0
    try:
        for record in reader:
            start, end = end + 1, reader.line_num
            if not record or (len(record) == 1 and not record[0].strip()):
                continue  # a blank line
            if header is None:
                header = record
            elif len(record) == len(header):
                good.append(record)
                starts.append(start)
            else:
                bad.append((start, "\n".join(lines[start - 1:end])))
    except csv.Error as e:
        raise SchemaError(f"{path}: cannot split line {reader.line_num} as CSV: {e}") from e
    if header is None:
        raise SchemaError(f"{path}: file is empty (no header row)")
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([header, *good])
    buf.seek(0)
    df = pd.read_csv(buf, keep_default_na=True, encoding="utf-8")
    df["source_line"] = np.array(starts, dtype=np.int64)
    df["source_error"] = None
    df["source_record"] = None
    if bad:
        reason = f"wrong field count (expected {len(header)})"
        extra = pd.DataFrame({"source_line": [b[0] for b in bad], "source_error": reason,
                              "source_record": [b[1] for b in bad]})
        df = pd.concat([df.astype(object), extra.astype(object)], ignore_index=True)
        df["source_line"] = df["source_line"].astype("int64")
    return df


def _find(data_dir: Path, name: str) -> Path | None:
    for ext in (".parquet", ".csv"):
        p = data_dir / f"{name}{ext}"
        if p.exists():
            return p
    return None


def load_canonical_dir(data_dir: Path, max_items: int | None = None) -> dict[str, pd.DataFrame]:
    """Read canonical tables from ``data_dir``.

    Image paths are resolved against ``data_dir`` (validation then rejects any that escape it); CSV
    ``categories`` are split on ``|``. ``max_items`` keeps the items with the ``max_items`` smallest valid
    ids and the interactions/queries on ids up to the largest of them (:func:`subset_mask`: rows with an
    invalid ``item_id`` are always kept, for the quarantine).

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
        ids = _valid_ids(items["item_id"])
        distinct = np.unique(ids[~np.isnan(ids)])
        cutoff = distinct[max_items - 1] if 0 < max_items <= len(distinct) else (np.inf if max_items > 0 else -np.inf)
        for name in ("items", "interactions", "queries"):
            if name in out:
                out[name] = out[name][subset_mask(out[name]["item_id"], cutoff)]
    return out


def _valid_ids(values: pd.Series) -> np.ndarray:
    """float64 of each id that validation would accept (numeric, integral, positive, within int64), NaN else."""
    num = pd.to_numeric(values, errors="coerce").astype("float64").to_numpy()
    with np.errstate(invalid="ignore"):
        ok = (num % 1 == 0) & (num > 0) & (num < 2.0**63)
    return np.where(ok, num, np.nan)


def subset_mask(item_ids: pd.Series, cutoff: float) -> np.ndarray:
    """Rows of a ``max_items`` subset: ``item_id <= cutoff``, plus every row whose ``item_id`` is not a valid id
    (it cannot be placed, and a subset must never hide a bad row from the quarantine: validation rejects it).

    Args:
        item_ids: the raw ``item_id`` column (any dtype).
        cutoff: the largest item id in the subset (the ``max_items``-th smallest valid item id).

    Returns:
        bool ``[len(item_ids)]``.
    """
    ids = _valid_ids(item_ids)
    return np.isnan(ids) | (ids <= cutoff)
