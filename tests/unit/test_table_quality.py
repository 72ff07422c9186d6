"""data.validation.table_quality (the asset checks' figures): streamed in batches over a file or a
day-partitioned folder, same figures whatever the batch size."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from ppm_platform.data.validation import table_quality
from ppm_platform.io import write_day_partitioned, write_parquet_atomic

SCHEMA = pa.schema([("user_id", pa.int64()), ("event_timestamp", pa.timestamp("us", tz="UTC")),
                    ("vec", pa.list_(pa.float32()))])


def _frame():
    vecs = [np.full(3, 0.5, np.float32) for _ in range(10)]
    vecs[2] = np.array([np.nan, 1, 1], np.float32)   # not finite
    vecs[7] = np.zeros(3, np.float32)                 # zero norm
    vecs[8] = np.array([3, 4, 0], np.float32)         # norm 5 = the max
    return pd.DataFrame({"user_id": [1, 2, 3, 4, 5, 6, 7, 8, 9, 1],
                         "event_timestamp": pd.to_datetime(["2020-01-01"] * 5 + ["2020-01-02"] * 4 + ["2020-01-01"], utc=True),
                         "vec": vecs})


@pytest.mark.parametrize("layout", ["file", "days"])
@pytest.mark.parametrize("batch_rows", [3, 16_384])
def test_figures_are_the_same_for_any_batch_and_layout(tmp_path, layout, batch_rows):
    path = tmp_path / "t.parquet"
    table = pa.Table.from_pandas(_frame(), schema=SCHEMA, preserve_index=False)
    (write_parquet_atomic if layout == "file" else write_day_partitioned)(table, path)
    (path / ".2020-01-03.parquet.x.tmp" if layout == "days" else tmp_path / "junk").write_bytes(b"half-written")
    q = table_quality(path, SCHEMA, keys=["user_id", "event_timestamp"], non_null=["user_id"],
                      vectors={"vec": True}, batch_rows=batch_rows)
    assert q["rows"] == 10 and q["schema_ok"] and q["duplicate_keys"] == 1  # user 1 twice on 2020-01-01 00:00
    assert q["vectors"]["vec"]["nonfinite_rows"] == 1 and q["vectors"]["vec"]["zero_rows"] == 1
    assert q["vectors"]["vec"]["max_norm"] == pytest.approx(5.0) and q["vectors"]["vec"]["min_norm"] == 0.0
    assert not q["ok"] and len(q["problems"]) == 3
    relaxed = table_quality(path, SCHEMA, vectors={"vec": False}, batch_rows=batch_rows)
    assert relaxed["problems"] == ["1 row(s) of vec not finite"]


def test_schema_difference_and_missing_table(tmp_path):
    path = tmp_path / "t.parquet"
    write_parquet_atomic(pd.DataFrame({"user_id": [1]}), path)
    q = table_quality(path, SCHEMA)
    assert not q["schema_ok"] and q["problems"] == ["schema differs from data/schemas.py"] and "vec" in q["schema_diff"]
    with pytest.raises(FileNotFoundError, match="table not written"):
        table_quality(tmp_path / "nope.parquet", SCHEMA)
