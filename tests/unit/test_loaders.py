"""Bring-your-own catalog: a folder of CSV canonical tables goes through the same validated ingest."""

import pandas as pd
from PIL import Image

from ppm_platform.config import Settings
from ppm_platform.data.ingest import ingest_dataset


def test_csv_catalog_ingest(tmp_path):
    cat = tmp_path / "catalog"
    (cat / "img").mkdir(parents=True)
    Image.new("RGB", (16, 16), (0, 128, 255)).save(cat / "img" / "1.jpg")
    pd.DataFrame({"item_id": [1, 2, 3], "title": ["Blue mug", "Red kettle", ""],
                  "image_uri": ["img/1.jpg", "", "img/3.jpg"], "categories": ["kitchen|mug", "kitchen", ""],
                  "created_at": ["2024-01-01T00:00:00Z"] * 3}).to_csv(cat / "items.csv", index=False)
    pd.DataFrame({"user_id": [10, 11]}).to_csv(cat / "users.csv", index=False)
    pd.DataFrame({"user_id": [10, 11, 10], "item_id": [1, 2, 3],
                  "event_timestamp": ["2024-02-01T10:00:00Z", "2024-02-01T11:00:00Z", "2024-02-02T10:00:00Z"],
                  "click": [1, 0, 1], "order": [0, 0, 1]}).to_csv(cat / "interactions.csv", index=False)
    s = Settings.from_env(env={}, dataset="canonical", data_dir=str(cat), artifacts_dir=str(tmp_path / "art"))
    res = ingest_dataset(s)
    items = res["items"].clean.set_index("item_id")
    assert list(items.index) == [1, 2]                          # item 3: empty title -> quarantined
    assert res["items"].reasons == {"title empty": 1}
    assert items.loc[1, "image_uri"] == str(cat / "img" / "1.jpg") and items.loc[2, "image_uri"] is None
    assert list(items.loc[1, "categories"]) == ["kitchen", "mug"]
    assert res["interactions"].reasons == {"unknown item_id": 1}  # the event on the quarantined item
    assert (s.tables_dir / "items.parquet").exists() and (s.quarantine_dir / "items.parquet").exists()


def test_max_items_subset_keeps_rows_with_bad_ids_for_the_quarantine(tmp_path):
    """Rows whose item_id does not parse are not lost by the ``max_items`` subset (they would be neither clean
    nor quarantined): they are kept and quarantined, and every rejected CSV row names its file and line."""
    cat = tmp_path / "catalog"
    cat.mkdir()
    pd.DataFrame({"item_id": ["1", "2", "3", "abc"], "title": ["A", "B", "C", "D"]}).to_csv(cat / "items.csv", index=False)
    pd.DataFrame({"user_id": [10]}).to_csv(cat / "users.csv", index=False)
    pd.DataFrame({"user_id": [10, 10, 10, 10], "item_id": ["1", "3", "zz", "2"],
                  "event_timestamp": ["2024-02-01T10:00:00Z"] * 4, "click": [1, 0, 1, 0]}
                 ).to_csv(cat / "interactions.csv", index=False)
    s = Settings.from_env(env={}, dataset="canonical", data_dir=str(cat), artifacts_dir=str(tmp_path / "art"),
                          max_items=2)
    res = ingest_dataset(s)
    assert res["items"].clean["item_id"].tolist() == [1, 2]             # item 3: outside the subset
    assert res["items"].reasons == {"item_id not a number": 1}
    assert res["interactions"].clean["item_id"].tolist() == [1, 2]
    assert res["interactions"].reasons == {"item_id not a number": 1}
    for table, line in (("items", 5), ("interactions", 4)):
        q = pd.read_parquet(s.quarantine_dir / f"{table}.parquet")
        assert q["source_line"].tolist() == [line] and q["source_file"].tolist() == [str(cat / f"{table}.csv")]
