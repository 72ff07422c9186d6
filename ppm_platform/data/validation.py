"""Validation of the canonical tables with quarantine and row accounting (DESIGN.md §2).

Every ingest returns an :class:`IngestResult` whose counts satisfy
``rows_in == rows_out + rows_quarantined``; each quarantined row keeps its original values plus a
``quarantine_reason`` (and the source ``row_number``), so nothing is silently dropped. Field-level repairs
that keep the row (an item whose poster is missing keeps the item, without image) are counted in
``fields_repaired`` and also written to the quarantine table with ``action = "field_nulled"``.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ppm_platform.data import schemas

#: Pillow's decompression-bomb guard: images above this many pixels are rejected (about 8k x 8k).
MAX_IMAGE_PIXELS = 64_000_000
MAX_TITLE_CHARS = 1_000


@dataclass
class IngestResult:
    """Outcome of validating one table.

    Attributes:
        table: canonical table name (``items``, ``users``, ``interactions``, ``queries``).
        clean: rows that passed, in the canonical schema.
        quarantined: rejected rows: original columns + ``row_number`` + ``quarantine_reason`` + ``action``.
        reasons: count of quarantined rows per reason.
        fields_repaired: count of kept rows with a field nulled, per reason.
    """

    table: str
    clean: pd.DataFrame
    quarantined: pd.DataFrame
    rows_in: int
    reasons: dict[str, int] = field(default_factory=dict)
    fields_repaired: dict[str, int] = field(default_factory=dict)

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
                "fields_repaired": dict(self.fields_repaired)}


class SchemaError(ValueError):
    """A table is structurally unusable (missing required column, wrong dtype): raised, not quarantined."""


class _Quarantine:
    """Collects rejected rows by reason while a validator filters a frame step by step."""

    def __init__(self, table: str, df: pd.DataFrame):
        self.table = table
        self.rows_in = len(df)
        self.df = df.assign(row_number=np.arange(len(df)))
        self.rejected: list[pd.DataFrame] = []
        self.reasons: Counter = Counter()
        self.repaired: Counter = Counter()

    def reject(self, mask: pd.Series | np.ndarray, reason: str) -> None:
        mask = np.asarray(mask, dtype=bool)
        if mask.any():
            bad = self.df[mask].copy()
            bad["quarantine_reason"] = reason
            bad["action"] = "row_rejected"
            self.rejected.append(bad)
            self.reasons[reason] += int(mask.sum())
            self.df = self.df[~mask]

    def repair(self, mask: pd.Series | np.ndarray, column: str, reason: str) -> None:
        """Null ``column`` on the rows in ``mask``; record them (the rows stay)."""
        mask = np.asarray(mask, dtype=bool)
        if mask.any():
            rec = self.df[mask].copy()
            rec["quarantine_reason"] = reason
            rec["action"] = "field_nulled"
            self.rejected.append(rec)
            self.repaired[reason] += int(mask.sum())
            self.df = self.df.copy()
            self.df.loc[mask, column] = None

    def result(self, clean: pd.DataFrame) -> IngestResult:
        q = (pd.concat(self.rejected, ignore_index=True) if self.rejected
             else pd.DataFrame(columns=[*self.df.columns, "quarantine_reason", "action"]))
        # quarantine tables must be writable whatever the offending values were: store them as text
        q = q.astype({c: "string" for c in q.columns if c not in ("row_number",)})
        res = IngestResult(self.table, clean.reset_index(drop=True), q, self.rows_in,
                           dict(self.reasons), dict(self.repaired))
        res.check_accounting()
        return res


def _require_columns(table: str, df: pd.DataFrame, required: list[str], source: str) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise SchemaError(f"{source}: table {table!r} is missing required column(s) {missing}; "
                          f"found {list(df.columns)}")


def _to_int64(q: _Quarantine, column: str) -> None:
    """Coerce ``column`` to int64; rows whose value is missing, non-integral or non-positive are rejected."""
    num = pd.to_numeric(q.df[column], errors="coerce")
    q.reject(num.isna(), f"{column} missing or not a number")
    num = pd.to_numeric(q.df[column], errors="coerce")
    q.reject((num % 1 != 0), f"{column} not an integer")
    num = pd.to_numeric(q.df[column], errors="coerce")
    q.reject(num <= 0, f"{column} not positive")
    q.df = q.df.assign(**{column: pd.to_numeric(q.df[column]).astype("int64")})


def _to_utc(q: _Quarantine, column: str, now: pd.Timestamp | None) -> None:
    """Parse ``column`` as UTC timestamps. Integers are unix seconds; naive datetimes are taken as UTC
    (documented assumption). Unparseable and future (> ``now``) timestamps are rejected."""
    raw = q.df[column]
    if pd.api.types.is_numeric_dtype(raw):
        ts = pd.to_datetime(raw, unit="s", utc=True, errors="coerce")
    else:
        ts = pd.to_datetime(raw, utc=True, errors="coerce", format="mixed")
    q.df = q.df.assign(**{column: ts})
    q.reject(ts.isna().to_numpy(), f"{column} missing or unparseable")
    if now is not None:
        q.reject((q.df[column] > now).to_numpy(), f"{column} in the future")
    q.df = q.df.assign(**{column: q.df[column].astype("datetime64[us, UTC]")})


def _dedupe(q: _Quarantine, keys: list[str], reason: str) -> None:
    q.reject(q.df.duplicated(subset=keys, keep="first").to_numpy(), reason)


def check_image(path: str, root: Path | None) -> str | None:
    """Return ``None`` if ``path`` is a readable image inside ``root``, else the reason it is not.

    Checks, in order: escapes the catalog root (path traversal), missing file, zero bytes, not decodable
    (corrupt/truncated), too many pixels (decompression bomb, :data:`MAX_IMAGE_PIXELS`).
    """
    from PIL import Image

    p = Path(path)
    if root is not None:
        root = root.resolve()
        if not p.is_absolute():
            p = root / p
        try:
            p.resolve().relative_to(root)
        except ValueError:
            return "image path escapes the catalog root"
    if not p.is_file():
        return "image file missing"
    if p.stat().st_size == 0:
        return "image file empty"
    try:
        with Image.open(p) as im:
            w, h = im.size
            if w * h > MAX_IMAGE_PIXELS:
                return f"image too large ({w}x{h} px)"
            im.verify()
        with Image.open(p) as im:  # verify() does not decode pixels; load() catches truncation
            im.load()
    except Exception as e:  # noqa: BLE001 - any decoder error means the same thing here
        return f"image not decodable ({type(e).__name__})"
    return None


def validate_items(df: pd.DataFrame, catalog_root: Path | None = None, source: str = "items",
                   check_images: bool = True) -> IngestResult:
    """Validate an ``items`` table (schema :data:`schemas.ITEMS`).

    Rejected rows: bad/duplicate ``item_id``, empty or whitespace-only title, title over
    :data:`MAX_TITLE_CHARS`, unparseable ``created_at``. Repaired rows (kept, image nulled): image path
    escaping ``catalog_root``, missing / empty / corrupt / oversized image.

    Raises:
        SchemaError: a required column is missing.
    """
    _require_columns("items", df, ["item_id", "title"], source)
    df = df.copy()
    if "image_uri" not in df:
        df["image_uri"] = None
    if "categories" not in df:
        df["categories"] = [[] for _ in range(len(df))]
    if "created_at" not in df:
        df["created_at"] = pd.Timestamp("1970-01-01", tz="UTC")
    q = _Quarantine("items", df)
    _to_int64(q, "item_id")
    _dedupe(q, ["item_id"], "duplicate item_id")
    title = q.df["title"].astype("string")
    q.reject(title.isna() | (title.str.strip() == ""), "title empty")
    q.reject(q.df["title"].astype("string").str.len() > MAX_TITLE_CHARS, f"title longer than {MAX_TITLE_CHARS} chars")
    q.df = q.df.assign(title=q.df["title"].astype(str).str.strip(),
                       categories=q.df["categories"].map(lambda c: [str(x) for x in c] if c is not None else []))
    _to_utc(q, "created_at", None)
    if check_images:
        reasons = [None if (u is None or (isinstance(u, float) and np.isnan(u)) or u == "")
                   else check_image(str(u), catalog_root) for u in q.df["image_uri"]]
        for r in sorted({r for r in reasons if r}):
            q.repair(np.array([x == r for x in reasons]), "image_uri", r)
    clean = q.df[[f.name for f in schemas.ITEMS]]
    return q.result(clean)


def validate_users(df: pd.DataFrame, source: str = "users") -> IngestResult:
    """Validate a ``users`` table (:data:`schemas.USERS`): bad/duplicate ``user_id`` rows are rejected;
    side features are optional (missing -> null)."""
    _require_columns("users", df, ["user_id"], source)
    df = df.copy()
    for c in ("age", "gender", "occupation"):
        if c not in df:
            df[c] = None
    q = _Quarantine("users", df)
    _to_int64(q, "user_id")
    _dedupe(q, ["user_id"], "duplicate user_id")
    clean = q.df.assign(age=pd.to_numeric(q.df["age"], errors="coerce").astype("Int64"))
    return q.result(clean[[f.name for f in schemas.USERS]])


def validate_interactions(df: pd.DataFrame, known_users: set[int] | None, known_items: set[int] | None,
                          now: pd.Timestamp | None = None, source: str = "interactions") -> IngestResult:
    """Validate an ``interactions`` (impressions) table (:data:`schemas.INTERACTIONS`).

    Rejected rows: bad ids, unknown user/item (when the sets are given), missing/unparseable/future
    timestamps, labels missing or not in {0, 1}, ``order`` without ``click``, exact duplicate events
    (same user, item, timestamp). Out-of-order rows are fine: the output is sorted by time.

    Raises:
        SchemaError: a required column is missing.
    """
    _require_columns("interactions", df, ["user_id", "item_id", "event_timestamp", "click"], source)
    df = df.copy()
    if "order" not in df:
        df["order"] = 0
    q = _Quarantine("interactions", df)
    _to_int64(q, "user_id")
    _to_int64(q, "item_id")
    if known_users is not None:
        q.reject(~q.df["user_id"].isin(known_users), "unknown user_id")
    if known_items is not None:
        q.reject(~q.df["item_id"].isin(known_items), "unknown item_id")
    _to_utc(q, "event_timestamp", now if now is not None else pd.Timestamp.now(tz="UTC"))
    for label in ("click", "order"):
        v = pd.to_numeric(q.df[label], errors="coerce")
        q.reject(v.isna(), f"{label} label missing")
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
    q = _Quarantine("queries", df)
    text = q.df["query"].astype("string")
    q.reject(text.isna() | (text.str.strip() == ""), "query empty")
    q.df = q.df.assign(query=q.df["query"].astype(str).str.strip())
    _to_int64(q, "item_id")
    if known_items is not None:
        q.reject(~q.df["item_id"].isin(known_items), "unknown item_id")
    _to_utc(q, "event_timestamp", pd.Timestamp.now(tz="UTC") + dt.timedelta(days=1))
    return q.result(q.df[[f.name for f in schemas.QUERIES]])
