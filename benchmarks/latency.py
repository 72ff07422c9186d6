"""Serving latency harness: prints one JSON document (committed runs: ``benchmarks/results/``;
``docs/serving.md`` shows only figures of the committed run).

For 1 user x N candidates (N = 10, 100, 500), p50/p95/p99 (ms) over ``--requests`` requests of

(a)  ``a_idrec``: the IDRec-only Base model (``models/base``), the production Ranker: its user features from
     Feast (only what it reads), the candidates from the in-process item cache, the serving ONNX graph;
(b)  ``b_urm_cached``: the URM the same way, reading the cached PPM features (``ppm_user_cache`` from the
     user's Feast row, ``ppm_item_cache`` inside the item cache) -- the production path;
(b0) ``b_urm_feast_items``: (b) with the candidates read from Feast in every request (no item cache): what
     the item cache buys;
(c') ``c1_urm_ppm_online``: the URM with PPM computed per request from looked-up ME features (the user row and
     the ME features of the candidates and the history from Feast, then PPM's item tower and Transformer);
anchor ``feast_lookup_anchor_ms``: a plain Feast ``get_online_features`` of the same 1 user + N items through
     the URM's feature services ``urm_user`` and ``urm_item`` (what a request costs if it reads its services).

These run interleaved request by request (same user, same candidates, rotating who goes first), so machine
noise hits them alike. Then, not interleaved and only ``--uncached`` requests per size (slow by nature):

(c)  ``c_urm_uncached``: a system without any cache: the text and image **encoders** run on the candidates'
     and the history items' titles and posters (the items table), then PPM's item tower and Transformer, then
     the URM (its other inputs read as in (b)).

Also: the ONNX forward alone at batch 100 (serving and batch graphs), max |score(c') - score(b)| and
|score(c) - score(b)| (online PPM reproduces the caches), new item -> servable (push + first rank returning
it with content features), and the item cache's staleness: time from writing a new value for a cached item
to the online store until the Ranker serves it, with a short refresh interval.

``--stores sqlite,redis`` runs everything on the local SQLite online store and on Redis (the cluster
profile's store): a real ``redis-server`` on loopback started here, every feature view materialized into it
from the same offline tables (a copy of the Feast registry; the artifacts stay untouched).

Usage: ``PPM_ARTIFACTS_DIR=... python benchmarks/latency.py [--requests 400] [--sizes 10,100,500]
[--stores sqlite,redis] [--out FILE]`` (needs a finished run). Goals are reported, never asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ME_FEATURES = ["item_multimodal:text_emb", "item_multimodal:image_emb", "item_multimodal:has_image"]


def _pcts(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=float)
    return {"p50": round(float(np.percentile(a, 50)), 3), "p95": round(float(np.percentile(a, 95)), 3),
            "p99": round(float(np.percentile(a, 99)), 3), "mean": round(float(a.mean()), 3), "n": int(a.size)}


class OnlinePPM:
    """(c') and (c): the URM with PPM's frozen item tower and Transformer run per request instead of read
    from the caches; ``encoders=True`` also runs the text and image encoders on the items' raw content."""

    def __init__(self, settings, urm, encoders: bool):
        import torch

        from ppm_platform.model_store import load_ppm

        torch.set_num_threads(1)
        self.torch, self.urm, self.settings, self.encoders = torch, urm, settings, encoders
        self.ppm, meta = load_ppm(settings.models_dir / "ppm")
        self.ppm.eval()
        if meta.get("ppm_version") != urm.ppm_version:
            raise SystemExit(f"models/ppm is {meta.get('ppm_version')} but the URM was trained with {urm.ppm_version}")
        self.L = settings.sequence.max_len
        self.user_refs = [r for r in urm.user_refs if not r.startswith("ppm_user_cache:")]
        self.user_refs += ["user_recent_items:hist_age_s"]
        self.items = pd.read_parquet(settings.tables_dir / "items.parquet").set_index("item_id")
        if encoders:
            from ppm_platform.encoders.factory import encoder_settings

            self.enc_settings = encoder_settings(settings)

    def _me(self, ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """ME features [n, me_dim] and a known mask of ``ids``: looked up (c') or encoded (c)."""
        if self.encoders:
            from ppm_platform.features.item_multimodal import encode_items_frame, me_matrix

            rows = self.items.loc[[i for i in ids if i in self.items.index]].reset_index()
            mm = encode_items_frame(rows, self.enc_settings)
            got_ids, me = me_matrix(mm)
            pos = {int(i): j for j, i in enumerate(got_ids)}
            out = np.zeros((len(ids), me.shape[1]), np.float32)
            known = np.array([i in pos for i in ids])
            for j, i in enumerate(ids):
                if i in pos:
                    out[j] = me[pos[i]]
            return out, known
        from ppm_platform.feature_store import read_online_items

        f = read_online_items(self.urm.store, ids, service=ME_FEATURES)
        known = f["text_emb"].notna().to_numpy()
        me = np.zeros((len(f), self.ppm.cfg.me_dim), dtype=np.float32)
        if known.any():
            k = f[known]
            me[known] = np.concatenate([np.stack(k["text_emb"].map(np.asarray).to_numpy()),
                                        np.stack(k["image_emb"].map(np.asarray).to_numpy()),
                                        k["has_image"].to_numpy(dtype=np.float32)[:, None]], axis=1)
        return me, known

    def rank(self, user_id: int, item_ids: list[int]) -> tuple[np.ndarray, float, float]:
        from ppm_platform.feature_store import read_online_user
        from ppm_platform.features.ppm_caches import pad_history

        torch = self.torch
        t0 = time.perf_counter()
        user = read_online_user(self.urm.store, user_id, service=self.user_refs)
        hist = [int(i) for i in list(user.get("hist_item_ids") or [])[: self.L]]
        ages = list(user.get("hist_age_s") or [])[: self.L]
        items = self.urm.item_cache.get(item_ids)
        need = list(dict.fromkeys([*item_ids, *hist]))
        t1 = time.perf_counter()
        me, known = self._me(need)
        pos = {i: j for j, i in enumerate(need)}
        with torch.inference_mode():
            vec = self.ppm.encode_items(torch.from_numpy(me)).numpy()
            vec[~known] = 0.0
            _, age, mask = pad_history([hist], [ages], self.L)
            hvec = np.zeros((1, self.L, vec.shape[1]), dtype=np.float32)
            for j, i in enumerate(hist):
                hvec[0, j] = vec[pos[i]]
            m = torch.from_numpy(mask)
            seq = self.ppm.encode_sequence(torch.from_numpy(hvec), torch.from_numpy(age), m)
            seq = (seq * m.unsqueeze(-1)).numpy().reshape(-1)
        urow = dict(user)
        urow.update(ppm_user_seq=seq, ppm_seq_len=int(mask.sum()) if hist else None)
        x_items = dict(items.inputs)
        x_items["ppm_item_vec"] = np.stack([vec[pos[i]] for i in item_ids]).astype(np.float32)
        probs = self.urm.serving_scorer.predict({**self.urm.vectorizer.encode_user(urow), **x_items})
        t2 = time.perf_counter()
        return probs, (t1 - t0) * 1e3, (t2 - t1) * 1e3


def _anchor(store, user_id: int, item_ids: list[int]) -> float:
    """ms of a plain Feast lookup of 1 user (``urm_user``) + the items (``urm_item``), to_dict included."""
    t0 = time.perf_counter()
    store.get_online_features(features=store.get_feature_service("urm_user", allow_cache=True),
                              entity_rows=[{"user_id": int(user_id)}]).to_dict()
    store.get_online_features(features=store.get_feature_service("urm_item", allow_cache=True),
                              entity_rows={"item_id": [int(i) for i in item_ids]}).to_dict()
    return (time.perf_counter() - t0) * 1e3


@contextlib.contextmanager
def online_store(settings, kind: str, workdir: Path):
    """Settings whose online store is ``kind``: the artifacts' SQLite store as they are, or a real
    ``redis-server`` on loopback with every feature view materialized into it (artifacts linked, the Feast
    registry copied so the SQLite state is untouched). Yields ``(settings, info)``."""
    if kind == "sqlite":
        yield settings, {"online_store": "sqlite"}
        return
    if kind != "redis":
        raise SystemExit(f"unknown store {kind!r}: sqlite or redis")
    from ppm_platform import feature_store as fsmod
    from ppm_platform.testing.cluster import start_redis

    art = workdir / "artifacts"
    art.mkdir(parents=True)
    for p in settings.artifacts_dir.iterdir():  # everything but the Feast folder, by link
        if p.name not in ("feast", "dagster_home", "item_cold"):
            (art / p.name).symlink_to(p)
    shutil.copytree(settings.feast_dir, art / "feast")
    proc, addr = start_redis(workdir)
    try:
        s = settings.model_copy(update={"artifacts_dir": art, "online_store": "redis", "redis": addr})
        t0 = time.perf_counter()
        res = fsmod.materialize(s)
        yield s, {"online_store": "redis", "redis": "127.0.0.1 (loopback)",
                  "materialize_seconds": round(time.perf_counter() - t0, 2), "views": res["views"]}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _staleness(settings, urm_cls, user: int, cands: list[int], refresh_s: float) -> dict:
    """Write a new value of one cached item's counters to the online store; seconds until the Ranker (item
    cache refresh every ``refresh_s``) serves the changed score; then restore the row."""
    from ppm_platform.feature_store import get_store

    s = settings.model_copy(update={"serving": settings.serving.model_copy(update={"item_cache_refresh_s": refresh_s})})
    store = get_store(s)
    r = urm_cls(s, "urm", store=store)
    item = cands[0]
    stats = pd.read_parquet(s.features_dir / "item_stats.parquet")
    row = stats[stats["item_id"] == item].sort_values("event_timestamp").tail(1).reset_index(drop=True)
    before = float(r.rank(user, cands).scores.set_index("item_id").at[item, "click"])
    # a newer row with every count 0 (Redis keeps a key's row only if its event time is newer: stamp both)
    changed = row.assign(event_timestamp=pd.Timestamp.now(tz="UTC"))
    for c in [c for c in row.columns if c.startswith("item_") and c != "item_id" and "rate" not in c]:
        changed[c] = row[c] * 0
    try:
        t0 = time.perf_counter()
        store.write_to_online_store("item_stats", changed)
        observed = None
        while time.perf_counter() - t0 < refresh_s * 3 + 10:
            now = float(r.rank(user, cands).scores.set_index("item_id").at[item, "click"])
            if abs(now - before) > 1e-6:
                observed = time.perf_counter() - t0
                break
            time.sleep(0.05)
    finally:
        store.write_to_online_store("item_stats", row.assign(event_timestamp=pd.Timestamp.now(tz="UTC")))
        r.close()
    return {"refresh_s": refresh_s, "reload_s": r.item_cache.refresh()["seconds"],
            "observed_s": None if observed is None else round(observed, 3),
            "bound_s": "refresh_s + reload_s", "items_cached": r.item_cache.size}


def run_store(settings, args) -> dict:
    from ppm_platform.serving.ranker import Ranker

    inter = pd.read_parquet(settings.tables_dir / "interactions.parquet")
    test = inter.tail(max(len(inter) // 10, 1))
    users = [int(u) for u in test["user_id"].value_counts().index[:20]]
    popular = [int(i) for i in inter["item_id"].value_counts().index]
    sizes = [int(s) for s in args.sizes.split(",")]
    if max(sizes) > len(popular):
        raise SystemExit(f"only {len(popular)} items: lower --sizes")
    t0 = time.perf_counter()
    urm = Ranker(settings, "urm")
    start = {"urm_ranker_start_s": round(time.perf_counter() - t0, 2)}
    base = Ranker(settings, "base", store=urm.store)
    urm_feast = Ranker(settings, "urm", store=urm.store, item_cache=False)
    online = OnlinePPM(settings, urm, encoders=False)
    start["item_cache"] = {"items": urm.item_cache.size, "load_s": urm.item_cache._snap.load_seconds}

    def ranker(r):
        def run(u, c):
            res = r.rank(u, c)
            return res.scores, res.lookup_ms, res.model_ms
        return run

    variants = {"a_idrec": ranker(base), "b_urm_cached": ranker(urm), "b_urm_feast_items": ranker(urm_feast),
                "c1_urm_ppm_online": lambda u, c: online.rank(u, c),
                "feast_lookup_anchor": lambda u, c: (None, _anchor(urm.store, u, c), 0.0)}
    out: dict = {**start, "latency_ms": {}}
    max_c1 = 0.0
    for n in sizes:
        cands = popular[:n]
        rec = {k: {"lookup": [], "model": [], "total": []} for k in variants}
        for w in range(args.warmup):
            for f in variants.values():
                f(users[w % len(users)], cands)
        names = list(variants)
        for k in range(args.requests):
            u = users[k % len(users)]
            order = names[k % len(names):] + names[: k % len(names)]  # rotate who goes first
            got = {}
            for name in order:
                res, lk, md = variants[name](u, cands)
                rec[name]["lookup"].append(lk)
                rec[name]["model"].append(md)
                rec[name]["total"].append(lk + md)
                got[name] = res
            if k < 20:  # (c') must reproduce (b): same URM, PPM computed online instead of read from the cache
                b = got["b_urm_cached"].set_index("item_id").loc[cands, "click"].to_numpy()
                max_c1 = max(max_c1, float(np.abs(got["c1_urm_ppm_online"][:, 0] - b).max()))
        lat = {name: {part: _pcts(v) for part, v in r.items()} for name, r in rec.items() if name != "feast_lookup_anchor"}
        out["latency_ms"][str(n)] = lat
        out.setdefault("feast_lookup_anchor_ms", {})[str(n)] = _pcts(rec["feast_lookup_anchor"]["lookup"])
        print(f"# {settings.online_store or 'sqlite'}: {n} candidates done", file=sys.stderr, flush=True)
    out["c1_vs_b_max_abs_click_diff"] = max_c1

    # (c) no caches at all: the encoders run in the request
    uncached = OnlinePPM(settings, urm, encoders=True)
    uncached.rank(users[0], popular[:5])  # loads the encoders (not timed)
    out["c_urm_uncached_ms"], max_c = {}, 0.0
    for spec in args.uncached.split(","):
        n, reqs = (int(x) for x in spec.split(":"))
        if n not in sizes:
            continue
        cands, tot, lk_, md_ = popular[:n], [], [], []
        for k in range(reqs):
            u = users[k % len(users)]
            probs, lk, md = uncached.rank(u, cands)
            lk_.append(lk)
            md_.append(md)
            tot.append(lk + md)
            b = urm.rank(u, cands).scores.set_index("item_id").loc[cands, "click"].to_numpy()
            max_c = max(max_c, float(np.abs(probs[:, 0] - b).max()))
        out["c_urm_uncached_ms"][str(n)] = {"lookup": _pcts(lk_), "model": _pcts(md_), "total": _pcts(tot)}
    out["c_vs_b_max_abs_click_diff"] = max_c

    # the ONNX forward alone at batch 100 (inputs prepared once): serving graph and batch graph
    for name, r in (("urm", urm), ("base", base)):
        user = r.lookup_user(users[0])
        items = r.item_cache.get(popular[:100]).inputs
        ux = r.vectorizer.encode_user(user)
        for graph, scorer, x in (("serving", r.serving_scorer, {**ux, **items}),
                                 ("batch", r.scorer, {**{k: np.ascontiguousarray(np.broadcast_to(v, (100, *v.shape[1:])))
                                                         for k, v in ux.items()}, **items})):
            for _ in range(50):
                scorer.predict(x)
            ts = []
            for _ in range(500):
                t = time.perf_counter()
                scorer.predict(x)
                ts.append((time.perf_counter() - t) * 1e3)
            out[f"onnx_{name}_{graph}_forward_batch100_ms"] = _pcts(ts)

    # new item -> servable (the pushed rows are a cache miss read from Feast in the next request)
    if args.new_items:
        from ppm_platform.serving.new_item import add_new_item

        posters = sorted((settings.data_dir / "posters").glob("*.jpg"))[:args.new_items]
        new_id0 = 10_000_000 + int(time.time()) % 1_000_000 * 10
        runs = []
        for j in range(args.new_items):
            t = time.perf_counter()
            info = add_new_item(settings, new_id0 + j, f"A New Movie {j} (2026)", ["Comedy", "Drama"][: 1 + j % 2],
                                posters[j] if j < len(posters) else None, 2026, store=urm.store)
            res = urm.rank(users[0], [new_id0 + j, *popular[:99]])
            servable_ms = (time.perf_counter() - t) * 1e3
            row = res.scores.set_index("item_id").loc[new_id0 + j]
            runs.append({"with_image": bool(info["has_image"]), "encode_ms": info["encode_ms"],
                         "push_ms": info["push_ms"], "new_item_to_servable_ms": round(servable_ms, 1),
                         "known_online": bool(row["known"])})
        out["new_item"] = {"first_call_includes_encoder_load": True, "runs": runs,
                           "warm_p50_ms": round(float(np.median([r["new_item_to_servable_ms"] for r in runs[1:]])), 1)
                           if len(runs) > 1 else None}
    out["item_cache_staleness"] = _staleness(settings, Ranker, users[0], popular[:100], args.refresh_s)
    for r in (urm, base):
        r.close()

    goals = {}
    for n in sizes:
        lat = out["latency_ms"][str(n)]
        a, b = lat["a_idrec"]["total"]["p99"], lat["b_urm_cached"]["total"]["p99"]
        goals[str(n)] = {"p99_b_over_a": round(b / a, 3), "p99_b_over_a_le_1.10": b <= 1.10 * a,
                         "p99_b_over_anchor": round(b / out["feast_lookup_anchor_ms"][str(n)]["p99"], 3),
                         "p99_b_over_b_feast_items": round(b / lat["b_urm_feast_items"]["total"]["p99"], 3)}
        if str(n) in out["c_urm_uncached_ms"]:
            c = out["c_urm_uncached_ms"][str(n)]["total"]["p99"]
            goals[str(n)].update({"p99_c_over_b": round(c / b, 1), "p99_c_over_b_ge_10": c >= 10 * b})
    if "100" in goals:
        goals["100"]["p99_b_le_half_anchor"] = goals["100"]["p99_b_over_anchor"] <= 0.5
    out["goals"] = goals
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=400, help="timed requests per interleaved variant and size")
    ap.add_argument("--sizes", default="10,100,500", help="candidate counts")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--uncached", default="10:20,100:20,500:5", help="N:requests of variant (c), per size")
    ap.add_argument("--new-items", type=int, default=4, help="new items pushed for the new-item timing (0 = skip)")
    ap.add_argument("--refresh-s", type=float, default=2.0, help="item cache refresh interval of the staleness run")
    ap.add_argument("--stores", default="sqlite,redis", help="online stores to run on: sqlite, redis")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args()

    from ppm_platform.config import Settings

    settings = Settings.from_env()
    doc: dict = {"benchmark": "serving latency", "python": platform.python_version(), "cpus": os.cpu_count(),
                 "load_avg_start": [round(x, 2) for x in os.getloadavg()], "requests_per_point": args.requests,
                 "sizes": args.sizes, "stores": {}}
    for kind in args.stores.split(","):
        with tempfile.TemporaryDirectory(prefix="ppm-latency-") as tmp, \
                online_store(settings, kind, Path(tmp)) as (s, info):
            doc["stores"][kind] = {**info, **run_store(s, args)}
    doc["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(doc, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
