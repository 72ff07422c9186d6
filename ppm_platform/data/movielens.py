"""MovieLens-100K -> canonical tables (DESIGN.md §2).

Mapping: ``u.data`` -> interactions with ``click = rating >= 4`` and ``order = rating == 5`` (a documented
proxy: the strongest positive signal); ``u.item`` (latin-1) -> items with title "Title (year)", categories =
genres, ``image_uri`` = ``posters/{item_id}.jpg`` where present, ``created_at`` = release date, but never
later than the item's first rating (a handful of ratings predate the listed release date; an item is in
the catalog by the time it is rated); ``u.user`` -> users; ``tags_ml_latest_small.tsv`` -> queries
(free-text tags as query text).

Raw fields are checked against the source format *before* anything is derived from them (a derived
column would hide the broken line): every line is split as text (no type guessing), and a line that breaks its file's format keeps
its place in the frame with the reason in ``source_error``, its 1-based line number in ``source_line`` and
its raw text in ``source_record`` (``df.attrs["source_file"]`` names the file);
:mod:`ppm_platform.data.validation` quarantines such rows first, with that reason. Labels (``click``,
``order``) and ``created_at`` are derived from the rows that passed only. The checks per file:

- every file: the field count of the line (``"wrong field count (expected N)"``); blank lines hold no record
  and are skipped;
- ``u.data``: ``user_id``/``item_id`` decimal integers (``"<col> not an integer"``, ``"<col> beyond int64"``),
  rating a number (``"rating not a number"``) in 1..5 (``"rating not in 1..5"``), unix seconds a
  non-negative integer (``"unix timestamp negative"``, ``"unix timestamp not an integer"``,
  ``"unix timestamp out of range"``);
- ``u.item`` (latin-1): UTF-8 multi-byte sequences in the line (a UTF-8 editor's save: decoding it as latin-1
  gives mojibake such as ``CafÃ©``; ``"UTF-8 bytes in latin-1 u.item (mojibake)"``; none of the 9 real
  non-ASCII lines matches), ``item_id`` as above, genre flags 0/1 (``"genre flag not 0/1"``);
- ``u.user``: ``user_id`` as above (the age is checked by validation: non-numeric -> nulled, recorded);
- ``tags_ml_latest_small.tsv`` (UTF-8, header ``item_id, tag, timestamp``): ``"not valid UTF-8"``, ``item_id``
  and ``timestamp`` as above.

Ids that pass (any sign; zero, negative, unknown ids are validation's to quarantine) are ``Int64`` (``<NA>``
where the id itself failed); timestamps are ``NaT`` where the field failed.

The dataset's license forbids redistribution: it is read from ``Settings.data_dir`` and never copied into
the repository.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ppm_platform.data.loaders import subset_mask
from ppm_platform.data.schemas import MOVIELENS_GENRES

#: fields of a ``u.data`` line (tab-separated): user id, item id, rating, unix seconds
U_DATA_FIELDS = ("user_id", "item_id", "rating", "unix_ts")
#: fields of a ``u.item`` line (``|``-separated): 5 then the 19 genre flags
U_ITEM_FIELDS = ("item_id", "title", "release_date", "video_release_date", "imdb_url", *MOVIELENS_GENRES)
#: fields of a ``u.user`` line (``|``-separated)
U_USER_FIELDS = ("user_id", "age", "gender", "occupation", "zip")
TAGS_FILE = "tags_ml_latest_small.tsv"
TAGS_FIELDS = ("item_id", "tag", "timestamp")

_INT = re.compile(r"[+-]?[0-9]+")
# a valid UTF-8 multi-byte sequence; in real latin-1 text it needs an accented capital followed by a C1
# control or by punctuation such as "©" (no real u.item line has one)
_UTF8_SEQ = re.compile(rb"[\xC2-\xDF][\x80-\xBF]|[\xE0-\xEF][\x80-\xBF]{2}|[\xF0-\xF4][\x80-\xBF]{3}")
_INT64_MAX = 2**63 - 1
#: the last unix second a ``datetime64[ns]`` holds (2262-04-11)
MAX_UNIX_SECONDS = int(pd.Timestamp.max.timestamp())


def _split_lines(path: Path, sep: str, names: tuple[str, ...], encoding: str, header: bool = False) -> pd.DataFrame:
    """Split ``path`` into one row per non-blank line: the fields as text (``None`` on a line with the wrong
    field count) plus ``source_line`` (1-based), ``source_error`` and ``source_record`` (the decoded line; the
    readers keep it on failed lines only, see :func:`_provenance`).

    Args:
        encoding: ``"latin-1"`` (every byte decodes; a line holding UTF-8 multi-byte sequences is flagged as
            mojibake), ``"ascii"`` (decoded as latin-1: a stray byte then fails the field checks) or
            ``"utf-8"`` (undecodable lines flagged).
        header: the first line names the fields; it must list ``names`` (in any order).

    Raises:
        SchemaError: ``header`` is set and the header line does not list ``names`` (the message names the file).
    """
    from ppm_platform.data.validation import SchemaError

    data = path.read_bytes()
    bad_text: dict[int, str] = {}  # 0-based line -> reason found while decoding
    if encoding == "utf-8":
        try:
            lines = data.decode("utf-8").split("\n")
        except UnicodeDecodeError:  # decode line by line to name the bad ones
            lines = []
            for k, raw in enumerate(data.split(b"\n")):
                try:
                    lines.append(raw.decode("utf-8"))
                except UnicodeDecodeError:
                    lines.append(raw.decode("utf-8", "backslashreplace"))
                    bad_text[k] = "not valid UTF-8"
    else:  # latin-1: one char per byte, so the text splits into the same lines as the bytes
        lines = data.decode("latin-1").split("\n")
        if encoding == "latin-1":
            newlines = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == ord("\n"))
            for m in _UTF8_SEQ.finditer(data):
                bad_text.setdefault(int(np.searchsorted(newlines, m.start())),
                                    f"UTF-8 bytes in latin-1 {path.name} (mojibake)")
    if lines and lines[-1] == "":
        lines.pop()
    first, order = 1, list(range(len(names)))
    if header:
        got = lines[0].rstrip("\r").split(sep) if lines else []
        if sorted(got) != sorted(names):
            raise SchemaError(f"{path}: header {got} does not list the fields {list(names)}")
        order = [got.index(n) for n in names]
        first = 2
    # vectorized with Arrow's string kernels (100k lines of u.data in well under a second)
    text = pc.utf8_rtrim(pa.array(lines[first - 1:], type=pa.string()), characters="\r")
    numbers = np.arange(first, first + len(text), dtype=np.int64)
    errors = np.full(len(numbers), None, dtype=object)
    for k, reason in bad_text.items():
        if first - 1 <= k < first - 1 + len(numbers):
            errors[k - first + 1] = reason
    keep = _np(pc.not_equal(pc.utf8_trim_whitespace(text), ""))  # a blank line holds no record
    text, numbers, errors = text.filter(pa.array(keep)), numbers[keep], errors[keep]
    n = len(names)
    parts = pc.split_pattern(text, sep)
    counted = _np(pc.list_value_length(parts)) == n
    good = parts.filter(pa.array(counted))
    df = pd.DataFrame(index=pd.RangeIndex(len(text)))
    for k, c in enumerate(names):
        col = np.full(len(text), None, dtype=object)
        col[counted] = _np(pc.list_element(good, order[k]))
        df[c] = col
    errors[~counted & pd.isna(errors)] = f"wrong field count (expected {n})"
    df["source_line"] = numbers
    df["source_error"] = pd.Series(errors, dtype=object, index=df.index)
    df["source_record"] = _np(text)  # kept on failed lines only (see _provenance)
    df.attrs["source_file"] = str(path)
    return df


def _flag(df: pd.DataFrame, mask, reason: str) -> None:
    """Set ``source_error = reason`` on the rows in ``mask`` that have no error yet (the first failed check
    of a line is its reason)."""
    m = df["source_error"].isna() & pd.Series(np.asarray(mask, dtype=bool), index=df.index)
    if m.any():
        df.loc[m, "source_error"] = reason


def _ok(df: pd.DataFrame) -> pd.Series:
    return df["source_error"].isna()


def _np(arr) -> np.ndarray:
    """An Arrow array as numpy (strings as ``object``, nulls as ``None``)."""
    return arr.to_numpy(zero_copy_only=False)


def _arrow(values: pd.Series) -> pa.Array:
    return pa.array(values.to_numpy(dtype=object), type=pa.string(), from_pandas=True)


def _matches(values: pd.Series | pa.Array, pattern: str) -> np.ndarray:
    """Whether each text value matches ``pattern`` in full (RE2 syntax; missing -> False)."""
    arr = values if isinstance(values, pa.Array) else _arrow(values)
    return _np(pc.fill_null(pc.match_substring_regex(arr, f"^(?:{pattern})$"), False)).astype(bool)


def _as_int64(arr: pa.Array, pattern: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(matches ``pattern`` (decimal digits with an optional sign), has at most 18 digits (fits int64 whatever
    they are), int64 values of the short ones (0 elsewhere))."""
    match = _matches(arr, pattern)
    digits = _np(pc.fill_null(pc.utf8_length(pc.replace_substring_regex(arr, r"^[+-]", "")), 0))
    short = match & (digits <= 18)
    unsigned = pc.replace_substring_regex(arr, r"^\+", "")
    values = _np(pc.cast(pc.if_else(pa.array(short), unsigned, "0"), pa.int64())).astype(np.int64)
    return match, short, values


def _int_field(df: pd.DataFrame, col: str) -> pd.Series:
    """Check ``col`` is a decimal integer within int64 (else flag the row) -> ``Int64`` (NA where it failed)."""
    arr = _arrow(df[col])
    match, short, values = _as_int64(arr, _INT.pattern)
    _flag(df, ~match & df[col].notna().to_numpy(), f"{col} not an integer")
    out = pd.array(values, dtype="Int64")
    out[~short] = pd.NA
    raw = df[col].to_numpy(dtype=object)
    for k in np.flatnonzero(match & ~short):  # 19+ digits: decided exactly, in Python ints
        v = int(raw[k])
        if -_INT64_MAX - 1 <= v <= _INT64_MAX:
            out[k] = v
    _flag(df, match & pd.isna(out), f"{col} beyond int64")
    return out


def _unix_field(df: pd.DataFrame, col: str) -> pd.Series:
    """Check ``col`` is non-negative unix seconds a timestamp can hold -> UTC timestamps (NaT where it failed)."""
    arr = _arrow(df[col])
    _flag(df, _matches(arr, r"-[0-9]+"), "unix timestamp negative")
    match, short, secs = _as_int64(arr, r"\+?[0-9]+")
    _flag(df, ~match & df[col].notna().to_numpy(), "unix timestamp not an integer")
    good = short & (secs <= MAX_UNIX_SECONDS)
    _flag(df, match & ~good, "unix timestamp out of range")
    ts = pd.Series(pd.to_datetime(np.where(good, secs, 0), unit="s", utc=True), index=df.index)
    return ts.where(good)


def _provenance(df: pd.DataFrame) -> dict[str, pd.Series]:
    """The provenance columns once every check ran: the raw text stays on the failed lines only."""
    bad = df["source_error"].notna()
    return {"source_line": df["source_line"], "source_error": df["source_error"],
            "source_record": df["source_record"].where(bad, None)}


def _framed(out: dict, src: pd.DataFrame) -> pd.DataFrame:
    frame = pd.DataFrame(out, index=src.index)
    frame.attrs["source_file"] = src.attrs["source_file"]
    return frame


def read_items(data_dir: Path) -> pd.DataFrame:
    """Read ``u.item`` (latin-1, ``|``-separated, 19 genre flags) into the raw items frame
    (item_id, title, image_uri, categories, release_date + provenance, see the module doc)."""
    df = _split_lines(data_dir / "u.item", "|", U_ITEM_FIELDS, "latin-1")
    item_id = _int_field(df, "item_id")
    genres = list(MOVIELENS_GENRES)
    flags = df[genres]
    binary = np.column_stack([_matches(flags[g], "[01]") for g in genres]).all(axis=1)
    _flag(df, ~binary & flags.notna().all(axis=1).to_numpy(), "genre flag not 0/1")
    ok = _ok(df).to_numpy()
    names = np.array(genres, dtype=object)
    on = flags.to_numpy() == "1"
    posters = data_dir / "posters"
    image_uri = [None] * len(df)
    categories: list = [None] * len(df)
    for k in np.flatnonzero(ok):  # derived from rows that passed only
        poster = posters / f"{item_id[k]}.jpg"
        image_uri[k] = str(poster) if poster.exists() else None
        categories[k] = list(names[on[k]])
    release = pd.to_datetime(df["release_date"].where(ok), format="%d-%b-%Y", utc=True, errors="coerce")
    return _framed({"item_id": item_id, "title": df["title"], "image_uri": image_uri, "categories": categories,
                    "release_date": release, **_provenance(df)}, df)


def read_users(data_dir: Path) -> pd.DataFrame:
    """Read ``u.user`` (user_id, age, gender, occupation; the zip code is not used) + provenance."""
    df = _split_lines(data_dir / "u.user", "|", U_USER_FIELDS, "ascii")
    user_id = _int_field(df, "user_id")
    side = {c: df[c].where(df[c] != "", None) for c in ("age", "gender", "occupation")}  # empty -> missing
    return _framed({"user_id": user_id, **side, **_provenance(df)}, df)


def read_interactions(data_dir: Path) -> pd.DataFrame:
    """Read ``u.data`` (tab-separated user, item, rating, unix seconds) as impressions with click/order labels,
    derived only from lines whose fields passed the format checks (``<NA>`` labels on the others)."""
    df = _split_lines(data_dir / "u.data", "\t", U_DATA_FIELDS, "ascii")
    user_id, item_id = _int_field(df, "user_id"), _int_field(df, "item_id")
    rating = pd.to_numeric(df["rating"], errors="coerce").astype("float64")
    _flag(df, rating.isna() & df["rating"].notna(), "rating not a number")
    _flag(df, rating.notna() & ~rating.isin([1, 2, 3, 4, 5]), "rating not in 1..5")
    ts = _unix_field(df, "unix_ts")
    bad = ~_ok(df)
    return _framed({
        "user_id": user_id, "item_id": item_id, "event_timestamp": ts,
        "click": (rating >= 4).astype("Int8").mask(bad),
        "order": (rating == 5).astype("Int8").mask(bad),
        **_provenance(df),
    }, df)


def read_queries(data_dir: Path) -> pd.DataFrame:
    """Read ``tags_ml_latest_small.tsv`` (item_id, tag, timestamp; UTF-8 with a header) as search queries for
    the tagged item (+ provenance); no file -> an empty frame."""
    path = data_dir / TAGS_FILE
    if not path.exists():
        return pd.DataFrame({"query": pd.Series(dtype=str), "item_id": pd.Series(dtype="Int64"),
                             "event_timestamp": pd.Series(dtype="datetime64[us, UTC]")})
    df = _split_lines(path, "\t", TAGS_FIELDS, "utf-8", header=True)
    item_id = _int_field(df, "item_id")
    ts = _unix_field(df, "timestamp")
    return _framed({"query": df["tag"], "item_id": item_id, "event_timestamp": ts, **_provenance(df)}, df)


def load_movielens(data_dir: Path, max_items: int | None = None) -> dict[str, pd.DataFrame]:
    """Read MovieLens-100K into raw frames shaped like the canonical tables (before validation).

    Args:
        data_dir: folder with the GroupLens files and ``posters/``.
        max_items: keep only items with ``item_id <= max_items`` and the interactions/queries on them
            (a real-data subset for CI; ids are popularity-ordered in ml-100k, so low ids are dense); rows
            whose ``item_id`` is not a valid id are always kept, for the quarantine
            (:func:`ppm_platform.data.loaders.subset_mask`).

    Returns:
        ``{"items", "users", "interactions", "queries"}`` frames, each with the provenance columns
        ``source_line``, ``source_error``, ``source_record`` and ``attrs["source_file"]`` (module doc).

    Raises:
        SchemaError: the tags file's header does not name ``item_id, tag, timestamp``.
    """
    items = read_items(data_dir)
    users = read_users(data_dir)
    inter = read_interactions(data_dir)
    queries = read_queries(data_dir)
    if max_items is not None:
        items = items[subset_mask(items["item_id"], max_items)]
        inter = inter[subset_mask(inter["item_id"], max_items)]
        queries = queries[subset_mask(queries["item_id"], max_items)]
    good = inter[inter["source_error"].isna()]  # derived values come from rows that passed only
    first_seen = good.groupby("item_id")["event_timestamp"].min()
    created = items["release_date"].copy()
    fs = items["item_id"].map(first_seen)
    created = created.where(created.notna() & (fs.isna() | (created <= fs)), fs)
    # an item with neither a release date nor ratings: in the catalog since the epoch
    created = created.fillna(pd.Timestamp("1970-01-01", tz="UTC")).where(items["source_error"].isna())
    items = items.drop(columns="release_date").assign(created_at=created)
    out = {"items": items, "users": users, "interactions": inter, "queries": queries}
    for name, df in out.items():
        src = df.attrs.get("source_file")
        out[name] = df.reset_index(drop=True)
        if src is not None:
            out[name].attrs["source_file"] = src
    return out
