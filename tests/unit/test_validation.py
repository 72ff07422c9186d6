"""Ingest validation: every rejected row is accounted for with a reason (rows_in = rows_out + quarantined)."""

import pandas as pd
import pytest
from PIL import Image

from ppm_platform.data.validation import SchemaError, validate_interactions, validate_items, validate_users


def _ts(s):
    return pd.Timestamp(s, tz="UTC")


def test_items_quarantine_and_image_repairs(tmp_path):
    root = tmp_path / "catalog"
    root.mkdir()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(root / "ok.jpg")
    (root / "empty.jpg").write_bytes(b"")
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (tmp_path / "outside.jpg").write_bytes((root / "ok.jpg").read_bytes())
    df = pd.DataFrame({
        "item_id": [1, 2, 2, 3, 4, -5, 6, 7, 8],
        "title": ["A", "B", "B again", "   ", "D", "E", "F", "G", "H"],
        "image_uri": [str(root / "ok.jpg"), None, None, None, str(root / "missing.jpg"), None,
                      str(root / "empty.jpg"), str(root / "corrupt.jpg"), "../outside.jpg"],
        "categories": [["x"]] * 9,
        "created_at": [_ts("2020-01-01")] * 9,
    })
    r = validate_items(df, root)
    assert r.rows_in == 9
    assert r.reasons == {"duplicate item_id": 1, "title empty": 1, "item_id not positive": 1}
    assert r.rows_out == 6 and r.rows_in == r.rows_out + r.rows_quarantined
    assert r.fields_repaired == {"image file missing": 1, "image file empty": 1,
                                 "image not decodable (OSError)": 1,
                                 "image path escapes the catalog root": 1}
    kept = r.clean.set_index("item_id")
    assert kept.loc[1, "image_uri"] == str(root / "ok.jpg")
    assert kept.loc[[4, 6, 7, 8], "image_uri"].isna().all()
    assert set(r.quarantined["quarantine_reason"]) >= {"duplicate item_id", "image file missing"}


def test_interactions_rules():
    df = pd.DataFrame({
        "user_id": [1, 1, 1, 2, 9, 1, 1, 1],
        "item_id": [10, 10, 11, 10, 10, 99, 11, 10],
        "event_timestamp": [100, 100, 200, 300, 400, 500, 3_000_000_000, 700],
        "click": [1, 1, 0, 1, 1, 1, 1, None],
        "order": [1, 1, 1, 0, 0, 0, 0, 0],
    })
    r = validate_interactions(df, known_users={1, 2}, known_items={10, 11}, now=_ts("2030-01-01"))
    assert r.reasons == {"duplicate event": 1, "order without click": 1, "unknown user_id": 1,
                         "unknown item_id": 1, "event_timestamp in the future": 1, "click label missing": 1}
    assert r.rows_out == 2
    assert str(r.clean["event_timestamp"].dtype) == "datetime64[us, UTC]"
    assert list(r.clean["user_id"]) == [1, 2]


def test_missing_required_column_is_an_error_naming_it():
    with pytest.raises(SchemaError, match="item_id"):
        validate_interactions(pd.DataFrame({"user_id": [1], "event_timestamp": [1], "click": [1]}), None, None)


def test_users_duplicates():
    r = validate_users(pd.DataFrame({"user_id": [1, 1, 2], "age": [20, 30, None], "gender": ["M", "F", "F"]}))
    assert r.rows_out == 2 and r.reasons == {"duplicate user_id": 1}
    assert pd.isna(r.clean.set_index("user_id").loc[2, "age"])
