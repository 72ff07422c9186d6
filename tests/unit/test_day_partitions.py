"""Day-partitioned dataset folders (ppm_platform.io): the layout the full feature assets and the daily
partitions share."""

from datetime import date

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ppm_platform.io import write_day_partition, write_day_partitioned

SCHEMA = pa.schema([("user_id", pa.int64()), ("event_timestamp", pa.timestamp("us", tz="UTC"))])


def _table(stamps, users=None):
    ts = pd.to_datetime(stamps, utc=True, format="ISO8601")
    return pa.Table.from_pandas(pd.DataFrame({"user_id": users or list(range(len(stamps))), "event_timestamp": ts}),
                                schema=SCHEMA, preserve_index=False)


def test_full_write_splits_by_utc_day_and_replaces_the_folder(tmp_path):
    out = tmp_path / "seq.parquet"
    out.write_bytes(b"an older single-file layout")  # replaced as a whole
    t = _table(["2020-01-01T23:59:59.999999Z", "2020-01-02T00:00:00Z", "2020-01-01T00:00:00Z",
                "2020-01-03T12:00:00+05:00"], users=[3, 1, 2, 4])
    write_day_partitioned(t, out, sort_by=["user_id", "event_timestamp"])
    assert sorted(p.name for p in out.iterdir()) == ["2020-01-01.parquet", "2020-01-02.parquet", "2020-01-03.parquet"]
    assert pq.read_table(out / "2020-01-01.parquet").column("user_id").to_pylist() == [2, 3]
    assert pq.read_table(out / "2020-01-03.parquet").column("user_id").to_pylist() == [4]  # 07:00 UTC
    whole = pd.read_parquet(out)  # the folder reads as one table, no partition column added
    assert list(whole.columns) == ["user_id", "event_timestamp"] and sorted(whole["user_id"]) == [1, 2, 3, 4]
    write_day_partitioned(_table(["2021-05-05T00:00:00Z"]), out)
    assert [p.name for p in out.iterdir()] == ["2021-05-05.parquet"]  # old days gone
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_one_day_replaces_only_its_file(tmp_path):
    out = tmp_path / "seq.parquet"
    write_day_partitioned(_table(["2020-01-01T01:00:00Z", "2020-01-02T01:00:00Z"]), out)
    before = (out / "2020-01-01.parquet").read_bytes()
    write_day_partition(_table(["2020-01-02T05:00:00Z", "2020-01-02T03:00:00Z"], users=[9, 8]), out,
                        date(2020, 1, 2), sort_by=["event_timestamp"])
    assert (out / "2020-01-01.parquet").read_bytes() == before
    assert pq.read_table(out / "2020-01-02.parquet").column("user_id").to_pylist() == [8, 9]
    write_day_partition(_table([]), out, date(2020, 1, 3))  # materialized with 0 rows: an empty file
    assert pq.read_metadata(out / "2020-01-03.parquet").num_rows == 0
    assert len(pd.read_parquet(out)) == 3


def test_one_day_refuses_other_days_rows_and_a_single_file(tmp_path):
    out = tmp_path / "seq.parquet"
    with pytest.raises(ValueError, match=r"1 row\(s\) of the 2020-01-02 partition have a event_timestamp on another day"):
        write_day_partition(_table(["2020-01-02T00:00:00Z", "2020-01-01T23:59:59Z"]), out, date(2020, 1, 2))
    pq.write_table(_table(["2020-01-02T00:00:00Z"]), out)
    with pytest.raises(ValueError, match="is a single parquet file, not a day-partitioned folder"):
        write_day_partition(_table(["2020-01-02T00:00:00Z"]), out, date(2020, 1, 2))


def test_spark_day_folders_are_consolidated_one_day_at_a_time(tmp_path):
    """The Spark output partitioned by day (what features/spark.write_day_folders writes) becomes
    one sorted, schema-cast file per day; a one-day run refuses other days' rows."""
    from ppm_platform.io import SPARK_DAY_COLUMN, consolidate_day_dirs

    def spark_like(root, day, users):  # Spark's layout: <col>=<day>/part-*.parquet, no day column inside
        d = root / f"{SPARK_DAY_COLUMN}={day}"
        d.mkdir(parents=True)
        pq.write_table(_table([f"{day}T10:00:00Z"] * len(users), users=users).cast(
            pa.schema([("user_id", pa.int32()), ("event_timestamp", pa.timestamp("ns", tz="UTC"))])), d / "part-0.parquet")

    src, out = tmp_path / "spark", tmp_path / "seq.parquet"
    spark_like(src, "2020-01-01", [5, 1])
    spark_like(src, "2020-01-02", [2])
    assert consolidate_day_dirs(src, out, SCHEMA, ["user_id"]) == 3
    assert not src.exists() and sorted(p.name for p in out.iterdir()) == ["2020-01-01.parquet", "2020-01-02.parquet"]
    first = pq.read_table(out / "2020-01-01.parquet")
    assert first.schema.equals(SCHEMA) and first.column("user_id").to_pylist() == [1, 5]
    spark_like(src, "2020-01-02", [7, 3])
    assert consolidate_day_dirs(src, out, SCHEMA, ["user_id"], day=date(2020, 1, 2)) == 2
    assert pq.read_table(out / "2020-01-02.parquet").column("user_id").to_pylist() == [3, 7]
    assert pq.read_table(out / "2020-01-01.parquet").equals(first)
    spark_like(src, "2020-01-05", [1])
    with pytest.raises(ValueError, match=r"the 2020-01-04 partition's Spark output holds rows of other days \['2020-01-05'\]"):
        consolidate_day_dirs(src, out, SCHEMA, ["user_id"], day=date(2020, 1, 4))
    assert consolidate_day_dirs(tmp_path / "nothing", out, SCHEMA, day=date(2020, 1, 4)) == 0  # an empty day
    assert pq.read_metadata(out / "2020-01-04.parquet").num_rows == 0
