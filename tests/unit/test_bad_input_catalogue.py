"""Bad-input catalogue: every case is a small input this module builds and a defined outcome.

Outcomes (``EXPECT`` column of :data:`CASES`):

* ``Raises(exc, fragment)``: ingest stops with ``exc`` whose message contains ``fragment`` (it names the
  file / table / column); no canonical table is written.
* ``Quarantined(reason, n)``: ``n`` rows of the table go to the quarantine with ``reason`` (row rejected).
* ``Repaired(reason, n)``: ``n`` rows are kept with one field nulled (e.g. a bad image -> no image), and
  are recorded in the quarantine with ``action = field_nulled``.
* ``Accepted(check)``: nothing quarantined or repaired; ``check`` asserts what the clean table holds.

Every case runs through the real ingest (:func:`ppm_platform.data.ingest.ingest_frames`, or the
canonical-folder loader for file cases) into a tmp artifacts dir, and for every table asserts the row
accounting ``rows_in == rows_out + rows_quarantined``, that the written parquet files hold exactly those
rows, that the canonical parquet schema is the contract of ``data/schemas.py``, and that the DuckDB
quarantine database (``quarantine.duckdb``) holds the same rows as the quarantine parquet.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from ppm_platform.config import Settings
from ppm_platform.data import schemas
from ppm_platform.data.ingest import ingest_dataset, ingest_frames, quarantine_db_path
from ppm_platform.data.validation import MAX_TITLE_CHARS, EmptyTableError, IngestResult, SchemaError

T0 = pd.Timestamp("2024-01-01 00:00:00", tz="UTC")
H = pd.Timedelta(hours=1)


# ---- outcomes ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Raises:
    exc: type[Exception]
    fragment: str


@dataclass(frozen=True)
class Quarantined:
    reason: str
    n: int = 1
    check: Callable[[IngestResult], None] | None = None


@dataclass(frozen=True)
class Repaired:
    reason: str
    n: int = 1
    check: Callable[[IngestResult], None] | None = None


@dataclass(frozen=True)
class Accepted:
    check: Callable[[IngestResult], None] | None = None


@dataclass(frozen=True)
class Case:
    name: str
    table: str
    build: Callable[[Path], dict[str, pd.DataFrame] | Path]
    expect: Raises | Quarantined | Repaired | Accepted


# ---- a small valid catalog and builders -------------------------------------------------------------------------
def _img(root: Path, name: str = "img/1.jpg", mode: str = "RGB", fmt: str = "JPEG", size=(32, 24)) -> Path:
    p = root / name
    p.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8), "RGB").convert(mode).save(p, fmt)
    return p


def base(root: Path) -> dict[str, pd.DataFrame]:
    """3 items (item 1 with a poster), 3 users, 4 impressions, 1 query: all valid."""
    poster = _img(root)
    return {
        "items": pd.DataFrame({"item_id": [1, 2, 3], "title": ["Toy Story (1995)", "Heat (1995)", "Babe (1995)"],
                               "image_uri": [str(poster), None, None],
                               "categories": [["Animation", "Comedy"], ["Crime"], []],
                               "created_at": [T0 - 24 * H] * 3}),
        "users": pd.DataFrame({"user_id": [10, 11, 12], "age": [20, 30, 40], "gender": ["M", "F", "M"],
                               "occupation": ["writer", "doctor", "artist"]}),
        "interactions": pd.DataFrame({"user_id": [10, 10, 11, 12], "item_id": [1, 2, 1, 3],
                                      "event_timestamp": [T0 + k * H for k in (1, 2, 3, 4)],
                                      "click": [1, 0, 1, 1], "order": [0, 0, 1, 0]}),
        "queries": pd.DataFrame({"query": ["pixar toys"], "item_id": [1], "event_timestamp": [T0]}),
    }


def edit(table: str, fn: Callable[[pd.DataFrame, Path], pd.DataFrame]):
    """Builder: the base catalog with ``fn(base[table], root)`` in place of ``table``."""
    def build(root: Path):
        raw = base(root)
        raw[table] = fn(raw[table].copy(), root)
        return raw
    return build


_DEFAULT_ROW = {
    "items": {"item_id": 4, "title": "Casino (1995)", "image_uri": None, "categories": ["Drama"],
              "created_at": T0 - 24 * H},
    "users": {"user_id": 13, "age": 25, "gender": "F", "occupation": "other"},
    "interactions": {"user_id": 10, "item_id": 3, "event_timestamp": T0 + 5 * H, "click": 1, "order": 0},
    "queries": {"query": "heist", "item_id": 2, "event_timestamp": T0},
}


def add(table: str, **values):
    """Builder: the base catalog plus one row of ``table`` (a default valid row updated with ``values``;
    a callable value is called with the catalog root, e.g. to write an image file)."""
    def fn(df: pd.DataFrame, root: Path) -> pd.DataFrame:
        row = {**_DEFAULT_ROW[table], **{k: (v(root) if callable(v) else v) for k, v in values.items()}}
        new = pd.DataFrame({k: [v] for k, v in row.items()})
        return pd.concat([df.astype(object), new.astype(object)], ignore_index=True)
    return edit(table, fn)


def image(writer: Callable[[Path], Path | str]):
    """Builder: the base catalog plus item 4 whose ``image_uri`` is what ``writer(root)`` returns."""
    return add("items", image_uri=lambda root: str(writer(root)))


def _png_header(w: int, h: int) -> bytes:
    """A PNG whose header claims ``w x h`` pixels (a decompression bomb costs nothing to build)."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))  # noqa: E731
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def _write(root: Path, name: str, data: bytes) -> Path:
    p = root / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


def _truncated_jpeg(root: Path) -> Path:
    full = _img(root, "img/full.jpg", size=(128, 128)).read_bytes()
    return _write(root, "img/truncated.jpg", full[: len(full) // 2])


def _symlink_out(root: Path) -> Path:
    target = _img(root.parent, "elsewhere/secret.jpg")
    link = root / "img" / "link.jpg"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)
    return link


def as_csv_folder(fn: Callable[[Path, dict[str, pd.DataFrame]], None] | None = None):
    """Builder: the base catalog written as a folder of canonical CSV files (image paths relative to the
    folder, categories ``|``-separated), then ``fn(root, frames)`` may overwrite files."""
    def build(root: Path) -> Path:
        raw = base(root)
        raw["items"] = raw["items"].assign(image_uri=["img/1.jpg", "", ""],
                                           categories=raw["items"]["categories"].map("|".join))
        for name, df in raw.items():
            df.to_csv(root / f"{name}.csv", index=False)
        if fn is not None:
            fn(root, raw)
        return root
    return build


# ---- checks used by accepted / quarantined cases ----------------------------------------------------------------
def item(r: IngestResult, item_id: int) -> pd.Series:
    return r.clean.set_index("item_id").loc[item_id]


def encodable(item_id: int):
    """The item keeps its image and the image encoder's preprocessing decodes it to RGB [3, 224, 224]."""
    def check(r: IngestResult):
        from ppm_platform.encoders.image import load_image

        uri = item(r, item_id)["image_uri"]
        assert uri is not None
        arr = load_image(uri, root=None)  # (containment: the image_*_escape cases)
        assert arr.shape == (3, 224, 224) and np.isfinite(arr).all()
    return check


def image_nulled(item_id: int):
    def check(r: IngestResult):
        assert item(r, item_id)["image_uri"] is None
    return check


def title_is(item_id: int, title: str):
    def check(r: IngestResult):
        assert item(r, item_id)["title"] == title
    return check


def clean_equals(column: str, values: list):
    def check(r: IngestResult):
        assert r.clean[column].tolist() == values, r.clean[column].tolist()
    return check


def _naive(df: pd.DataFrame, _root) -> pd.DataFrame:
    return df.assign(event_timestamp=df["event_timestamp"].dt.tz_localize(None))


def _append_line(name: str, line: str):
    """CSV-folder edit: append one raw line to ``<name>.csv``."""
    def fn(root: Path, raw) -> None:
        with open(root / f"{name}.csv", "a") as f:
            f.write(line + "\n")
    return fn


def at_line(file: str, line: int):
    """The rejected row names its file and its 1-based line in it."""
    def check(r: IngestResult):
        q = r.quarantined[r.quarantined["action"] == "row_rejected"]
        assert q["source_line"].tolist() == [line] and q["source_file"].str.endswith(file).all(), q
    return check


def _latin1_title(root: Path, raw) -> None:
    text = (root / "items.csv").read_text().replace("Heat (1995)", "Café (1995)")
    (root / "items.csv").write_bytes(text.encode("latin-1"))


# ---- THE CATALOGUE ----------------------------------------------------------------------------------------------
#     name                                table           input builder                                  expected outcome
CASES = [
    # images (a bad image never drops the item: the row is kept without image, and recorded)
    Case("image_missing_file",             "items",        image(lambda r: r / "img" / "nope.jpg"),       Repaired("image file missing", check=image_nulled(4))),
    Case("image_corrupt",                  "items",        image(lambda r: _write(r, "img/c.jpg", b"\xff\xd8\xff\xe0 not a jpeg")), Repaired("image not decodable (OSError)")),
    Case("image_truncated_jpeg",           "items",        image(_truncated_jpeg),                        Repaired("image not decodable (OSError)", check=image_nulled(4))),
    Case("image_zero_bytes",               "items",        image(lambda r: _write(r, "img/z.jpg", b"")),  Repaired("image file empty")),
    Case("image_bomb_over_pillow_limit",   "items",        image(lambda r: _write(r, "img/b.png", _png_header(100_000, 100_000))), Repaired("image too large (> 64,000,000 px)", check=image_nulled(4))),
    Case("image_over_platform_limit",      "items",        image(lambda r: _write(r, "img/l.png", _png_header(9_000, 9_000))), Repaired("image too large (> 64,000,000 px)")),
    Case("image_grayscale",                "items",        image(lambda r: _img(r, "img/g.jpg", "L")),    Accepted(encodable(4))),
    Case("image_cmyk",                     "items",        image(lambda r: _img(r, "img/k.jpg", "CMYK")), Accepted(encodable(4))),
    Case("image_rgba_png",                 "items",        image(lambda r: _img(r, "img/a.png", "RGBA", "PNG")), Accepted(encodable(4))),
    Case("image_palette_png",              "items",        image(lambda r: _img(r, "img/p.png", "P", "PNG")), Accepted(encodable(4))),
    Case("image_16bit_grayscale_png",      "items",        image(lambda r: _img(r, "img/i.png", "I;16", "PNG")), Accepted(encodable(4))),
    Case("image_path_dotdot_escape",       "items",        image(lambda r: (_img(r.parent, "out.jpg"), "../out.jpg")[1]), Repaired("image path escapes the catalog root", check=image_nulled(4))),
    Case("image_absolute_path_outside",    "items",        image(lambda r: _img(r.parent, "abs/out.jpg")), Repaired("image path escapes the catalog root")),
    Case("image_symlink_escape",           "items",        image(_symlink_out),                           Repaired("image path escapes the catalog root")),
    Case("image_path_is_a_folder",         "items",        image(lambda r: r / "img"),                    Repaired("image file missing")),
    Case("image_http_url",                 "items",        image(lambda r: "http://example.com/p.jpg"),   Repaired("image URI scheme not supported")),
    Case("image_file_uri_inside_root",     "items",        image(lambda r: _img(r, "img/u.jpg").as_uri()), Accepted(encodable(4))),
    Case("image_relative_path_inside",     "items",        image(lambda r: (_img(r, "img/rel.jpg"), "img/rel.jpg")[1]), Accepted(lambda r: encodable(4)(r) or Path(item(r, 4)["image_uri"]).is_absolute() or pytest.fail("abs"))),
    # titles / text
    Case("title_empty",                    "items",        add("items", title=""),                        Quarantined("title empty")),
    Case("title_whitespace_only",          "items",        add("items", title=" \t\n "),                  Quarantined("title empty")),
    Case("title_missing_null",             "items",        add("items", title=None),                      Quarantined("title empty")),
    Case("title_too_long",                 "items",        add("items", title="x" * (MAX_TITLE_CHARS + 1)), Quarantined(f"title longer than {MAX_TITLE_CHARS} chars")),
    Case("title_at_length_limit",          "items",        add("items", title="y" * MAX_TITLE_CHARS),     Accepted(title_is(4, "y" * MAX_TITLE_CHARS))),
    Case("title_non_utf8_bytes",           "items",        add("items", title=b"Caf\xe9 (1995)"),         Quarantined("title not valid UTF-8")),
    Case("title_lone_surrogate",           "items",        add("items", title="Caf\udce9 (1995)"),        Quarantined("title not valid UTF-8")),
    Case("title_utf8_bytes_decoded",       "items",        add("items", title="Café (1995)".encode()),    Accepted(title_is(4, "Café (1995)"))),
    Case("title_emoji_and_rtl",            "items",        add("items", title="🎬 فيلم עברית (2024)"),     Accepted(title_is(4, "🎬 فيلم עברית (2024)"))),
    Case("title_padded_is_stripped",       "items",        add("items", title="  Casino (1995) "),        Accepted(title_is(4, "Casino (1995)"))),
    Case("csv_latin1_bytes",               "items",        as_csv_folder(_latin1_title),                  Raises(SchemaError, "items.csv: not valid UTF-8 at byte")),
    # item ids, duplicates, dtypes, columns
    Case("item_duplicate_conflicting",     "items",        add("items", item_id=1, title="Toy Story 2"),  Quarantined("duplicate item_id", check=title_is(1, "Toy Story (1995)"))),
    Case("item_id_negative",               "items",        add("items", item_id=-5),                      Quarantined("item_id not positive")),
    Case("item_id_zero",                   "items",        add("items", item_id=0),                       Quarantined("item_id not positive")),
    Case("item_id_missing",                "items",        add("items", item_id=None),                    Quarantined("item_id missing")),
    Case("item_id_not_a_number",           "items",        add("items", item_id="abc"),                   Quarantined("item_id not a number")),
    Case("item_id_not_an_integer",         "items",        add("items", item_id=2.5),                     Quarantined("item_id not an integer")),
    Case("item_id_beyond_int64",           "items",        add("items", item_id="99999999999999999999"),  Quarantined("item_id beyond int64")),
    Case("item_id_int64_max_string",       "items",        add("items", item_id=str(2**63 - 1)),          Accepted(clean_equals("item_id", [1, 2, 3, 2**63 - 1]))),
    Case("event_user_id_beyond_int64",     "interactions", add("interactions", user_id=2**63),            Quarantined("user_id beyond int64")),
    Case("item_id_numeric_string",         "items",        add("items", item_id="4"),                     Accepted(clean_equals("item_id", [1, 2, 3, 4]))),
    Case("categories_pipe_string",         "items",        add("items", categories="Crime|Drama"),        Accepted(lambda r: list(item(r, 4)["categories"]) == ["Crime", "Drama"] or pytest.fail("split"))),
    Case("categories_wrong_type",          "items",        add("items", categories=7),                    Quarantined("categories not a list")),
    Case("created_at_unparseable",         "items",        add("items", created_at="the day before"),     Quarantined("created_at missing or unparseable")),
    Case("items_missing_title_column",     "items",        edit("items", lambda d, r: d.drop(columns="title")), Raises(SchemaError, "missing required column(s) ['title']")),
    Case("items_extra_unknown_columns",    "items",        edit("items", lambda d, r: d.assign(color="red", sku="x")), Accepted(lambda r: r.columns_dropped == ["color", "sku"] and r.summary()["columns_dropped"] == ["color", "sku"] or pytest.fail(str(r.columns_dropped)))),
    Case("items_optional_columns_absent",  "items",        edit("items", lambda d, r: d[["item_id", "title"]]), Accepted(lambda r: r.clean["image_uri"].isna().all() and (r.clean["created_at"] == pd.Timestamp(0, tz="UTC")).all() or pytest.fail("defaults"))),
    Case("catalog_of_one_item",            "items",        lambda r: {**base(r), "items": base(r)["items"].iloc[:1], "interactions": base(r)["interactions"].query("item_id == 1")}, Accepted(clean_equals("item_id", [1]))),
    Case("item_without_interactions",      "items",        add("items", item_id=4),                       Accepted(clean_equals("item_id", [1, 2, 3, 4]))),
    Case("items_empty_table",              "items",        edit("items", lambda d, r: d.iloc[:0]),        Raises(EmptyTableError, "table 'items' has no valid rows (rows_in=0")),
    # users
    Case("user_duplicate_conflicting",     "users",        add("users", user_id=10, age=99),              Quarantined("duplicate user_id", check=lambda r: r.clean.set_index("user_id").loc[10, "age"] == 20 or pytest.fail("kept"))),
    Case("user_age_not_a_number",          "users",        add("users", age="unknown"),                   Repaired("age not a number", check=lambda r: pd.isna(r.clean.set_index("user_id").loc[13, "age"]) or pytest.fail("age"))),
    Case("users_missing_user_id_column",   "users",        edit("users", lambda d, r: d.drop(columns="user_id")), Raises(SchemaError, "table 'users' is missing required column(s) ['user_id']")),
    # interactions
    Case("event_duplicate_row",            "interactions", add("interactions", user_id=10, item_id=1, event_timestamp=T0 + H, click=1, order=0), Quarantined("duplicate event")),
    Case("event_duplicate_conflicting",    "interactions", add("interactions", user_id=10, item_id=1, event_timestamp=T0 + H, click=0, order=0), Quarantined("duplicate event")),
    Case("event_unknown_user",             "interactions", add("interactions", user_id=99),               Quarantined("unknown user_id")),
    Case("event_unknown_item",             "interactions", add("interactions", item_id=98),               Quarantined("unknown item_id")),
    Case("event_on_quarantined_item",      "interactions", edit("items", lambda d, r: d.assign(title=["Toy Story (1995)", "Heat (1995)", " "])), Quarantined("unknown item_id")),
    Case("event_future_timestamp",         "interactions", add("interactions", event_timestamp=pd.Timestamp("2200-01-01", tz="UTC")), Quarantined("event_timestamp in the future")),
    Case("event_timestamp_unparseable",    "interactions", add("interactions", event_timestamp="not a date"), Quarantined("event_timestamp missing or unparseable")),
    Case("event_timestamp_missing",        "interactions", add("interactions", event_timestamp=None),     Quarantined("event_timestamp missing or unparseable")),
    Case("event_timestamps_naive_are_utc", "interactions", edit("interactions", _naive),                  Accepted(clean_equals("event_timestamp", [T0 + k * H for k in (1, 2, 3, 4)]))),
    Case("event_timestamp_with_offset",    "interactions", edit("interactions", lambda d, r: d.assign(event_timestamp=[(t + 2 * H).strftime("%Y-%m-%dT%H:%M:%S+02:00") for t in d["event_timestamp"]])), Accepted(clean_equals("event_timestamp", [T0 + k * H for k in (1, 2, 3, 4)]))),
    Case("event_unix_seconds",             "interactions", edit("interactions", lambda d, r: d.assign(event_timestamp=[int(t.timestamp()) for t in d["event_timestamp"]])), Accepted(clean_equals("event_timestamp", [T0 + k * H for k in (1, 2, 3, 4)]))),
    Case("events_out_of_order_sorted",     "interactions", edit("interactions", lambda d, r: d.iloc[::-1]), Accepted(clean_equals("item_id", [1, 2, 1, 3]))),
    Case("event_click_nan",                "interactions", add("interactions", click=np.nan),             Quarantined("click label missing")),
    Case("event_order_missing",            "interactions", add("interactions", order=None),               Quarantined("order label missing")),
    Case("event_click_not_binary",         "interactions", add("interactions", click=2),                  Quarantined("click label not 0/1")),
    Case("event_click_text",               "interactions", add("interactions", click="yes"),              Quarantined("click label not 0/1")),
    Case("event_order_without_click",      "interactions", add("interactions", click=0, order=1),         Quarantined("order without click")),
    Case("event_negative_user_id",         "interactions", add("interactions", user_id=-10),              Quarantined("user_id not positive")),
    Case("event_timestamp_bool_dtype",     "interactions", edit("interactions", lambda d, r: d.assign(event_timestamp=True)), Raises(SchemaError, "column 'event_timestamp' has dtype bool")),
    Case("interactions_missing_click",     "interactions", edit("interactions", lambda d, r: d.drop(columns="click")), Raises(SchemaError, "missing required column(s) ['click']")),
    Case("interactions_order_column_absent", "interactions", edit("interactions", lambda d, r: d.drop(columns="order")), Accepted(clean_equals("order", [0, 0, 0, 0]))),
    Case("interactions_empty_table",       "interactions", edit("interactions", lambda d, r: d.iloc[:0]), Raises(EmptyTableError, "table 'interactions' has no valid rows (rows_in=0")),
    Case("interactions_all_quarantined",   "interactions", edit("interactions", lambda d, r: d.assign(user_id=99)), Raises(EmptyTableError, "quarantined=4 {'unknown user_id': 4}")),
    Case("csv_row_too_many_fields",        "interactions", as_csv_folder(_append_line("interactions", "10,3,2024-01-01 05:00:00+00:00,1,0,oops")), Quarantined("wrong field count (expected 5)", check=at_line("interactions.csv", 6))),
    Case("csv_row_too_few_fields",         "interactions", as_csv_folder(_append_line("interactions", "10,3")), Quarantined("wrong field count (expected 5)", check=at_line("interactions.csv", 6))),
    Case("interactions_csv_zero_bytes",    "interactions", as_csv_folder(lambda r, raw: (r / "interactions.csv").write_bytes(b"")), Raises(SchemaError, "interactions.csv: file is empty")),
    Case("user_with_one_event",            "interactions", lambda r: add("interactions", user_id=13)(r) | {"users": add("users")(r)["users"]}, Accepted(lambda r: (r.clean["user_id"] == 13).sum() == 1 or pytest.fail("one event"))),
    # queries
    Case("query_empty_text",               "queries",      add("queries", query="   "),                   Quarantined("query empty")),
    Case("query_unknown_item",             "queries",      add("queries", item_id=77),                    Quarantined("unknown item_id")),
    Case("queries_empty_table_is_valid",   "queries",      edit("queries", lambda d, r: d.iloc[:0]),      Accepted(lambda r: r.rows_in == r.rows_out == 0 or pytest.fail("empty"))),
    # the canonical-folder path end to end
    Case("csv_folder_valid",               "items",        as_csv_folder(),                               Accepted(encodable(1))),
]


def _run(settings: Settings, built, root: Path) -> dict[str, IngestResult]:
    if isinstance(built, Path):
        return ingest_dataset(settings)
    return ingest_frames(settings, built, root)


def _assert_accounting_and_files(settings: Settings, res: dict[str, IngestResult]) -> None:
    db = duckdb.connect(str(quarantine_db_path(settings)), read_only=True)
    try:
        for name, r in res.items():
            assert r.rows_in == r.rows_out + r.rows_quarantined, (name, r.summary())
            clean = pq.read_table(settings.tables_dir / f"{name}.parquet")
            assert clean.num_rows == r.rows_out and clean.schema.equals(schemas.CANONICAL[name]), name
            q = pq.read_table(settings.quarantine_dir / f"{name}.parquet").to_pandas()
            n_repaired = sum(r.fields_repaired.values())
            assert len(q) == r.rows_quarantined + n_repaired, name
            assert (q["action"] == "row_rejected").sum() == r.rows_quarantined
            assert Counter(q.loc[q["action"] == "row_rejected", "quarantine_reason"]) == Counter(r.reasons)
            assert db.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0] == len(q)
            summary = dict(db.execute("SELECT quarantine_reason, sum(rows) FROM quarantine_summary "
                                      "WHERE table_name = ? AND action = 'row_rejected' GROUP BY ALL", [name]).fetchall())
            assert summary == r.reasons, (name, summary)
    finally:
        db.close()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_case(case: Case, tmp_path):
    root = tmp_path / "catalog"
    root.mkdir()
    settings = Settings.from_env(env={}, artifacts_dir=tmp_path / "artifacts", dataset="canonical",
                                 data_dir=root).ensure_dirs()
    built = case.build(root)
    exp = case.expect
    if isinstance(exp, Raises):
        with pytest.raises(exp.exc, match=re.escape(exp.fragment)):
            _run(settings, built, root)
        assert not list(settings.tables_dir.glob("*.parquet")), "no canonical table may be written"
        if exp.exc is EmptyTableError:  # the quarantine is still written and accounts for every row
            q = pq.read_table(settings.quarantine_dir / f"{case.table}.parquet")
            raw = built[case.table] if isinstance(built, dict) else None
            assert raw is None or q.num_rows == len(raw)
        return
    res = _run(settings, built, root)
    _assert_accounting_and_files(settings, res)
    r = res[case.table]
    others = {n: x for n, x in res.items() if n != case.table and not (case.name == "event_on_quarantined_item")}
    for n, x in others.items():  # the bad row touches its own table only
        assert x.rows_quarantined == 0 and not x.fields_repaired, (n, x.summary())
    if isinstance(exp, Quarantined):
        assert r.reasons == {exp.reason: exp.n}, r.summary()
        assert not r.fields_repaired
    elif isinstance(exp, Repaired):
        assert r.fields_repaired == {exp.reason: exp.n}, r.summary()
        assert r.rows_quarantined == 0 and r.rows_out == r.rows_in
    else:
        assert r.rows_quarantined == 0 and not r.fields_repaired, r.summary()
    if exp.check is not None:
        exp.check(r)


def test_catalogue_is_big_and_covers_every_outcome():
    names = [c.name for c in CASES]
    assert len(set(names)) == len(names) >= 30
    kinds = Counter(type(c.expect).__name__ for c in CASES)
    assert set(kinds) == {"Raises", "Quarantined", "Repaired", "Accepted"}
    assert {c.table for c in CASES} == {"items", "users", "interactions", "queries"}


def test_quarantine_db_is_replaced_atomically(tmp_path):
    """A second ingest replaces quarantine.duckdb as a whole (no temp files left, latest rows only)."""
    root = tmp_path / "catalog"
    root.mkdir()
    s = Settings.from_env(env={}, artifacts_dir=tmp_path / "artifacts").ensure_dirs()
    ingest_frames(s, add("items", title="")(root), root)
    ingest_frames(s, add("items", item_id=-1)(root), root)
    with duckdb.connect(str(quarantine_db_path(s)), read_only=True) as db:
        assert db.execute("SELECT quarantine_reason FROM items").fetchall() == [("item_id not positive",)]
    assert sorted(p.name for p in s.artifacts_dir.iterdir()) == ["feast", "features", "models", "quarantine",
                                                                "quarantine.duckdb", "reports", "tables"]
