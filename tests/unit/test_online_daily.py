"""The daily online path (``pipeline.online_user_features``) through real Feast on tiny
synthetic tables, on both online stores (SQLite; Redis = a real ``redis-server`` on loopback): a day's rows
reach the online store whatever the view's ``most_recent_end_time`` is (a full materialize at mid-day, late
events re-run for a day), and an entity's online value never moves back to an older row. Also pins the
online-write semantics of the two Feast stores that the design rests on."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from ppm_platform import feature_store as fsmod
from ppm_platform import pipeline
from ppm_platform.config import Settings
from ppm_platform.data import schemas
from ppm_platform.io import write_parquet_atomic

try:  # pytest's default (prepend) import mode puts tests/unit on sys.path
    from test_feature_store import DM, INTERACTIONS, L, _cache_row, _seq_row, _write_tables, write_counter_tables
except ImportError:  # tests/ made a package
    from tests.unit.test_feature_store import (DM, INTERACTIONS, L, _cache_row, _seq_row, _write_tables,
                                               write_counter_tables)

UTC = timezone.utc
DAY = datetime(2024, 1, 3, tzinfo=UTC)  # the day the daily path (re)processes; the base rows end on Jan 2
NEXT = DAY + timedelta(days=1)
USERS = (1, 2, 3)


@pytest.fixture(scope="module")
def redis_addr(tmp_path_factory):
    from ppm_platform.testing.cluster import start_redis

    proc, addr = start_redis(tmp_path_factory.mktemp("redis"))
    yield addr
    proc.kill()
    proc.wait()


def _settings(root, store: str, request) -> Settings:
    extra = {}
    if store == "redis":  # one server for the module: start each test on an empty one
        import redis

        extra = {"online_store": "redis", "redis": request.getfixturevalue("redis_addr")}
        host, port = extra["redis"].split(":")
        redis.Redis(host=host, port=int(port)).flushall()
    return Settings.from_env(env={}, artifacts_dir=root / "artifacts", sequence={"max_len": L}, ppm={"d_model": DM},
                             partitions={"start_date": "2023-01-01", "end_date": None}, **extra).ensure_dirs()


class Log:
    """The user-level feature tables of a growing event log: one sequence row, one PPM-cache row and one
    counter row per event (stamped + 1 µs); ``marker`` tells the rows of one event apart online."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.events: list[dict] = []  # {user, item, ts, marker}

    def add(self, user: int, item: int, ts: datetime, marker: int) -> None:
        self.events.append({"user": user, "item": item, "ts": ts, "marker": marker})

    def write(self) -> None:
        """Rewrite the time-varying tables: the base rows of ``_write_tables`` plus the events (what the daily
        partitions hold after ``user_features_daily``); the marker of a user's later row is also written into
        every later row of the same user (a late event changes the content of the rows after it)."""
        fd = self.settings.features_dir
        base_seq = pd.read_parquet(fd / "behavior_sequences.parquet").iloc[:5]  # _write_tables' 5 rows
        base_cache = pd.read_parquet(fd / "ppm_user_cache.parquet").iloc[:5]
        ev = sorted(self.events, key=lambda e: e["ts"])
        seq, cache = [], []
        for e in ev:
            earlier = [x["marker"] for x in ev if x["user"] == e["user"] and x["ts"] <= e["ts"]]
            seq.append(_seq_row(e["user"], e["ts"], [e["item"], *[100 + m for m in earlier]]))
            cache.append(_cache_row(e["user"], e["ts"], sum(earlier)))
        write_parquet_atomic(pd.concat([base_seq, pd.DataFrame(seq)], ignore_index=True) if seq else base_seq,
                             fd / "behavior_sequences.parquet", schemas.BEHAVIOR_SEQUENCES)
        write_parquet_atomic(pd.concat([base_cache, pd.DataFrame(cache)], ignore_index=True) if cache else base_cache,
                             fd / "ppm_user_cache.parquet", schemas.PPM_USER_CACHE)
        inter = pd.DataFrame({"user_id": [e["user"] for e in ev], "item_id": [e["item"] for e in ev],
                              "event_timestamp": pd.to_datetime([e["ts"] for e in ev], utc=True), "click": 1, "order": 0})
        write_counter_tables(self.settings, pd.concat([INTERACTIONS, inter.astype(INTERACTIONS.dtypes.to_dict())],
                                                      ignore_index=True))


def _latest(path, key: str, entity: int, as_of: datetime) -> pd.Series:
    t = pd.read_parquet(path)
    t = t[(t[key] == entity) & (t["event_timestamp"] <= as_of)]
    return t.sort_values("event_timestamp").iloc[-1]


def _assert_online_is_offline_latest(settings: Settings, as_of: datetime) -> None:
    """Every user's (and item's) online row of the daily views is the offline table's latest row as of
    ``as_of`` (the views' materialized end)."""
    store = fsmod.get_store(settings)
    fd = settings.features_dir
    refs = ["user_recent_items:hist_item_ids", "ppm_user_cache:ppm_seq_len", "user_stats:user_impressions"]
    for u in USERS:
        got = store.get_online_features(features=refs, entity_rows=[{"user_id": u}]).to_dict()
        want = (list(_latest(fd / "behavior_sequences.parquet", "user_id", u, as_of)["hist_item_ids"]),
                int(_latest(fd / "ppm_user_cache.parquet", "user_id", u, as_of)["ppm_seq_len"]),
                int(_latest(fd / "user_stats.parquet", "user_id", u, as_of)["user_impressions"]))
        assert (list(got["hist_item_ids"][0]), got["ppm_seq_len"][0], got["user_impressions"][0]) == want, u
    for i in (10, 11, 12):
        got = store.get_online_features(features=["item_stats:item_impressions"], entity_rows=[{"item_id": i}]).to_dict()
        assert got["item_impressions"][0] == int(_latest(fd / "item_stats.parquet", "item_id", i, as_of)["item_impressions"]), i


@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_daily_path_writes_the_days_rows_whatever_the_views_end(tmp_path, request, store):
    settings = _settings(tmp_path, store, request)
    _write_tables(settings)
    fsmod.apply_definitions(settings)
    log = Log(settings)
    # a full online_store run at mid-day of DAY: the views' most_recent_end_time is DAY 12:00
    fsmod.materialize(settings, end=DAY + timedelta(hours=12))
    # then the day's partitions are written (user 3 before noon, user 1 after) and the daily run of DAY
    log.add(3, 10, DAY + timedelta(hours=8), marker=1)
    log.add(1, 12, DAY + timedelta(hours=18), marker=2)
    log.write()
    res = pipeline.online_user_features(settings, end=NEXT, start=DAY)
    _assert_online_is_offline_latest(settings, NEXT)  # before the fix: user 3's 08:00 row was never written
    assert {v["from"] for v in res["views"].values()} == {DAY.isoformat()}
    assert fsmod.read_online_user(fsmod.get_store(settings), 3, ["ppm_user_cache:ppm_seq_len"])["ppm_seq_len"] == 1

    # the next day: user 3 again
    log.add(3, 11, NEXT + timedelta(hours=10), marker=4)
    log.write()
    pipeline.online_user_features(settings, end=NEXT + timedelta(days=1), start=NEXT)
    _assert_online_is_offline_latest(settings, NEXT + timedelta(days=1))

    # late events of DAY arrive and DAY is re-run: user 2 gets a new latest row; user 1's 18:00 row keeps its
    # timestamp but changes content; user 3's newer row of the next day must stay online
    log.add(2, 11, DAY + timedelta(hours=9), marker=8)
    log.add(1, 10, DAY + timedelta(hours=10), marker=16)
    log.add(3, 12, DAY + timedelta(hours=7), marker=32)
    log.write()
    res = pipeline.online_user_features(settings, end=NEXT, start=DAY)
    _assert_online_is_offline_latest(settings, NEXT + timedelta(days=1))  # before: "up to date", nothing written
    assert {v["to"] for v in res["views"].values()} == {(NEXT + timedelta(days=1)).isoformat()}
    one = fsmod.read_online_user(fsmod.get_store(settings), 1, ["ppm_user_cache:ppm_seq_len"])
    assert one["ppm_seq_len"] == 2 + 16  # the rewritten row, same timestamp (Redis would keep the old one)
    three = fsmod.read_online_user(fsmod.get_store(settings), 3, ["ppm_user_cache:ppm_seq_len"])
    assert three["ppm_seq_len"] == 32 + 1 + 4  # the next day's row, not DAY's
    for name in pipeline.DAILY_VIEWS:  # the re-run did not move the views' end back
        end = fsmod.get_store(settings).get_feature_view(name).most_recent_end_time
        assert end.replace(tzinfo=end.tzinfo or UTC) == NEXT + timedelta(days=1)


@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_feast_online_write_semantics(tmp_path, request, store):
    """What a Feast online write does with an older or an equal event_timestamp than the stored row: SQLite
    overwrites in both cases (it keeps no timestamp guard), Redis skips both (``new <= stored``) unless
    ``skip_dedup``. So the daily path can rely on neither: it writes the latest row as of the views' end."""
    settings = _settings(tmp_path, store, request)
    _write_tables(settings)
    fsmod.apply_definitions(settings)
    fs = fsmod.get_store(settings)
    t = datetime(2024, 1, 5, tzinfo=UTC)

    def write(ts, seq_len):
        fs.write_to_online_store("ppm_user_cache", pd.DataFrame({
            "user_id": [7], "event_timestamp": [ts], "ppm_user_seq": [[0.0] * (L * DM)], "ppm_seq_len": [seq_len],
            "ppm_user_version": ["v"]}))
        return fsmod.read_online_user(fs, 7, ["ppm_user_cache:ppm_seq_len"])["ppm_seq_len"]

    assert write(t, 1) == 1
    if store == "sqlite":  # last write wins, even an older or an equal timestamp
        assert (write(t - timedelta(days=1), 2), write(t - timedelta(days=1), 3)) == (2, 3)
    else:  # the stored newer row wins; an equal timestamp is skipped too
        assert (write(t - timedelta(days=1), 2), write(t, 3)) == (1, 1)
    assert write(t + timedelta(days=1), 5) == 5


@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_full_materialize_replaces_rows_with_unchanged_timestamps(tmp_path, request, store):
    """Caches recomputed by a retrained PPM keep their rows' timestamps: a full materialize must still put
    the new rows online (Feast's Redis store skipped them: an equal timestamp is not newer)."""
    settings = _settings(tmp_path, store, request)
    _write_tables(settings)
    fsmod.apply_definitions(settings)
    fsmod.materialize(settings, end=NEXT)
    p = settings.features_dir / "ppm_user_cache.parquet"
    write_parquet_atomic(pd.read_parquet(p).assign(ppm_user_version="retrained"), p, schemas.PPM_USER_CACHE)
    fsmod.materialize(settings, end=NEXT)
    fs = fsmod.get_store(settings)
    assert [fsmod.read_online_user(fs, u, ["ppm_user_cache:ppm_user_version"])["ppm_user_version"]
            for u in USERS] == ["retrained"] * 3
