"""Unit tests of the torch model layer: shapes, masking, learning, the PPM caching split, URM training,
the multi-task loss and model persistence. Small synthetic data made here; CPU only."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from ppm_platform.models import (
    IDREC_INPUT_NAMES, MLP, PPM, URM, URM_INPUT_NAMES, CrossNetV2, DINAttention, IDRec, IDRecConfig, MMoE, MMoEConfig,
    PPMConfig, PPMItemTower,
    PPMReadout, PPMSequenceEncoder, URMConfig, masked_softmax, multitask_bce,
)
from ppm_platform.models.idrec import safe_index
from ppm_platform.model_store import load_ppm, load_urm, model_version, read_model_json, save_model

B, L, ME, S, G = 6, 8, 24, 3, 5
SIDE_CARDS = (5, 4, 7)


def small_ppm_cfg(**kw) -> PPMConfig:
    base = dict(me_dim=ME, d_model=16, n_layers=2, n_heads=2, ff_dim=32, max_len=L, n_time_buckets=8,
                readout_hidden=24, dropout=0.1)
    base.update(kw)
    return PPMConfig(**base)


def small_urm_cfg(use_ppm: bool = True, **kw) -> URMConfig:
    base = dict(n_users=30, n_items=40, user_side_cardinalities=SIDE_CARDS, n_genres=G, n_user_dense=4,
                n_item_dense=3, max_len=L, emb_dim=8,
                cross_layers=2, dnn_hidden=(32, 16), n_experts=3, expert_hidden=16, tower_hidden=8, dropout=0.1,
                use_ppm=use_ppm, ppm=small_ppm_cfg() if use_ppm else None)
    base.update(kw)
    return URMConfig(**base)


def make_mask(b: int = B, l: int = L, seed: int = 0) -> torch.Tensor:
    """Left-aligned masks of random lengths; row 0 is empty (no history), row 1 (if any) is full."""
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(0, l + 1, (b,), generator=g)
    lens[0] = 0
    if b > 1:
        lens[1] = l
    return (torch.arange(l).unsqueeze(0) < lens.unsqueeze(1)).float()


def urm_batch(cfg: URMConfig, b: int = B, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = make_mask(b, cfg.max_len, seed)
    d = cfg.ppm.d_model if cfg.ppm else 16
    return {
        "user_idx": torch.randint(0, cfg.n_users, (b,), generator=g),
        "item_idx": torch.randint(0, cfg.n_items, (b,), generator=g),
        "user_side": torch.stack([torch.randint(0, c, (b,), generator=g) for c in cfg.user_side_cardinalities], 1),
        "item_genres": (torch.rand(b, cfg.n_genres, generator=g) > 0.6).float(),
        "item_content": (torch.rand(b, generator=g) > 0.2).float(),
        "user_dense": torch.randn(b, cfg.n_user_dense, generator=g),
        "item_dense": torch.randn(b, cfg.n_item_dense, generator=g),
        "hist_item_idx": torch.randint(2, cfg.n_items, (b, cfg.max_len), generator=g) * mask.long(),
        "hist_mask": mask,
        "ppm_user_seq": torch.randn(b, cfg.max_len, d, generator=g) * mask.unsqueeze(-1),
        "ppm_seq_mask": mask,
        "ppm_item_vec": torch.randn(b, d, generator=g),
    }


# ---------------------------------------------------------------------------------------------- layers
def test_masked_softmax_rows_sum_to_one_and_empty_rows_are_zero():
    scores = torch.randn(4, 5)
    mask = torch.tensor([[1, 1, 0, 0, 0], [0] * 5, [1] * 5, [0, 0, 1, 0, 0]], dtype=torch.float32)
    w = masked_softmax(scores, mask)
    assert w.dtype == torch.float32 and w.shape == (4, 5)
    assert torch.isfinite(w).all()
    assert torch.allclose(w.sum(-1), torch.tensor([1.0, 0.0, 1.0, 1.0]), atol=1e-6)
    assert (w[mask == 0] == 0).all()
    # valid positions get the plain softmax over the valid subset
    assert torch.allclose(w[0, :2], torch.softmax(scores[0, :2], -1), atol=1e-6)


def test_layer_shapes():
    x = torch.randn(B, 12)
    assert MLP(12, [7, 3]).out_dim == 3 and MLP(12, [7, 3])(x).shape == (B, 3)
    assert MLP(12, [])(x).shape == (B, 12)
    assert CrossNetV2(12, 3)(x).shape == (B, 12)
    mask = make_mask()
    din = DINAttention(4)
    pooled = din(torch.randn(B, 4), torch.randn(B, L, 4), mask)
    assert pooled.shape == (B, 4) and torch.isfinite(pooled).all()
    assert torch.equal(pooled[0], torch.zeros(4))  # empty history pools to zero
    outs = MMoE(12, MMoEConfig(n_experts=3, expert_hidden=5, n_tasks=2))(x)
    assert len(outs) == 2 and all(o.shape == (B, 5) and o.dtype == torch.float32 for o in outs)


# ------------------------------------------------------------------------------------------------ PPM
def test_ppm_module_shapes_and_dtypes():
    cfg = small_ppm_cfg()
    ppm = PPM(cfg)
    mask = make_mask()
    me = torch.randn(B, ME)
    hist_me = torch.randn(B, L, ME)
    age = torch.rand(B, L) * 1e8
    assert isinstance(ppm.item_tower, PPMItemTower) and isinstance(ppm.seq_encoder, PPMSequenceEncoder)
    assert isinstance(ppm.readout, PPMReadout) and ppm.readout.out_dim == cfg.readout_hidden
    item_vec = ppm.encode_items(me)
    assert item_vec.shape == (B, cfg.d_model) and item_vec.dtype == torch.float32
    assert ppm.encode_items(hist_me).shape == (B, L, cfg.d_model)
    seq = ppm.encode_sequence(ppm.encode_items(hist_me), age, mask)
    assert seq.shape == (B, L, cfg.d_model) and seq.dtype == torch.float32
    rep = ppm.readout(item_vec, seq, mask)
    assert rep.shape == (B, cfg.readout_hidden)
    assert ppm.logit_from_cache(item_vec, seq, mask).shape == (B,)
    logit = ppm(me, hist_me, age, mask)
    assert logit.shape == (B,) and logit.dtype == torch.float32
    assert [type(m) for m in ppm.frozen_modules()] == [PPMItemTower, PPMSequenceEncoder]
    assert ppm.top_modules() == [ppm.readout, ppm.head]
    # a shorter sequence than max_len works too (the cache may hold fewer positions)
    assert ppm.encode_sequence(item_vec.new_zeros(B, 3, cfg.d_model), age[:, :3], mask[:, :3]).shape == (B, 3, 16)


@pytest.mark.parametrize("training", [True, False])
def test_ppm_empty_history_is_finite_and_masked_positions_are_zero(training):
    ppm = PPM(small_ppm_cfg()).train(training)
    mask = make_mask()
    mask[2] = 0  # a second empty row
    hist_vec = torch.randn(B, L, 16)
    age = torch.rand(B, L) * 1e6
    seq = ppm.encode_sequence(hist_vec, age, mask)
    assert torch.isfinite(seq).all()
    assert torch.equal(seq * (1 - mask).unsqueeze(-1), torch.zeros_like(seq))
    logit = ppm(torch.randn(B, ME), torch.randn(B, L, ME), age, mask)
    assert torch.isfinite(logit).all()
    logit.sum().backward()  # gradients through an all-masked row are finite too
    assert all(torch.isfinite(p.grad).all() for p in ppm.parameters() if p.grad is not None)


def test_ppm_padding_does_not_change_valid_outputs():
    """Bidirectional encoder over valid positions only: what sits in padded slots must not matter."""
    ppm = PPM(small_ppm_cfg()).eval()
    mask = make_mask()
    hist_vec = torch.randn(B, L, 16)
    age = torch.rand(B, L) * 1e6
    noisy = hist_vec + torch.randn_like(hist_vec) * (1 - mask).unsqueeze(-1) * 100
    a = ppm.encode_sequence(hist_vec, age, mask)
    b = ppm.encode_sequence(noisy, age * (1 + (1 - mask)), mask)
    assert torch.allclose(a, b, atol=1e-5)


def test_time_buckets_are_geometric_and_monotone():
    enc = PPMSequenceEncoder(small_ppm_cfg(n_time_buckets=16))
    bounds = enc.time_boundaries
    assert bounds.shape == (15,) and math.isclose(float(bounds[0]), 1.0)
    assert 3.0e8 < float(bounds[-1]) < 3.3e8  # ~10 years
    ratios = bounds[1:] / bounds[:-1]
    assert torch.allclose(ratios, ratios[0].expand_as(ratios), rtol=1e-4)
    ages = torch.tensor([[-5.0, 0.0, 0.5, 1.0, 60.0, 86400.0, 3.0e7, 1e12]])
    idx = enc.time_buckets(ages)
    assert idx.dtype == torch.int64
    assert idx[0, 0] == 0 and idx[0, 1] == 0 and idx[0, 3] == 1 and idx[0, -1] == 15
    assert (idx[0, 1:].diff() >= 0).all()


def _synthetic_ppm_data(n: int, cfg: PPMConfig, centers: torch.Tensor, g: torch.Generator):
    """click = 1 iff the target's ME vector comes from the same cluster as the user's history ME vectors
    (i.e. is close to their mean); negatives come from another cluster."""
    k = centers.shape[0]
    user_c = torch.randint(0, k, (n,), generator=g)
    lens = torch.randint(1, cfg.max_len + 1, (n,), generator=g)
    mask = (torch.arange(cfg.max_len).unsqueeze(0) < lens.unsqueeze(1)).float()
    hist_me = (centers[user_c].unsqueeze(1) + 0.6 * torch.randn(n, cfg.max_len, cfg.me_dim, generator=g))
    hist_me = hist_me * mask.unsqueeze(-1)
    ages = torch.rand(n, cfg.max_len, generator=g) * 1e7 * mask
    y = (torch.rand(n, generator=g) < 0.5).float()
    other = (user_c + torch.randint(1, k, (n,), generator=g)) % k
    tgt_c = torch.where(y.bool(), user_c, other)
    target_me = centers[tgt_c] + 0.6 * torch.randn(n, cfg.me_dim, generator=g)
    return target_me, hist_me, ages, mask, y


def test_ppm_learns_synthetic_click_task():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    cfg = small_ppm_cfg(dropout=0.0)
    centers = torch.randn(10, cfg.me_dim, generator=g)
    train = _synthetic_ppm_data(3000, cfg, centers, g)
    test = _synthetic_ppm_data(1000, cfg, centers, g)
    ppm = PPM(cfg)
    opt = torch.optim.Adam(ppm.parameters(), lr=3e-3)
    losses = []
    for _epoch in range(4):
        perm = torch.randperm(3000, generator=g)
        for i in range(0, 3000, 200):
            idx = perm[i:i + 200]
            tm, hm, ag, mk, y = (t[idx] for t in train)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(ppm(tm, hm, ag, mk), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.2
    ppm.eval()
    with torch.no_grad():
        scores = ppm(*test[:4]).numpy()
    auc = roc_auc_score(test[4].numpy(), scores)
    assert auc > 0.8, auc


def test_caching_split_matches_full_path_and_urm_never_touches_frozen_ppm():
    torch.manual_seed(1)
    ppm = PPM(small_ppm_cfg()).eval()
    urm = URM(small_urm_cfg(use_ppm=True))
    urm.load_ppm_top(ppm)
    urm.eval()
    mask = make_mask()
    target_me, hist_me, ages = torch.randn(B, ME), torch.randn(B, L, ME), torch.rand(B, L) * 1e7

    with torch.no_grad():
        # the offline cache computation (what the Spark jobs write to ppm_item_cache / ppm_user_cache) ...
        item_cache = ppm.encode_items(target_me)
        user_cache = ppm.encode_sequence(ppm.encode_items(hist_me), ages, mask)
        # ... fed to URM's copy of the top equals the readout inside PPM's full path
        via_cache = urm.ppm_top(item_cache, user_cache, mask)
        full_seq = ppm.seq_encoder(ppm.item_tower(hist_me), ages, mask)
        full = ppm.readout(ppm.item_tower(target_me), full_seq, mask)
        assert torch.allclose(via_cache, full, atol=1e-6, rtol=0)
        assert torch.allclose(ppm.head(full).squeeze(-1), ppm(target_me, hist_me, ages, mask), atol=1e-6)
        # a flattened L*d cache row (the Feast storage) reshapes back losslessly
        assert torch.equal(user_cache.reshape(B, -1).reshape(B, L, -1), user_cache)

    frozen_before = {n: p.detach().clone() for m in ppm.frozen_modules() for n, p in m.named_parameters()}
    ppm_ptrs = {p.data_ptr() for p in ppm.parameters()}
    assert not ppm_ptrs & {p.data_ptr() for p in urm.parameters()}  # a copy, no aliasing
    assert not hasattr(urm, "item_tower") and not hasattr(urm, "seq_encoder")

    batch = urm_batch(urm.cfg)
    batch["ppm_item_vec"], batch["ppm_user_seq"], batch["ppm_seq_mask"] = item_cache, user_cache, mask
    urm.train()
    opt = torch.optim.Adam(urm.parameters(), lr=1e-2)
    top_before = urm.ppm_top.attn.w_q.weight.detach().clone()
    ppm_top_before = ppm.readout.attn.w_q.weight.detach().clone()
    for _ in range(3):
        loss = multitask_bce(urm.forward_dict(batch), torch.ones(B), torch.zeros(B))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert not torch.equal(urm.ppm_top.attn.w_q.weight, top_before)  # the top is trainable in URM
    for m in ppm.frozen_modules():
        for n, p in m.named_parameters():
            assert torch.equal(p, frozen_before[n]), n
    # and PPM's own readout is untouched: URM trained its copy
    assert torch.equal(ppm.readout.attn.w_q.weight, ppm_top_before)


def test_load_ppm_top_rejects_base_and_mismatched_ppm():
    ppm = PPM(small_ppm_cfg())
    with pytest.raises(ValueError, match="use_ppm=False"):
        URM(small_urm_cfg(use_ppm=False)).load_ppm_top(ppm)
    with pytest.raises(ValueError, match="mismatch"):
        URM(small_urm_cfg(use_ppm=True)).load_ppm_top(PPM(small_ppm_cfg(d_model=8)))


# ------------------------------------------------------------------------------------- IDRec / URM
def test_idrec_shapes_and_oov_mapping():
    cfg = small_urm_cfg(use_ppm=False)
    idrec = IDRec(cfg.idrec)
    b = urm_batch(cfg)
    rep = idrec(*(b[n] for n in IDREC_INPUT_NAMES))
    assert rep.shape == (B, idrec.out_dim) and idrec.out_dim == 16 and rep.dtype == torch.float32
    assert torch.isfinite(rep).all()
    idx = torch.tensor([0, 1, 5, 39, 40, 1000, -3])
    assert safe_index(idx, 40).tolist() == [0, 1, 5, 39, 1, 1, 1]
    # an id beyond the vocabulary scores like OOV instead of crashing
    idrec.eval()
    b2 = dict(b)
    b2["item_idx"] = torch.full((B,), 10_000)
    b3 = dict(b)
    b3["item_idx"] = torch.ones(B, dtype=torch.long)
    args2 = [b2[n] for n in IDREC_INPUT_NAMES]
    args3 = [b3[n] for n in IDREC_INPUT_NAMES]
    assert torch.equal(idrec(*args2), idrec(*args3))


@pytest.mark.parametrize("use_ppm", [False, True])
def test_urm_forward_shapes_and_one_train_step(use_ppm):
    torch.manual_seed(0)
    cfg = small_urm_cfg(use_ppm=use_ppm)
    urm = URM(cfg)
    assert (urm.ppm_top is not None) == use_ppm
    b = urm_batch(cfg)
    logits = urm(*(b[n] for n in URM_INPUT_NAMES))
    assert logits.shape == (B, 2) and logits.dtype == torch.float32 and torch.isfinite(logits).all()
    urm.eval()
    with torch.no_grad():
        assert torch.equal(urm.forward_dict(b), urm(*(b[n] for n in URM_INPUT_NAMES)))
    urm.train()
    if not use_ppm:  # Base accepts and ignores the ppm_* inputs, or runs without them
        urm.eval()
        full = urm.forward_dict(b)
        without = urm.forward_dict({k: v for k, v in b.items() if not k.startswith("ppm_")})
        junk = urm.forward_dict({**b, "ppm_item_vec": b["ppm_item_vec"] * 100})
        assert torch.equal(full, without) and torch.equal(full, junk)
        urm.train()
    else:
        with pytest.raises(KeyError, match="ppm_item_vec"):
            urm.forward_dict({k: v for k, v in b.items() if k != "ppm_item_vec"})
    click = torch.tensor([1, 0, 1, 0, 1, 1], dtype=torch.int8)
    order = torch.tensor([1, 0, 0, 0, 0, 1], dtype=torch.int8)
    opt = torch.optim.Adam(urm.parameters(), lr=1e-2)
    before = {n: p.detach().clone() for n, p in urm.named_parameters()}
    urm.eval()  # measure without dropout noise
    with torch.no_grad():
        l0 = multitask_bce(urm.forward_dict(b), click, order).item()
    urm.train()
    for _ in range(5):
        loss = multitask_bce(urm.forward_dict(b), click, order, weights=(1.0, 0.5))
        assert loss.ndim == 0 and torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    urm.eval()
    with torch.no_grad():
        l1 = multitask_bce(urm.forward_dict(b), click, order).item()
    assert l1 < l0
    changed = [n for n, p in urm.named_parameters() if not torch.equal(p, before[n])]
    assert any(n.startswith("idrec.") for n in changed) and any(n.startswith("towers.") for n in changed)
    assert any(n.startswith("ppm_top.") for n in changed) == use_ppm


@pytest.mark.parametrize("use_ppm", [False, True])
def test_no_content_items_read_the_learned_fallback_not_their_content(use_ppm):
    """item_content = 0 (an item with no catalog row): genres and the PPM item vector are replaced by learned
    vectors, so whatever sits in those inputs does not change the score; the fallback vectors train."""
    torch.manual_seed(0)
    cfg = small_urm_cfg(use_ppm=use_ppm)
    urm = URM(cfg).eval()
    b = urm_batch(cfg)
    b["item_content"] = torch.zeros(B)
    junk = {**b, "item_genres": 1 - b["item_genres"], "ppm_item_vec": b["ppm_item_vec"] * 50 + 3}
    with torch.no_grad():
        torch.testing.assert_close(urm.forward_dict(b), urm.forward_dict(junk), rtol=0, atol=0)
        # with content present the same change moves the scores
        b1, junk1 = {**b, "item_content": torch.ones(B)}, {**junk, "item_content": torch.ones(B)}
        assert not torch.allclose(urm.forward_dict(b1), urm.forward_dict(junk1))
    urm.train()
    urm.forward_dict(b).sum().backward()
    assert urm.idrec.no_content.grad is not None and urm.idrec.no_content.grad.abs().sum() > 0
    if use_ppm:
        assert urm.no_content_vec.grad is not None and urm.no_content_vec.grad.abs().sum() > 0


def test_multitask_bce_matches_hand_computation():
    logits = torch.tensor([[0.5, -1.0], [-2.0, 0.3], [1.5, 2.0]])
    click = torch.tensor([1, 0, 1])
    order = torch.tensor([0, 0, 1])

    def bce(z, y):
        p = 1 / (1 + math.exp(-z))
        return -(y * math.log(p) + (1 - y) * math.log(1 - p))

    lc = (bce(0.5, 1) + bce(-2.0, 0) + bce(1.5, 1)) / 3
    lo = (bce(-1.0, 0) + bce(0.3, 0) + bce(2.0, 1)) / 3
    assert math.isclose(multitask_bce(logits, click, order).item(), lc + lo, rel_tol=1e-6)
    assert math.isclose(multitask_bce(logits, click, order, weights=(2.0, 0.25)).item(), 2 * lc + 0.25 * lo,
                        rel_tol=1e-6)


def test_urm_config_round_trips_through_json():
    cfg = small_urm_cfg(use_ppm=True)
    back = URMConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg and isinstance(back.ppm, PPMConfig) and isinstance(back.dnn_hidden, tuple)
    assert isinstance(cfg.idrec, IDRecConfig) and cfg.idrec.emb_dim == cfg.emb_dim and cfg.mmoe.n_tasks == 2
    with pytest.raises(TypeError, match="unknown URMConfig"):
        URMConfig.from_dict({**cfg.to_dict(), "bogus": 1})
    assert URMConfig(n_users=5, n_items=5, user_side_cardinalities=(3,), n_genres=2).ppm == PPMConfig()
    with pytest.raises(ValueError):
        URMConfig(n_users=1, n_items=5, user_side_cardinalities=(), n_genres=2)
    with pytest.raises(ValueError):
        PPMConfig(d_model=30, n_heads=4)


# --------------------------------------------------------------------------------------- artifacts
def test_save_load_round_trip_and_model_version(tmp_path):
    torch.manual_seed(0)
    ppm = PPM(small_ppm_cfg()).eval()
    v = model_version(ppm)
    assert len(v) == 12 and int(v, 16) >= 0 and model_version(ppm) == v  # deterministic
    out = save_model(ppm, ppm.cfg, tmp_path / "ppm", kind="ppm", metadata={"auc": 0.7, "path": tmp_path})
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "weights.safetensors"]
    doc = read_model_json(out)
    assert doc["kind"] == "ppm" and doc["version"] == v and doc["config"]["d_model"] == 16
    assert not list(tmp_path.glob(".ppm*"))  # no temp folders left behind
    loaded, meta = load_ppm(out)
    assert not loaded.training and meta["auc"] == 0.7 and model_version(loaded) == v
    mask = make_mask()
    args = (torch.randn(B, ME), torch.randn(B, L, ME), torch.rand(B, L) * 1e6, mask)
    with torch.no_grad():
        assert torch.equal(loaded(*args), ppm(*args))
    with pytest.raises(ValueError, match="expected URM"):
        load_urm(out)

    # a weight change changes the version; saving again replaces the folder atomically
    with torch.no_grad():
        ppm.head.bias.add_(1e-3)
    v2 = model_version(ppm)
    assert v2 != v
    save_model(ppm, ppm.cfg, out, kind="ppm", metadata={})
    assert read_model_json(out)["version"] == v2 and model_version(load_ppm(out)[0]) == v2

    # tampered weights are refused
    raw = bytearray((out / "weights.safetensors").read_bytes())
    raw[-1] ^= 0xFF
    (out / "weights.safetensors").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="does not match"):
        load_ppm(out)


@pytest.mark.parametrize("use_ppm", [False, True])
def test_urm_save_load_round_trip(tmp_path, use_ppm):
    cfg = small_urm_cfg(use_ppm=use_ppm)
    urm = URM(cfg).eval()
    out = save_model(urm, cfg, tmp_path / "urm", kind="urm" if use_ppm else "base",
                     metadata={"ppm_version": "abc123"})
    loaded, meta = load_urm(out)
    assert meta == {"ppm_version": "abc123"} and loaded.cfg == cfg and not loaded.training
    b = urm_batch(cfg)
    with torch.no_grad():
        assert torch.equal(loaded.forward_dict(b), urm.forward_dict(b))
    assert model_version(loaded) == model_version(urm)
