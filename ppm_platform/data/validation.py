"""Validation of the canonical tables with quarantine and row accounting (DESIGN.md §2).

Every ingest returns an :class:`IngestResult` whose counts satisfy
``rows_in == rows_out + rows_quarantined``; each quarantined row keeps its original values plus a
``quarantine_reason`` (and the source ``row_number``), so nothing is silently dropped. Field-level repairs
that keep the row (an item whose poster is missing keeps the item, without image) are counted in
``fields_repaired`` and also written to the quarantine table with ``action = "field_nulled"``.

Defined outcomes for structurally bad input (the full table of cases is docs/reliability.md and
tests/unit/test_bad_input_catalogue.py):

- a required column is missing, or a column has an unusable dtype (e.g. boolean timestamps):
  :class:`SchemaError` naming the source, table and column;
- unknown extra columns are dropped and listed in ``IngestResult.columns_dropped`` (reported in the
  summary and the asset metadata, never silently);
- an empty table validates to an empty result (``0 == 0 + 0``); the ingest stage then refuses an empty
  ``items``/``users``/``interactions`` result with :class:`EmptyTableError` (after writing the quarantine);
- naive timestamps are taken as UTC; strings with an offset are converted to UTC; integers are unix seconds;
- ``bytes`` titles are decoded as UTF-8, undecodable ones (and strings with lone surrogates) are quarantined;
- a loader that checks the raw source format first (:mod:`ppm_platform.data.movielens`, the CSV path of
  :mod:`ppm_platform.data.loaders`) marks a row that broke it in ``source_error``; such rows are quarantined
  first, with that reason, before any other check (see :data:`PROVENANCE_COLUMNS`).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd

from ppm_platform.data import schemas
from ppm_platform.data.item_content import MAX_IMAGE_PIXELS, ImageRefusedError, open_catalog_image

MAX_TITLE_CHARS = 1_000

#: Optional provenance columns a loader adds to a raw frame: ``source_line`` (1-based line
#: of the record in its file), ``source_error`` (why the loader's source-format check failed the row; null =
#: passed), ``source_record`` (the raw text of a failed record). Never listed in ``columns_dropped``; kept in the
#: quarantine (``source_error`` as ``quarantine_reason``), with ``source_file`` from ``df.attrs["source_file"]``.
PROVENANCE_COLUMNS = ("source_line", "source_error", "source_record")


@dataclass
class IngestResult:
    """Outcome of validating one table.

    Attributes:
        table: canonical table name (``items``, ``users``, ``interactions``, ``queries``).
        clean: rows that passed, in the canonical schema.
        quarantined: rejected rows: original columns + ``row_number`` + ``quarantine_reason`` + ``action``.
        reasons: count of quarantined rows per reason.
        fields_repaired: count of kept rows with a field nulled, per reason.
        columns_dropped: input columns that are not part of the canonical schema (dropped, reported).
    """

    table: str
    clean: pd.DataFrame
    quarantined: pd.DataFrame
    rows_in: int
    reasons: dict[str, int] = field(default_factory=dict)
    fields_repaired: dict[str, int] = field(default_factory=dict)
    columns_dropped: list[str] = field(default_factory=list)

    @property
    def rows_out(self) -> int:
        return len(self.clean)

    @property
    def rows_quarantined(self) -> int:
        return int(sum(self.reasons.values()))

    def check_accounting(self) -> None:
        """Raise AssertionError unless ``rows_in == rows_out + rows_quarantined``."""
        if self.rows_in != self.rows_out + self.rows_quarantined:
            raise AssertionError(
                f"{self.table}: row accounting broken: rows_in={self.rows_in} != rows_out={self.rows_out}"
                f" + rows_quarantined={self.rows_quarantined}")

    def summary(self) -> dict:
        return {"table": self.table, "rows_in": self.rows_in, "rows_out": self.rows_out,
                "rows_quarantined": self.rows_quarantined, "reasons": dict(self.reasons),
                "fields_repaired": dict(self.fields_repaired), "columns_dropped": list(self.columns_dropped)}


class SchemaError(ValueError):
    """A table is structurally unusable (missing required column, wrong dtype): raised, not quarantined."""


class EmptyTableError(ValueError):
    """A required table has no valid rows after validation (empty input, or every row quarantined)."""


class _Quarantine:
    """Collects rejected rows by reason while a validator filters a frame step by step.

    Rows a loader marked in ``source_error`` (:data:`PROVENANCE_COLUMNS`) are rejected here, first, with that
    reason, so no check (and no label or id coercion) ever sees a row whose raw fields broke the source format.
    """

    def __init__(self, table: str, df: pd.DataFrame, known: list[str] | None = None, source: str = ""):
        self.table = table
        self.source = source or table
        self.source_file = df.attrs.get("source_file")
        self.rows_in = len(df)
        self.columns_dropped = [str(c) for c in df.columns
                                if known is not None and c not in known and c not in PROVENANCE_COLUMNS]
        self.df = df.assign(row_number=np.arange(len(df)))
        self.rejected: list[pd.DataFrame] = []
        self.reasons: Counter = Counter()
        self.repaired: Counter = Counter()
        if "source_error" in self.df:
            for reason in sorted(set(self.df["source_error"].dropna())):
                self.reject((self.df["source_error"] == reason).to_numpy(), str(reason))

    def _quarantine(self, mask: np.ndarray, reason: str, action: str) -> None:
        """Copy the rows in ``mask`` to the quarantine with ``reason`` and ``action``."""
        rows = self.df[mask].copy()
        rows["quarantine_reason"] = reason
        rows["action"] = action
        self.rejected.append(rows)

    def reject(self, mask: pd.Series | np.ndarray, reason: str) -> None:
        mask = np.asarray(mask, dtype=bool)
        if mask.any():
            self._quarantine(mask, reason, "row_rejected")
            self.reasons[reason] += int(mask.sum())
            self.df = self.df[~mask]

    def repair(self, mask: pd.Series | np.ndarray, column: str, reason: str) -> None:
        """Null ``column`` on the rows in ``mask``; record them (the rows stay)."""
        mask = np.asarray(mask, dtype=bool)
        if mask.any():
            self._quarantine(mask, reason, "field_nulled")
            self.repaired[reason] += int(mask.sum())
            self.df = self.df.copy()
            self.df.loc[mask, column] = None

    def result(self, clean: pd.DataFrame) -> IngestResult:
        q = (pd.concat(self.rejected, ignore_index=True) if self.rejected
             else pd.DataFrame(columns=[*self.df.columns, "quarantine_reason", "action"]))
        q = q.drop(columns="source_error", errors="ignore")  # == quarantine_reason where set
        if self.source_file is not None:
            q["source_file"] = self.source_file
        numbers = [c for c in ("row_number", "source_line") if c in q.columns]
        # quarantine tables must be writable whatever the offending values were: store them as text
        # (bytes as their repr, lone surrogates backslash-escaped: parquet strings must be valid UTF-8)
        q = q.astype({c: object for c in q.columns if c not in numbers})
        for c in q.columns:
            if c not in numbers:
                q[c] = q[c].map(_safe_text).astype("string")
        if "source_line" in q.columns:
            q["source_line"] = pd.to_numeric(q["source_line"]).astype("Int64")
        q.columns = [str(c) for c in q.columns]
        res = IngestResult(self.table, clean.reset_index(drop=True), q, self.rows_in,
                           dict(self.reasons), dict(self.repaired), self.columns_dropped)
        res.check_accounting()
        return res


def _safe_text(v) -> str | None:
    """Any cell value -> a valid UTF-8 ``str`` (None for missing) for the quarantine table."""
    if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
        return None
    if isinstance(v, bytes):
        return repr(v)
    if not isinstance(v, str):
        v = str(v.tolist() if isinstance(v, np.ndarray) else v)
    return v.encode("utf-8", "backslashreplace").decode("utf-8")


def _require_columns(table: str, df: pd.DataFrame, required: list[str], source: str) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise SchemaError(f"{source}: table {table!r} is missing required column(s) {missing}; "
                          f"found {list(df.columns)}")


def _to_int64(q: _Quarantine, column: str) -> None:
    """Coerce ``column`` to int64; rows whose value is missing, non-integral or non-positive are rejected."""
    q.reject(q.df[column].isna().to_numpy(), f"{column} missing")
    num = pd.to_numeric(q.df[column], errors="coerce")
    q.reject(num.isna(), f"{column} not a number")
    num = pd.to_numeric(q.df[column], errors="coerce")
    q.reject((num % 1 != 0), f"{column} not an integer")
    num = pd.to_numeric(q.df[column], errors="coerce")
    q.reject(num <= 0, f"{column} not positive")
    q.reject(_beyond_int64(q.df[column]), f"{column} beyond int64")
    q.df = q.df.assign(**{column: pd.to_numeric(q.df[column]).astype("int64")})


#: the largest id an int64 column (Feast entity key, parquet, ONNX input) holds
INT64_MAX = 2**63 - 1


def _beyond_int64(values: pd.Series) -> np.ndarray:
    """Which (integral, positive) values exceed :data:`INT64_MAX`, decided exactly: a float cannot tell
    2**63 - 1 from 2**63, and ``astype("int64")`` of a larger value wraps to a negative id."""
    num = pd.to_numeric(values, errors="coerce").astype(float)
    near = (num >= 2.0**62).to_numpy()  # only these can overflow; the exact test is per value
    out = np.zeros(len(values), dtype=bool)
    for k in np.flatnonzero(near):
        v = values.iloc[k]
        exact = int(v) if isinstance(v, (int, np.integer)) else int(Decimal(str(v).strip()))
        out[k] = exact > INT64_MAX
    return out


def parse_utc(raw: pd.Series, where: str) -> pd.Series:
    """Parse timestamps as UTC: integers are unix seconds, naive datetimes are taken as UTC (documented
    assumption), anything unparseable becomes NaT (the caller quarantines it).

    Raises:
        SchemaError: the column is boolean (``where`` names the file/table/column).
    """
    if pd.api.types.is_bool_dtype(raw):
        raise SchemaError(f"{where} has dtype bool; expected timestamps (ISO-8601 strings, datetimes, or unix seconds)")
    if pd.api.types.is_numeric_dtype(raw):
        return pd.to_datetime(raw, unit="s", utc=True, errors="coerce")
    return pd.to_datetime(raw, utc=True, errors="coerce", format="mixed")


def _to_utc(q: _Quarantine, column: str, now: pd.Timestamp | None) -> None:
    """Parse ``column`` as UTC timestamps. Integers are unix seconds; naive datetimes are taken as UTC
    (documented assumption). Unparseable and future (> ``now``) timestamps are rejected."""
    ts = parse_utc(q.df[column], f"{q.source}: table {q.table!r} column {column!r}")
    q.df = q.df.assign(**{column: ts})
    q.reject(ts.isna().to_numpy(), f"{column} missing or unparseable")
    if now is not None:
        q.reject((q.df[column] > now).to_numpy(), f"{column} in the future")
    q.df = q.df.assign(**{column: q.df[column].astype("datetime64[us, UTC]")})


def _dedupe(q: _Quarantine, keys: list[str], reason: str) -> None:
    q.reject(q.df.duplicated(subset=keys, keep="first").to_numpy(), reason)


def check_image(path: str, root: Path | None) -> str | None:
    """Return ``None`` if ``path`` is a readable image inside ``root``, else the reason it is not.

    ``path`` is a local path (relative paths are taken relative to ``root``) or a ``file://`` URI. The file is
    opened through :func:`ppm_platform.data.item_content.open_catalog_image`, the one function every image
    reader uses (ingest, encoders, fine-tuning, the new-item path). Checks, in order: URI scheme other than
    ``file`` (e.g. ``http``: not fetched), escapes the catalog root (path traversal with ``../``, an
    absolute path elsewhere, or a symlink pointing out; the path is resolved first), missing file (or a
    folder), zero bytes, too many pixels (decompression bomb: more than :data:`MAX_IMAGE_PIXELS` pixels,
    read from the header before any pixel is decoded; Pillow's own ``DecompressionBombError`` counts the
    same), not decodable (corrupt/truncated: the pixels are decoded). Reasons are fixed strings so they
    count per category.
    """
    try:
        with open_catalog_image(path, root) as im:
            im.verify()
        with open_catalog_image(path, root) as im:  # verify() does not decode pixels; load() catches truncation
            im.load()
    except ImageRefusedError as e:
        return e.reason
    except Exception as e:  # noqa: BLE001 - any decoder error means the same thing here
        return f"image not decodable ({type(e).__name__})"
    return None


def _decode_title(v):
    """``bytes`` -> str (UTF-8) or the sentinel ``_BAD_TEXT``; str with lone surrogates -> ``_BAD_TEXT``;
    missing -> None; anything else (numbers) -> its ``str``."""
    if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
        return None
    if isinstance(v, (bytes, bytearray)):
        try:
            return bytes(v).decode("utf-8")
        except UnicodeDecodeError:
            return _BAD_TEXT
    v = str(v)
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        return _BAD_TEXT
    return v


_BAD_TEXT = object()
_BAD_LIST = object()


def _categories(v):
    """``items.categories`` cell -> list[str]. Lists/tuples/arrays as they are; a string is ``|``-separated
    (the CSV convention of :mod:`ppm_platform.data.loaders`); missing -> ``[]``; anything else -> ``_BAD_LIST``."""
    if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
        return []
    if isinstance(v, str):
        return [c for c in v.split("|") if c]
    if isinstance(v, (list, tuple, np.ndarray)):
        return [str(x) for x in v if x is not None]
    return _BAD_LIST


def validate_items(df: pd.DataFrame, catalog_root: Path | None = None, source: str = "items",
                   check_images: bool = True) -> IngestResult:
    """Validate an ``items`` table (schema :data:`schemas.ITEMS`).

    Rejected rows: missing / non-numeric / non-integer / non-positive ``item_id``; duplicate ``item_id``
    (the first occurrence is kept, later ones, conflicting or not, are quarantined); title missing, empty,
    whitespace-only, over :data:`MAX_TITLE_CHARS` chars or not valid UTF-8; ``categories`` neither a list
    nor a ``|``-separated string; unparseable ``created_at``. Repaired rows (kept, ``image_uri`` nulled, see
    :func:`check_image`): unsupported URI scheme, path escaping ``catalog_root``, missing / empty / oversized
    / undecodable image; a kept relative image path is made absolute against ``catalog_root``. Optional
    columns default: no ``image_uri`` -> no image, no ``categories`` -> ``[]``,
    no ``created_at`` -> the epoch. Unknown columns are dropped and listed in ``columns_dropped``.

    Raises:
        SchemaError: a required column (``item_id``, ``title``) is missing, or ``created_at`` is boolean.
    """
    _require_columns("items", df, ["item_id", "title"], source)
    df = df.copy()
    known = [f.name for f in schemas.ITEMS]
    q = _Quarantine("items", df, known, source)
    if "image_uri" not in q.df:
        q.df["image_uri"] = None
    if "categories" not in q.df:
        q.df["categories"] = [[] for _ in range(len(q.df))]
    if "created_at" not in q.df:
        q.df["created_at"] = pd.Timestamp("1970-01-01", tz="UTC")
    _to_int64(q, "item_id")
    _dedupe(q, ["item_id"], "duplicate item_id")
    title = q.df["title"].map(_decode_title)
    q.reject(np.array([t is _BAD_TEXT for t in title], dtype=bool), "title not valid UTF-8")
    title = q.df["title"].map(_decode_title).astype("string")
    q.reject((title.isna() | (title.str.strip() == "")).to_numpy(), "title empty")
    title = q.df["title"].map(_decode_title).astype("string").str.strip()
    q.reject((title.str.len() > MAX_TITLE_CHARS).to_numpy(), f"title longer than {MAX_TITLE_CHARS} chars")
    cats = q.df["categories"].map(_categories)
    q.reject(np.array([c is _BAD_LIST for c in cats], dtype=bool), "categories not a list")
    q.df = q.df.assign(title=q.df["title"].map(_decode_title).astype(str).str.strip(),
                       categories=q.df["categories"].map(_categories))
    _to_utc(q, "created_at", None)
    q.df = q.df.assign(image_uri=[None if (u is None or u is pd.NA or (isinstance(u, float) and np.isnan(u))
                                           or str(u).strip() == "") else str(u) for u in q.df["image_uri"]])
    if check_images:
        reasons = [None if u is None else check_image(u, catalog_root) for u in q.df["image_uri"]]
        for r in sorted({r for r in reasons if r}):
            q.repair(np.array([x == r for x in reasons]), "image_uri", r)
    if catalog_root is not None:  # relative paths are relative to the catalog root, not to the cwd
        q.df = q.df.assign(image_uri=[u if u is None or "://" in u or Path(u).is_absolute()
                                      else str(Path(catalog_root).resolve() / u) for u in q.df["image_uri"]])
    clean = q.df[known]
    return q.result(clean)


def validate_users(df: pd.DataFrame, source: str = "users") -> IngestResult:
    """Validate a ``users`` table (:data:`schemas.USERS`): bad/duplicate ``user_id`` rows are rejected;
    side features are optional (missing -> null); a non-numeric ``age`` is nulled (counted in
    ``fields_repaired``).

    Raises:
        SchemaError: ``user_id`` is missing.
    """
    _require_columns("users", df, ["user_id"], source)
    df = df.copy()
    for c in ("age", "gender", "occupation"):
        if c not in df:
            df[c] = None
    q = _Quarantine("users", df, [f.name for f in schemas.USERS], source)
    _to_int64(q, "user_id")
    _dedupe(q, ["user_id"], "duplicate user_id")
    age = pd.to_numeric(q.df["age"], errors="coerce")
    q.repair((q.df["age"].notna() & age.isna()).to_numpy(), "age", "age not a number")
    clean = q.df.assign(age=pd.to_numeric(q.df["age"], errors="coerce").astype("Int64"))
    return q.result(clean[[f.name for f in schemas.USERS]])


def validate_interactions(df: pd.DataFrame, known_users: set[int] | None, known_items: set[int] | None,
                          now: pd.Timestamp | None = None, source: str = "interactions") -> IngestResult:
    """Validate an ``interactions`` (impressions) table (:data:`schemas.INTERACTIONS`).

    Rejected rows: bad ids, unknown user/item (when the sets are given), missing/unparseable/future
    (after ``now``, default: the current time) timestamps, labels missing or not in {0, 1} (``"yes"``,
    ``2``, ``0.5``), ``order`` without ``click``, duplicate events (same user, item, timestamp: the first
    is kept, whatever the labels). Out-of-order rows are fine: the output is sorted by time. A missing
    ``order`` column means no orders (all 0).

    Raises:
        SchemaError: a required column is missing, or ``event_timestamp`` is boolean.
    """
    _require_columns("interactions", df, ["user_id", "item_id", "event_timestamp", "click"], source)
    df = df.copy()
    if "order" not in df:
        df["order"] = 0
    q = _Quarantine("interactions", df, [f.name for f in schemas.INTERACTIONS], source)
    _to_int64(q, "user_id")
    _to_int64(q, "item_id")
    if known_users is not None:
        q.reject(~q.df["user_id"].isin(known_users), "unknown user_id")
    if known_items is not None:
        q.reject(~q.df["item_id"].isin(known_items), "unknown item_id")
    _to_utc(q, "event_timestamp", now if now is not None else pd.Timestamp.now(tz="UTC"))
    for label in ("click", "order"):
        q.reject(q.df[label].isna().to_numpy(), f"{label} label missing")
        v = pd.to_numeric(q.df[label], errors="coerce")
        q.reject(~v.isin([0, 1]), f"{label} label not 0/1")
        q.df = q.df.assign(**{label: pd.to_numeric(q.df[label]).astype("int8")})
    q.reject((q.df["order"] == 1) & (q.df["click"] == 0), "order without click")
    _dedupe(q, ["user_id", "item_id", "event_timestamp"], "duplicate event")
    clean = q.df.sort_values(["event_timestamp", "user_id", "item_id"], kind="stable")
    return q.result(clean[[f.name for f in schemas.INTERACTIONS]])


def validate_queries(df: pd.DataFrame, known_items: set[int] | None, source: str = "queries") -> IngestResult:
    """Validate a ``queries`` table (:data:`schemas.QUERIES`): empty query text, bad/unknown item ids and
    bad timestamps are rejected."""
    _require_columns("queries", df, ["query", "item_id"], source)
    df = df.copy()
    if "event_timestamp" not in df:
        df["event_timestamp"] = pd.Timestamp("1970-01-01", tz="UTC")
    q = _Quarantine("queries", df, [f.name for f in schemas.QUERIES], source)
    text = q.df["query"].astype("string")
    q.reject(text.isna() | (text.str.strip() == ""), "query empty")
    q.df = q.df.assign(query=q.df["query"].astype(str).str.strip())
    _to_int64(q, "item_id")
    if known_items is not None:
        q.reject(~q.df["item_id"].isin(known_items), "unknown item_id")
    _to_utc(q, "event_timestamp", pd.Timestamp.now(tz="UTC") + dt.timedelta(days=1))
    return q.result(q.df[[f.name for f in schemas.QUERIES]])


# ---- data-quality figures of a written table (used by the Dagster asset checks) ----------------------------------
def table_quality(path: Path, schema, keys: list[str] | None = None, non_null: list[str] | None = None,
                  vectors: dict[str, bool] | None = None, batch_rows: int = 16_384) -> dict:
    """Quality figures of one parquet table written by the pipeline.

    Args:
        path: the parquet file, or a day-partitioned folder of them (:func:`ppm_platform.io.write_day_partitioned`).
        schema: the ``pyarrow.Schema`` contract (``data/schemas.py``) the file must have exactly.
        keys: columns that must be unique together (e.g. ``["user_id", "event_timestamp"]``).
        non_null: columns that must have no null value.
        vectors: list<float> columns to check -> whether every row must be non-zero (``False``: only finite;
            e.g. ``image_emb`` is all zeros for an item without image).
        batch_rows: rows read at a time for the null and vector checks (memory: one batch, not the table;
            the duplicate-key check reads the key columns whole).

    Returns:
        ``{"rows", "schema_ok", "schema_diff", "duplicate_keys", "null_counts": {col: n},
        "vectors": {col: {"nonfinite_rows", "zero_rows", "min_norm", "max_norm"}}, "ok", "problems"}``;
        ``ok`` is True when the schema matches, no key is duplicated, no listed column has nulls and every
        vector row is finite (and non-zero where required). ``problems`` lists what failed, in words.

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    import pyarrow.compute as pc
    import pyarrow.dataset as pds

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: table not written")
    data = pds.dataset(path, format="parquet")  # a file, or a day-partitioned folder (hidden temp files ignored)
    problems: list[str] = []
    schema_ok = data.schema.remove_metadata().equals(schema.remove_metadata())
    diff = "" if schema_ok else f"expected {schema.to_string(show_schema_metadata=False)!r}, got " \
                                f"{data.schema.to_string(show_schema_metadata=False)!r}"
    if not schema_ok:
        problems.append("schema differs from data/schemas.py")
    rows = data.count_rows()
    dup = 0
    if keys and rows:  # the key columns only (small), not the table
        dup = int(data.to_table(columns=keys).to_pandas().duplicated().sum())
        if dup:
            problems.append(f"{dup} duplicate key(s) on {keys}")
    present = set(data.schema.names)
    null_cols = [c for c in (non_null or []) if c in present]
    vectors = {c: nz for c, nz in (vectors or {}).items() if c in present}
    nulls = dict.fromkeys(null_cols, 0)
    acc = {c: {"nonfinite_rows": 0, "zero_rows": 0, "min_norm": None, "max_norm": None} for c in vectors}
    # one batch at a time, so memory holds one batch's vectors as float64, not the whole table's
    for batch in data.to_batches(columns=sorted(set(null_cols) | set(vectors)), batch_size=batch_rows):
        for c in null_cols:
            nulls[c] += int(batch.column(c).null_count)
        for c in vectors:
            col = batch.column(c)
            n = len(col)
            lengths = pc.list_value_length(col).fill_null(0).to_numpy(zero_copy_only=False)
            flat = pc.list_flatten(col).to_numpy(zero_copy_only=False).astype(np.float64)
            row_of = np.repeat(np.arange(n), lengths)
            finite = np.isfinite(flat)
            norms = np.sqrt(np.bincount(row_of, weights=np.where(finite, flat, 0.0) ** 2, minlength=n))
            a = acc[c]
            a["nonfinite_rows"] += int(len(np.unique(row_of[~finite])))
            a["zero_rows"] += int(((norms == 0) | (lengths == 0)).sum())
            if n:
                lo, hi = float(norms.min()), float(norms.max())
                a["min_norm"] = lo if a["min_norm"] is None else min(a["min_norm"], lo)
                a["max_norm"] = hi if a["max_norm"] is None else max(a["max_norm"], hi)
    for c, n in nulls.items():
        if n:
            problems.append(f"{n} null(s) in {c}")
    for c, must_be_nonzero in vectors.items():
        if acc[c]["nonfinite_rows"]:
            problems.append(f"{acc[c]['nonfinite_rows']} row(s) of {c} not finite")
        if must_be_nonzero and acc[c]["zero_rows"]:
            problems.append(f"{acc[c]['zero_rows']} row(s) of {c} with zero norm")
    return {"rows": rows, "schema_ok": schema_ok, "schema_diff": diff, "duplicate_keys": dup,
            "null_counts": nulls, "vectors": acc, "ok": not problems, "problems": problems}


def counter_consistency(path: Path, entity: str, windows_days: tuple[int, ...], batch_rows: int = 65_536) -> dict:
    """Consistency of a counter table (``item_stats`` / ``user_stats``, :mod:`ppm_platform.features.counters`),
    read in batches: per window ``impressions >= clicks >= orders >= 0``; every window's count <= the all-time
    count; smoothed rates finite and in [0, 1].

    Returns:
        ``{"rows", "violations", "by_rule": {rule: rows violating it}}``.

    Raises:
        FileNotFoundError: ``path`` does not exist. KeyError: an unknown entity.
    """
    import numpy as np
    import pyarrow.dataset as pds

    from ppm_platform.data.schemas import COUNTER_ENTITIES, counter_rate_columns, counter_suffixes

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: table not written")
    prefix = COUNTER_ENTITIES[entity][1]
    rates = counter_rate_columns(prefix, windows_days)
    by_rule: dict[str, int] = {}
    rows = bad_rows = 0

    def add(rule: str, mask) -> None:
        by_rule[rule] = by_rule.get(rule, 0) + int(mask.sum())

    for batch in pds.dataset(path, format="parquet").to_batches(batch_size=batch_rows):
        df = batch.to_pandas()
        rows += len(df)
        bad = np.zeros(len(df), bool)
        for s in counter_suffixes(windows_days):
            n, c, o = (df[f"{prefix}_{f}{s}"].to_numpy() for f in ("impressions", "clicks", "orders"))
            for rule, m in ((f"impressions{s} >= clicks{s}", n < c), (f"clicks{s} >= orders{s} >= 0", (c < o) | (o < 0))):
                add(rule, m)
                bad |= m
            if s:
                m = n > df[f"{prefix}_impressions"].to_numpy()
                add(f"impressions{s} <= impressions", m)
                bad |= m
        for col in rates:
            v = df[col].to_numpy(dtype=float)
            m = ~np.isfinite(v) | (v < 0) | (v > 1)
            add(f"{col} in [0, 1]", m)
            bad |= m
        bad_rows += int(bad.sum())
    return {"rows": rows, "violations": bad_rows, "by_rule": by_rule}
