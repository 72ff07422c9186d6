"""MovieLens reader: raw fields are checked against the source format first, bad lines are
quarantined with file, line and reason, and labels / ``created_at`` come from the lines that passed only.

The test writes a tiny MovieLens-format folder (``u.item`` in latin-1, ``u.user``, ``u.data``, the tags file,
one poster) with one injected fault per line and runs the real ingest on it. Before the fix, the non-numeric
rating stopped the whole ingest with ``TypeError: '>=' not supported between instances of 'str' and 'int'``.
"""

from __future__ import annotations

from datetime import date

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from ppm_platform.config import Settings
from ppm_platform.data.ingest import ingest_dataset, ingest_interactions_day, quarantine_db_path
from ppm_platform.data.movielens import load_movielens
from ppm_platform.data.schemas import MOVIELENS_GENRES

T1 = 881250949  # 1997-12-04 UTC


def _item(item_id: str, title: str, genres: tuple[str, ...] = (), date_: str = "01-Jan-1995",
          flags: list[str] | None = None) -> str:
    flags = flags or ["1" if g in genres else "0" for g in MOVIELENS_GENRES]
    return "|".join([item_id, title, date_, "", "http://us.imdb.com/x", *flags])


ITEM_LINES: list[bytes] = [
    _item("1", "Toy Story (1995)", ("Animation", "Children's", "Comedy")).encode("latin-1"),  # line 1
    _item("2", "Café (1996)", ("Drama",), "01-Jan-1996").encode("latin-1"),                  # 2: real latin-1
    _item("3", "Amélie (2001)", ("Comedy",)).encode("utf-8"),                                # 3: UTF-8 bytes
    b"4|Short line|01-Jan-1995",                                                              # 4: 3 fields
    _item("x5", "Bad id (1995)").encode("latin-1"),                                           # 5
    _item("6", "Heat (1995)", flags=["0"] * 6 + ["2"] + ["0"] * 12).encode("latin-1"),        # 6: flag 2
    _item("7", "Casino (1995)", ("Crime",)).encode("latin-1"),                                # 7: only bad ratings
]
USER_LINES = ["1|24|M|technician|85711", "2|53|F|other|94043", "3|x|M|writer|32067",          # 3: age 'x'
              "four|20|F|artist|11111", "5|30|M"]                                             # 4, 5
DATA_LINES = [
    f"1\t1\t5\t{T1}",            # 1: click, order
    f"1\t2\t3\t{T1 + 1}",        # 2: neither
    f"2\t1\t4\t{T1 + 2}",        # 3: click only
    f"2\t2\tx\t{T1 + 3}",        # 4: rating not a number (TypeError before)
    f"2\t7\t7\t{T1 + 4}",        # 5: rating 7 (silently a click before)
    f"1\t7\t4\t-5",              # 6: negative unix time (1969 before)
    f"1\t1\t4\t12ab",            # 7: garbage unix time
    f"1.5\t1\t4\t{T1 + 5}",      # 8: non-integer id
    f"1\t2\t4",                  # 9: 3 fields
    f"2\t3\t5\t{T1 + 6}",        # 10: valid line, but item 3 is quarantined -> unknown item_id
    f"99999999999999999999\t1\t4\t{T1 + 7}",  # 11: id beyond int64
]
TAG_LINES = [b"item_id\ttag\ttimestamp", b"1\tpixar\t1137206825", "2\tcaf\u00e9\t1137206826".encode(),
             b"1\t\xff\xfe bad\t1137206827", b"x\ttoys\t1137206828"]                          # lines 4, 5

ITEM_FAULTS = {3: "UTF-8 bytes in latin-1 u.item (mojibake)", 4: "wrong field count (expected 24)",
               5: "item_id not an integer", 6: "genre flag not 0/1"}
USER_FAULTS = {4: "user_id not an integer", 5: "wrong field count (expected 5)"}
DATA_FAULTS = {4: "rating not a number", 5: "rating not in 1..5", 6: "unix timestamp negative",
               7: "unix timestamp not an integer", 8: "user_id not an integer",
               9: "wrong field count (expected 4)", 11: "user_id beyond int64"}
TAG_FAULTS = {4: "not valid UTF-8", 5: "item_id not an integer"}


def _movielens_dir(root):
    root.mkdir()
    (root / "u.item").write_bytes(b"\n".join(ITEM_LINES) + b"\n")
    (root / "u.user").write_text("\n".join(USER_LINES) + "\n")
    (root / "u.data").write_text("\n".join(DATA_LINES) + "\n\n")  # a trailing blank line holds no record
    (root / "tags_ml_latest_small.tsv").write_bytes(b"\n".join(TAG_LINES) + b"\n")
    (root / "posters").mkdir()
    Image.new("RGB", (18, 27), (10, 20, 30)).save(root / "posters" / "1.jpg")
    return root


@pytest.fixture()
def movielens(tmp_path):
    root = _movielens_dir(tmp_path / "ml")
    s = Settings.from_env(env={}, artifacts_dir=tmp_path / "artifacts", dataset="movielens", data_dir=root)
    return s.ensure_dirs(), root


def _rejected(settings, table: str) -> dict[int, str]:
    q = pq.read_table(settings.quarantine_dir / f"{table}.parquet").to_pandas()
    q = q[q["action"] == "row_rejected"]
    return dict(zip(q["source_line"].astype(int), q["quarantine_reason"]))


def test_faulty_lines_are_quarantined_with_file_line_and_reason(movielens):
    settings, root = movielens
    res = ingest_dataset(settings)
    for r in res.values():
        r.check_accounting()
    assert _rejected(settings, "items") == ITEM_FAULTS
    assert _rejected(settings, "users") == USER_FAULTS
    assert _rejected(settings, "interactions") == {**DATA_FAULTS, 10: "unknown item_id"}
    assert _rejected(settings, "queries") == TAG_FAULTS
    assert res["interactions"].rows_in == 11 and res["interactions"].rows_out == 3  # blank line: no record
    q = pq.read_table(settings.quarantine_dir / "interactions.parquet").to_pandas().set_index("source_line")
    assert set(q["source_file"]) == {str(root / "u.data")}
    assert q.loc[4, "source_record"] == f"2\t2\tx\t{T1 + 3}"          # the raw line, as read
    assert pd.isna(q.loc[10, "source_record"])                        # a valid line, rejected later
    mojibake = pq.read_table(settings.quarantine_dir / "items.parquet").to_pandas().set_index("source_line")
    assert mojibake.loc[3, "source_record"] == _item("3", "Amélie (2001)", ("Comedy",)).encode().decode("latin-1")
    with duckdb.connect(str(quarantine_db_path(settings)), read_only=True) as db:  # queryable by file and line
        assert db.execute("SELECT quarantine_reason FROM interactions WHERE source_line = 5 AND "
                          "source_file LIKE '%u.data'").fetchall() == [("rating not in 1..5",)]


def test_labels_and_created_at_come_from_clean_lines_only(movielens):
    settings, root = movielens
    res = ingest_dataset(settings)
    inter = res["interactions"].clean
    assert inter[["user_id", "item_id", "click", "order"]].values.tolist() == [[1, 1, 1, 1], [1, 2, 0, 0],
                                                                               [2, 1, 1, 0]]
    assert inter["event_timestamp"].tolist() == [pd.Timestamp(T1 + k, unit="s", tz="UTC") for k in range(3)]
    items = res["items"].clean.set_index("item_id")
    assert items.index.tolist() == [1, 2, 7]
    assert items.loc[2, "title"] == "Café (1996)"                    # latin-1 decoded, not mojibake
    assert list(items.loc[1, "categories"]) == ["Animation", "Children's", "Comedy"]
    assert items.loc[1, "image_uri"] == str(root / "posters" / "1.jpg") and items.loc[2, "image_uri"] is None
    # item 1: first rating (1997) after its release date -> the release date; item 7's only ratings are bad
    # lines (one stamped 1969): created_at stays its release date
    assert items.loc[1, "created_at"] == items.loc[7, "created_at"] == pd.Timestamp("1995-01-01", tz="UTC")
    users = res["users"].clean.set_index("user_id")
    assert users.index.tolist() == [1, 2, 3] and pd.isna(users.loc[3, "age"]) and users.loc[1, "age"] == 24
    assert res["users"].fields_repaired == {"age not a number": 1}
    assert res["queries"].clean[["query", "item_id"]].values.tolist() == [["pixar", 1], ["café", 2]]


def test_max_items_subset_never_hides_a_bad_line(movielens):
    """``max_items=2``: lines on items 3 and 7 are outside the subset; lines whose item id cannot be read
    (the 3-field ones, ``x5``) are kept and quarantined, never dropped."""
    settings, _ = movielens
    raw = load_movielens(settings.data_dir, max_items=2)
    assert raw["items"]["source_line"].tolist() == [1, 2, 4, 5]
    assert raw["interactions"]["source_line"].tolist() == [1, 2, 3, 4, 7, 8, 9, 11]
    res = ingest_dataset(settings.model_copy(update={"max_items": 2}))
    assert _rejected(settings, "items") == {4: ITEM_FAULTS[4], 5: ITEM_FAULTS[5]}
    assert _rejected(settings, "interactions") == {k: DATA_FAULTS[k] for k in (4, 7, 8, 9, 11)}
    assert res["interactions"].rows_out == 3


def test_daily_partition_quarantines_the_day_s_bad_lines(movielens):
    settings, _ = movielens
    ingest_dataset(settings)
    res = ingest_interactions_day(settings, date(1997, 12, 4))
    # the lines with a readable timestamp on that day; 6, 7 and 9 have none and belong to no day
    assert res.rows_in == 8 and res.rows_out == 3
    assert res.reasons == {"rating not a number": 1, "rating not in 1..5": 1, "user_id not an integer": 1,
                           "user_id beyond int64": 1, "unknown item_id": 1}
    q = pq.read_table(settings.quarantine_dir / "interactions_daily" / "1997-12-04.parquet").to_pandas()
    assert sorted(q["source_line"].astype(int)) == [4, 5, 8, 10, 11]


def test_real_shaped_non_ascii_latin1_titles_are_not_flagged(tmp_path):
    """The 9 non-ASCII u.item lines of the real file are latin-1 (é = 0xE9, Á = 0xC1 followed by a space):
    none may look like UTF-8."""
    root = _movielens_dir(tmp_path / "ml")
    lines = [_item("1", "Á köldum klaka (Cold Fever) (1994)"), _item("2", "Misérables, Les (1995)"),
             _item("3", "Cérémonie, La (1995)")]
    (root / "u.item").write_bytes("\n".join(lines).encode("latin-1") + b"\n")
    raw = load_movielens(root)
    assert raw["items"]["source_error"].isna().all()
    assert raw["items"]["title"].tolist() == ["Á köldum klaka (Cold Fever) (1994)", "Misérables, Les (1995)",
                                              "Cérémonie, La (1995)"]
    assert np.array_equal(raw["items"]["source_line"], [1, 2, 3])
