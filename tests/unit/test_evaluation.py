"""Evaluation harness: the QM&EP / Base+QM&EP models, aggregation over seeds, targets, the
report schema, and a smoke run of the whole harness (all 5 Table-2 rows, 1 seed, data efficiency) on a tiny
synthetic training set built here."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from ppm_platform.config import EncoderSettings, Settings
from ppm_platform.models.ppm import PPM, PPMConfig
from ppm_platform.models.qmep import QMEP, BaseQMEP, MEConfig
from ppm_platform.testing.frames import with_counters
from ppm_platform.models.urm import URMConfig
from ppm_platform.evaluation import aggregate as agg
from ppm_platform.evaluation import harness, protocol
from ppm_platform.evaluation import report as report_files
from ppm_platform.reporting.plots import markdown_image
from ppm_platform.training.metrics import SLICES, auc

L, D = 5, 8
N_USERS, N_ITEMS, N_EVENTS = 40, 30, 1600
TEXT_DIM, IMAGE_DIM = EncoderSettings().text_dim, EncoderSettings().image_dim


# ---- models ----------------------------------------------------------------------------------------------
def _me_batch(b=6, me_dim=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(12, me_dim, generator=g)
    table[0] = 0
    tgt = torch.randint(1, 12, (b,), generator=g)
    hist = torch.randint(1, 12, (b, L), generator=g)
    mask = (torch.arange(L).unsqueeze(0) < torch.tensor([0, 5, 3, 1, 2, 4][:b]).unsqueeze(1)).float()
    return table, tgt, hist * mask.long(), mask


def test_qmep_catalog_path_equals_gathered_forward_and_has_no_ids():
    table, tgt, hist, mask = _me_batch()
    m = QMEP(MEConfig(me_dim=20, d_model=D, proj_hidden=16, dnn_hidden=(16,), tower_hidden=8)).eval()
    a = m(table[tgt], table[hist], mask)
    b = m.forward_catalog(table, tgt, hist, mask)
    assert a.shape == (6, 2) and torch.isfinite(a).all()
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not any(isinstance(x, torch.nn.Embedding) for x in m.modules())  # ID-free
    # an empty history pools to zero: row 0's representation has zero attention and mean parts
    rep = m.me(table[tgt], table[hist], mask)
    assert torch.all(rep[0, D:3 * D] == 0)


def test_base_qmep_uses_ids_and_me_features():
    table, tgt, hist, mask = _me_batch()
    cfg = URMConfig(n_users=10, n_items=12, user_side_cardinalities=(5, 4, 6), n_genres=3, max_len=L, emb_dim=4,
                    dnn_hidden=(16,), n_experts=2, expert_hidden=8, tower_hidden=4, use_ppm=False)
    m = BaseQMEP(cfg, MEConfig(me_dim=20, d_model=D, proj_hidden=16)).eval()
    ids = dict(user_idx=torch.arange(2, 8), item_idx=tgt, user_side=torch.ones(6, 3, dtype=torch.long),
               item_genres=torch.zeros(6, 3), item_content=torch.ones(6), user_dense=torch.zeros(6, 0),
               item_dense=torch.zeros(6, 0), hist_item_idx=hist, hist_mask=mask)
    out = m(**ids, target_me=table[tgt], hist_me=table[hist], me_mask=mask)
    assert out.shape == (6, 2)
    torch.testing.assert_close(out, m.forward_catalog(**ids, me_table=table, target_row=tgt, hist_row=hist,
                                                      me_mask=mask), rtol=1e-5, atol=1e-6)
    # both inputs matter: changing the user id or the target's ME feature changes the logits
    ids2 = {**ids, "user_idx": torch.arange(2, 8).flip(0)}
    assert not torch.allclose(out, m(**ids2, target_me=table[tgt], hist_me=table[hist], me_mask=mask))
    # (a constant shift would not do: the projection starts with a LayerNorm)
    assert not torch.allclose(out, m(**ids, target_me=table[tgt] * torch.linspace(-2, 2, 20), hist_me=table[hist],
                                     me_mask=mask))


# ---- aggregation and targets --------------------------------------------------------------------------------
def _slices(click_auc, order_auc=0.6):
    task = lambda a: {"auc": a, "gauc": a - 0.01, "logloss": 0.5, "gauc_users": 10, "gauc_users_skipped": 2}  # noqa: E731
    return {s: {"click": task(click_auc + (0.05 if s == "cold_items" else 0)), "order": task(order_auc),
                "impressions": 100} for s in SLICES}


def _run(model, window, seed, click):
    return {"model": model, "train_window": window, "seed": seed, "best_epoch": 1, "train_seconds": 1.0,
            "epochs": [], "valid": _slices(click), "test": _slices(click)}


def test_aggregate_mean_std_and_targets_hand_computed():
    runs = [_run("Popularity", protocol.FULL, None, 0.55), _run("GBDT", protocol.FULL, None, 0.63),
            _run("Base", protocol.FULL, 1, 0.60), _run("Base", protocol.FULL, 2, 0.64),
            _run("URM", protocol.FULL, 1, 0.70), _run("URM", protocol.FULL, 2, 0.71),
            _run("URM", protocol.RECENT, 1, 0.61), _run("URM", protocol.RECENT, 2, 0.61)]
    rep = agg.aggregate(runs)
    r = agg.lookup(rep, "Base")
    assert r["mean"] == pytest.approx(0.62) and r["std"] == pytest.approx(np.std([0.60, 0.64], ddof=1))
    assert r["n_seeds"] == 2 and r["values"] == [0.60, 0.64]
    assert agg.lookup(rep, "URM", "gauc_users_skipped")["mean"] == 2
    # every (model, window) x split x slice x task x metric is one record
    assert len(rep["records"]) == 5 * 2 * len(SLICES) * 2 * len(protocol.METRICS)
    # URM - Base paired by seed: +0.10, +0.07 -> mean 0.085, std 0.0212; required max(0.010, 2 std)
    lift = agg.paired_lift(rep, "URM", "Base")
    assert lift["mean"] == pytest.approx(0.085) and lift["std"] == pytest.approx(np.std([0.10, 0.07], ddof=1))
    assert agg.paired_lift(rep, "Base", "GBDT") == {"mean": pytest.approx(-0.01), "std": 0.0, "n": 1}
    rep["protocol"] = {"models": ["Popularity", "GBDT", "Base", "URM"], "data_efficiency": True,
                       "slices": list(SLICES)}
    t = {x["target"]: x for x in agg.targets(rep)}
    click = t["URM - Base >= +0.010, >= 2 std (click AUC)"]
    assert click["required"] == pytest.approx(2 * lift["std"]) and click["met"]
    assert click["gap"] == pytest.approx(0.085 - 2 * lift["std"])
    assert t["URM - Base >= +0.010, >= 2 std (order AUC)"]["measured"] == pytest.approx(0.0)  # 0.6 both
    assert not t["URM - Base >= +0.010, >= 2 std (order AUC)"]["met"]
    gb = t["Base >= GBDT - 0.005 (click AUC)"]
    assert gb["measured"] == pytest.approx(-0.01) and not gb["met"] and gb["gap"] == pytest.approx(-0.005)
    assert t["Base >= Popularity + 0.02 (click AUC)"]["met"]
    eff = t["URM@recent >= Base@100% (click AUC)"]
    assert eff["measured"] == pytest.approx(-0.01) and not eff["met"]
    assert not any("held-out" in k for k in t)  # only on the item-cold protocol


# ---- smoke run on a tiny synthetic dataset -------------------------------------------------------------------
def _synthetic(seed=0):
    """Training set + item_multimodal + a (random, untrained) PPM whose outputs fill the cache columns, as the
    ppm_item_cache / ppm_user_cache assets would. Clicks depend on a latent item quality that is also written
    into the ME feature, so the ME rows have signal."""
    rng = np.random.default_rng(seed)
    quality = rng.normal(size=N_ITEMS)
    text = rng.normal(size=(N_ITEMS, TEXT_DIM)).astype(np.float32)
    text[:, 0] = quality * 3
    image = rng.normal(size=(N_ITEMS, IMAGE_DIM)).astype(np.float32)
    items = np.arange(1, N_ITEMS + 1)
    mm = pd.DataFrame({"item_id": items, "text_emb": list(text), "image_emb": list(image),
                       "has_image": rng.random(N_ITEMS) < 0.8})
    ppm = PPM(PPMConfig(me_dim=TEXT_DIM + IMAGE_DIM + 1, d_model=D, n_layers=1, n_heads=2, ff_dim=16, max_len=L,
                        n_time_buckets=4, readout_hidden=8, dropout=0.0)).eval()
    me = np.concatenate([text, image, mm["has_image"].to_numpy(np.float32)[:, None]], axis=1)
    with torch.no_grad():
        item_vec = ppm.encode_items(torch.from_numpy(me)).numpy()
    ts = np.sort(rng.choice(np.arange(1_000_000), N_EVENTS, replace=False)).astype("int64")
    users = rng.integers(1, N_USERS + 1, N_EVENTS)
    it = rng.integers(1, N_ITEMS + 1, N_EVENTS)
    p = 1 / (1 + np.exp(-(quality[it - 1] * 1.5 + 0.03 * (users % 7) - 0.3)))
    click = (rng.random(N_EVENTS) < p).astype(np.int8)
    order = (click & (rng.random(N_EVENTS) < 0.4)).astype(np.int8)
    rows, past = [], {}
    for k in range(N_EVENTS):
        u = int(users[k])
        h = past.get(u, [])[:L]
        ids = [i for i, _ in h]
        ages = [float(ts[k] - t) for _, t in h]
        if ids:
            with torch.no_grad():
                seq = ppm.encode_sequence(torch.from_numpy(item_vec[np.array(ids) - 1])[None],
                                          torch.tensor([ages], dtype=torch.float32),
                                          torch.ones(1, len(ids))).numpy()[0]
            flat = np.zeros((L, D), np.float32)
            flat[: len(ids)] = seq
            user_seq, seq_len = flat.ravel().tolist(), float(len(ids))
        else:
            user_seq, seq_len = None, None
        rows.append({"user_id": u, "item_id": int(it[k]),
                     "event_timestamp": pd.Timestamp(int(ts[k]), unit="s", tz="UTC"),
                     "click": click[k], "order": order[k], "age": 18 + u % 40, "gender": "MF"[u % 2],
                     "occupation": f"o{u % 5}", "hist_item_ids": ids or None, "hist_age_s": ages or None,
                     "hist_len": float(len(ids)) if ids else None, "ppm_user_seq": user_seq, "ppm_seq_len": seq_len,
                     "ppm_user_version": "v1" if ids else None, "categories": [f"g{int(it[k]) % 4}"],
                     "ppm_item_vec": item_vec[it[k] - 1].tolist(), "ppm_item_version": "v1",
                     # semantic ids (item_semantic_id, 2 levels) for the +SID rows
                     "sid_1": int(it[k]) % 3, "sid_2": int(it[k]) % 2, "sid_version": "s1"})
        if click[k]:
            past[u] = [(int(it[k]), int(ts[k]))] + past.get(u, [])
    return with_counters(pd.DataFrame(rows)), mm, ppm


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("reports")
    df, mm, ppm = _synthetic()
    settings = Settings.from_env(env={}, artifacts_dir=out, sequence={"max_len": L}, ppm={"d_model": D},
                                 urm={"batch_size": 128, "dnn_hidden": [16]},
                                 evaluation={"seeds": 1, "epochs": 2})
    report = harness.run_evaluation(settings, df, mm, ppm, ppm_version="v1")
    paths = report_files.write_report(report, out)
    return settings, df, mm, ppm, report, paths


def test_harness_smoke_all_rows_and_schema(smoke):
    settings, df, _, _, report, paths = smoke
    assert report["schema_version"] == protocol.REPORT_SCHEMA_VERSION
    assert set(report) >= {"records", "runs", "protocol", "rows", "slice_sizes", "targets", "seconds"}
    assert sum(report["rows"][s] for s in ("train", "valid", "test")) == len(df)
    keys = {(r["model"], r["train_window"]) for r in report["records"]}
    assert keys == {(m, protocol.FULL) for m in protocol.MODELS} | {("Base", protocol.RECENT), ("URM", protocol.RECENT)}
    for r in report["records"]:
        assert set(r) == {"model", "train_window", "split", "slice", "task", "metric", "mean", "std", "n_seeds",
                          "values"}
        assert r["n_seeds"] == 1 and len(r["values"]) == 1 and r["std"] == 0.0
    for m in protocol.MODELS:
        for t in ("click", "order"):
            a = agg.lookup(report, m, "auc", t)["mean"]
            assert 0.0 <= a <= 1.0, (m, t, a)
    # the data-efficiency runs really trained on half the train window
    recent = [r for r in report["runs"] if r["train_window"] == protocol.RECENT]
    assert all(r["best_epoch"] in (1, 2) for r in recent) and len(recent) == 2
    assert report["rows"]["train_recent"] == round(report["rows"]["train"] * 0.5)
    # targets are the lookups' differences
    t0 = {t["target"]: t for t in report["targets"]}["URM - Base >= +0.010, >= 2 std (click AUC)"]
    assert t0["measured"] == pytest.approx(agg.lookup(report, "URM")["mean"] - agg.lookup(report, "Base")["mean"])
    assert t0["met"] == (t0["gap"] >= 0)


def test_baseline_rows_hand_computed(smoke):
    """Popularity = the item's smoothed train-window rate, computed here independently; GBDT: one run, its grid
    point selected on validation AUC, and it beats chance on data whose clicks depend on item quality."""
    settings, df, _, _, report, _ = smoke
    from ppm_platform.data.split import assign_split

    split = assign_split(df["event_timestamp"], 0.8, 0.1).to_numpy()
    train, test = df[split == "train"], df[split == "test"]
    m, p = settings.counters.prior_strength, train["click"].mean()
    rate = {i: (g["click"].sum() + m * p) / (len(g) + m) for i, g in train.groupby("item_id")}
    score = test["item_id"].map(lambda i: rate.get(i, p)).to_numpy()
    assert agg.lookup(report, "Popularity")["mean"] == pytest.approx(auc(test["click"].to_numpy(), score), abs=1e-12)
    gbdt = next(r for r in report["runs"] if r["model"] == "GBDT")
    assert gbdt["seed"] is None and agg.lookup(report, "GBDT")["n_seeds"] == 1
    for task, sel in gbdt["selected"].items():
        cands = [g for g in gbdt["grid"] if g["task"] == task]
        assert len(cands) == len(settings.evaluation.gbdt_learning_rates) * len(settings.evaluation.gbdt_max_leaf_nodes)
        assert sel["valid_auc"] == max(g["valid_auc"] for g in cands)
    assert agg.lookup(report, "GBDT")["mean"] > 0.6


def test_ppm_row_is_the_pretrained_ppm_scored_directly(smoke):
    settings, df, mm, ppm, report, _ = smoke
    from ppm_platform.data.split import assign_split

    test = (assign_split(df["event_timestamp"], 0.8, 0.1) == "test").to_numpy()
    # independent path: PPM's cached-feature readout on the training set's cache columns (== the full
    # forward on raw ME features, the caching-split property)
    seq = np.stack([np.zeros(L * D, np.float32) if v is None else np.asarray(v, np.float32)
                    for v in df["ppm_user_seq"]]).reshape(-1, L, D)
    mask = (np.arange(L)[None] < df["ppm_seq_len"].fillna(0).to_numpy()[:, None]).astype(np.float32)
    with torch.no_grad():
        p = torch.sigmoid(ppm.logit_from_cache(torch.tensor(np.stack(df["ppm_item_vec"])).float(),
                                               torch.from_numpy(seq), torch.from_numpy(mask))).numpy()
    want = auc(df["click"].to_numpy()[test], p[test])
    assert agg.lookup(report, "PPM", "auc", "click")["mean"] == pytest.approx(want, abs=1e-6)


def test_report_files(smoke):
    _, _, _, _, report, paths = smoke
    doc = json.loads(paths["json"].read_text())  # strict JSON (NaN written as null)
    assert len(doc["records"]) == len(report["records"])
    md = paths["markdown"].read_text()
    for m in protocol.MODELS:
        assert f"| {m} |" in md
    lift = agg.lookup(report, "URM")["mean"] - agg.lookup(report, "Base")["mean"]
    assert f"| **URM − Base** | {lift:+.4f}" in md
    assert md.count("| met |") + md.count("| missed |") == len(report["targets"]) == 7  # + URM+SID - URM
    assert "GBDT selected on validation AUC: click learning_rate" in md
    for key in ("auc_by_model_and_slice", "data_efficiency"):
        assert paths[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert markdown_image(paths["data_efficiency"], "x").startswith("![x](data:image/png;base64,iVBOR")


def test_bad_config_and_version_mismatch_raise(smoke):
    settings, df, mm, ppm, _, _ = smoke
    s = settings.model_copy(deep=True)
    s.evaluation.models = ("Base", "DeepFM")
    with pytest.raises(ValueError, match="DeepFM"):
        harness.run_evaluation(s, df, mm, ppm)
    with pytest.raises(ValueError, match="ppm_version"):
        harness.run_evaluation(settings, df, mm, ppm, ppm_version="other")
    with pytest.raises(KeyError, match="item_id 3 has no item_multimodal row"):
        harness.me_inputs(df, mm[mm["item_id"] != 3], L)


def test_evaluation_asset_and_cli_are_wired():
    import dagster as dg
    from click.testing import CliRunner

    from dagster_project.definitions import all_checks, defs
    from ppm_platform import cli

    graph = defs.resolve_asset_graph()
    parents = {k.to_user_string() for k in graph.get(dg.AssetKey("evaluation_report")).parent_keys}
    assert parents == {"training_set", "ppm_model", "item_multimodal"}
    check_names = {k.name for c in all_checks for k in c.check_keys}
    assert "evaluation_report_complete" in check_names
    res = CliRunner().invoke(cli.main, ["report", "--help"])
    assert res.exit_code == 0 and "evaluation_report" in res.output and "Exit codes:" in res.output


def test_id_dropout_only_replaces_known_ids():
    from ppm_platform.training.urm_train import id_dropout

    ids = [torch.tensor([0, 1, 2, 5, 7]), torch.tensor([3, 0, 4, 1, 9]), torch.ones(5, 2)]
    g = torch.Generator().manual_seed(0)
    assert id_dropout(ids, 0.0, g) is ids
    out = id_dropout(ids, 1.0, g)
    assert out[0].tolist() == [0, 1, 1, 1, 1] and out[1].tolist() == [1, 0, 1, 1, 1]  # padding 0 stays 0
    assert out[2] is ids[2]
    half = id_dropout([torch.arange(2, 10002), torch.arange(2, 10002)], 0.5, g)
    assert 0.45 < (half[0] == 1).float().mean().item() < 0.55
