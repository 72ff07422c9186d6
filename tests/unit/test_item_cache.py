"""The ranking service's item cache: gathered rows equal the encoder on the same online rows,
misses are read and kept, unknown ids are never cached (a later push is served at once), a refresh swaps in
new values, the size bound holds. Synthetic online rows from a fetch function the test controls; the real
Feast store is exercised in test_http_api.py (coherence through Feast)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ppm_platform.serving.item_cache import ItemFeatureCache
from ppm_platform.features.encoding import FeatureVectorizer

D = 3


class FakeOnline:
    """An online store of item rows (item_id -> features); ``fetch`` returns request order, None = absent."""

    def __init__(self):
        self.rows = {i: self.row(i) for i in (10, 11, 12, 13)}
        self.calls: list[list[int]] = []

    @staticmethod
    def row(i: int, bump: float = 0.0, version: str = "v1") -> dict:
        return {"categories": ["a"] if i % 2 else ["b"], "item_impressions": i + bump, "item_clicks": i // 2,
                "item_orders": 0, "ppm_item_vec": [float(i) + bump] * D, "ppm_item_version": version}

    def fetch(self, ids: list[int]) -> pd.DataFrame:
        self.calls.append(list(ids))
        cols = ["categories", "item_impressions", "item_clicks", "item_orders", "ppm_item_vec", "ppm_item_version"]
        return pd.DataFrame([{"item_id": i, **(self.rows.get(i) or dict.fromkeys(cols))} for i in ids])


@pytest.fixture
def enc():
    train = pd.DataFrame({"user_id": [1, 2], "item_id": [10, 11], "gender": "F", "occupation": "x",
                          "categories": [["a"], ["b"]], "user_impressions": 1, "user_clicks": 0, "user_orders": 0,
                          "item_impressions": [5, 9], "item_clicks": [1, 2], "item_orders": [0, 1]})
    return FeatureVectorizer.fit(train, max_len=2, ppm_dim=D, counter_windows=(),
                              rate_prior={"click": 0.5, "order": 0.2, "strength": 10.0})


def test_cached_rows_equal_the_encoder_and_misses_are_read(enc):
    online = FakeOnline()
    cache = ItemFeatureCache(online.fetch, enc, max_items=100, refresh_s=None)
    assert cache.load([10, 11, 12]) == {"items": 3, "known": 3, "seconds": pytest.approx(0, abs=5), "capped": 0}
    ids = [12, 10, 13, 12, 999]  # a duplicate, a miss the store has (13), an unknown id (999)
    got = cache.get(ids)
    want = enc.encode_items(online.fetch(ids))
    for k in want:
        np.testing.assert_array_equal(got.inputs[k], want[k], err_msg=k)
    assert got.known.tolist() == [True, True, True, True, False] and got.misses == 2
    assert got.versions == {"v1"}
    n_calls = len(online.calls)
    again = cache.get([13])  # kept after its first miss
    assert again.misses == 0 and len(online.calls) == n_calls
    cache.get([999])  # never cached: asked again
    assert online.calls[-1] == [999]
    online.rows[999] = online.row(999)  # pushed now: the next request serves it
    assert cache.get([999]).known.tolist() == [True]


def test_refresh_serves_new_values_and_versions(enc):
    online = FakeOnline()
    cache = ItemFeatureCache(online.fetch, enc, max_items=100, refresh_s=None)
    cache.load([10, 11])
    before = cache.get([10]).inputs["ppm_item_vec"].copy()
    online.rows[10] = online.row(10, bump=5.0, version="v2")  # re-materialized by another PPM
    assert np.array_equal(cache.get([10]).inputs["ppm_item_vec"], before)  # the snapshot until a refresh
    cache.refresh()
    got = cache.get([10])
    assert got.inputs["ppm_item_vec"].tolist() == [[15.0] * D] and got.versions == {"v2"}


def test_background_refresh_and_size_bound(enc):
    import time

    online = FakeOnline()
    cache = ItemFeatureCache(online.fetch, enc, max_items=2, refresh_s=0.05)
    assert cache.load([10, 11, 12])["capped"] == 1 and cache.size == 2
    cache.get([12])  # a miss with no room left: read, not kept
    assert cache.size == 2 and cache.get([12]).misses == 1
    cache.start()
    try:
        online.rows[11] = online.row(11, bump=1.0)
        deadline = time.monotonic() + 30
        while cache.get([11]).inputs["ppm_item_vec"][0, 0] != 12.0:
            assert time.monotonic() < deadline, "the background refresh never served the new value"
            time.sleep(0.02)
        assert cache.refreshes >= 2
    finally:
        cache.stop()
    with pytest.raises(ValueError, match="max_items"):
        ItemFeatureCache(online.fetch, enc, max_items=0)


def test_refresh_reads_in_short_slices_and_equals_a_bulk_load(enc, monkeypatch):
    """A background refresh reads REFRESH_CHUNK_IDS ids per Feast call with a pause between calls (a bulk
    read holds the GIL and stalls request threads); the first load reads in bulk; both give the same rows."""
    from ppm_platform.serving import item_cache as ic

    monkeypatch.setattr(ic, "REFRESH_CHUNK_IDS", 3)
    monkeypatch.setattr(ic, "REFRESH_PAUSE_S", 0.001)
    online = FakeOnline()
    online.rows.update({i: online.row(i) for i in range(20, 30)})
    ids = [10, 11, 12, 13, *range(20, 30)]
    cache = ItemFeatureCache(online.fetch, enc, max_items=100, refresh_s=None)
    cache.load(ids)
    assert [len(c) for c in online.calls] == [14]
    bulk = {k: v.copy() for k, v in cache.get(ids).inputs.items()}
    online.calls.clear()
    cache.refresh()
    assert [len(c) for c in online.calls] == [3, 3, 3, 3, 2] and sum(online.calls, []) == ids
    again = cache.get(ids).inputs
    assert all(np.array_equal(again[k], bulk[k]) for k in bulk)
