"""Data-parallel training (``ppm_platform.training.distributed``) and per-epoch checkpoints: each rank's part
of a global batch, the loss scale that makes DDP's averaged gradient the global batch's, two real gloo ranks
(``torch.multiprocessing`` spawn on loopback) training the URM and the PPM to the single-process weights when
nothing random differs between them (no dropout), and a resumed run equal to an uninterrupted one.

The Spark launch (``TorchDistributor`` on a standalone cluster, a killed rank) is
``tests/integration/test_cluster_profile.py``'s."""

from __future__ import annotations

import json
import os
import socket
from functools import partial

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from ppm_platform.training.distributed import SINGLE, Ranks
from test_streaming_training import CACHE_VERSION, D, L, _settings, _training_set, ppm_data  # noqa: F401

NO_DROPOUT = {"urm": {"dropout": 0.0, "id_dropout": 0.0, "content_dropout": 0.0, "batch_size": 33, "epochs": 2},
              "ppm": {"dropout": 0.0, "batch_size": 33, "epochs": 2}}


def test_batch_plan_splits_every_global_batch_and_scales_to_its_mean():
    rng = np.random.default_rng(0)
    n, b = 1000, 64
    perm = rng.permutation(n)
    assert [(r.tolist(), s) for r, s in SINGLE.batch_plan(n, perm, b)] == \
        [(perm[i:i + b].tolist(), 1.0) for i in range(0, n, b)]
    plans = [Ranks(r, 3).batch_plan(n, perm, b) for r in range(3)]
    assert len({len(p) for p in plans}) == 1                    # every rank runs the same number of steps
    losses = rng.random(n)
    for g in range(len(plans[0])):
        batch = perm[g * b:(g + 1) * b]
        parts = [p[g][0] for p in plans]
        assert sorted(np.concatenate(parts).tolist()) == sorted(batch.tolist())   # a partition of the batch
        # DDP averages the ranks' gradients: mean over ranks of (scale x rank mean) = the global batch mean
        ddp = np.mean([p[g][1] * losses[r].mean() for p, r in zip(plans, parts)])
        assert ddp == pytest.approx(losses[batch].mean(), rel=1e-12)
    # a chunk's last global batch with fewer rows than ranks is skipped on every rank
    assert all(len(Ranks(r, 3).batch_plan(2 * b + 2, perm[:2 * b + 2], b)) == 2 for r in range(3))
    assert Ranks(1, 3).shard(7).tolist() == [1, 4] and SINGLE.shard(3).tolist() == [0, 1, 2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawned_rank(rank: int, world: int, port: int, job, out: str) -> None:
    """A rank as torchrun starts one (RANK / WORLD_SIZE / MASTER_* in the environment), then ``_rank_main``."""
    from ppm_platform.training.distributed import _rank_main

    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port)})
    result = _rank_main(job, 120)
    if rank == 0:
        with open(out, "w") as f:
            json.dump(result, f)


def _run_ranks(job, world: int, tmp_path) -> str:
    import torch.multiprocessing as mp

    out = tmp_path / f"result-{world}.json"
    mp.start_processes(_spawned_rank, args=(world, _free_port(), job, str(out)), nprocs=world,
                       start_method="spawn", join=True)
    return json.loads(out.read_text())


def _max_weight_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return max(float((sa[k].double() - sb[k].double()).abs().max()) for k in sa if sa[k].numel())


def test_two_gloo_ranks_train_the_single_process_urm(tmp_path):
    """Same seed, epochs and global batch (33 rows: ranks take 17 and 16): with no dropout the two-rank DDP run
    is the single-process SGD up to float summation order, so the weights agree to ~1e-6, not just the AUC."""
    from ppm_platform.model_store import load_urm, save_model
    from ppm_platform.models.ppm import PPM, PPMConfig
    from ppm_platform.training.urm_train import _ctr_rank_job, train_ctr_model

    path = tmp_path / "training_set.parquet"
    pq.write_table(pa.Table.from_pandas(_training_set(), preserve_index=False), path, row_group_size=64)
    s = _settings(tmp_path, **NO_DROPOUT)
    torch.manual_seed(1)
    ppm = PPM(PPMConfig(me_dim=12, d_model=D, n_layers=1, n_heads=2, ff_dim=16, max_len=L, readout_hidden=8,
                        dropout=0.0))   # the URM's PPM top keeps its dropout
    save_model(ppm, ppm.cfg, tmp_path / "ppm", "ppm", {})
    one = train_ctr_model(s, path, use_ppm=True, ppm=ppm, ppm_version=CACHE_VERSION)
    job = partial(_ctr_rank_job, s, path, "urm", True, tmp_path / "ppm", CACHE_VERSION, False,
                  tmp_path / "ckpt", tmp_path / "urm.result")
    folder = _run_ranks(job, 2, tmp_path)
    two, meta = load_urm(folder)
    diff = _max_weight_diff(one.model, two)
    print(f"URM 1 vs 2 ranks: max |weight diff| {diff:.2g}")
    assert diff < 1e-4
    assert meta["metrics"]["processes"] == 2 and len(meta["metrics"]["epochs"]) == 2
    for e1, e2 in zip(one.metrics["epochs"], meta["metrics"]["epochs"]):
        assert e2["valid_click_auc"] == pytest.approx(e1["valid_click_auc"], abs=1e-4)
    assert meta["metrics"]["test"]["all"]["click"]["auc"] == pytest.approx(
        one.metrics["test"]["all"]["click"]["auc"], abs=1e-4)
    assert meta["metrics"]["rows"] == one.metrics["rows"]
    assert not (tmp_path / "ckpt").exists()  # checkpoints are removed once the model is trained


def test_two_gloo_ranks_pretrain_the_single_process_ppm(tmp_path, ppm_data):
    from ppm_platform.model_store import load_ppm
    from ppm_platform.training.ppm_train import _ppm_rank_job, predict_split, pretrain_ppm, write_examples

    inter, me = ppm_data
    s = _settings(tmp_path, **NO_DROPOUT)
    ex = write_examples(s, tmp_path / "interactions.parquet", me, tmp_path / "seq.parquet", tmp_path / "ex.parquet")
    one, m1 = pretrain_ppm(s, ex)
    folder = _run_ranks(partial(_ppm_rank_job, s, ex, None, tmp_path / "ppm.result"), 2, tmp_path)
    two, m2 = load_ppm(folder)
    # outputs, not weights: attention key biases get a zero gradient in exact arithmetic (softmax ignores a
    # constant added to every logit), so AdamW turns their float noise into lr-sized steps that change nothing
    y1, p1 = predict_split(one, ex, "valid")
    y2, p2 = predict_split(two, ex, "valid")
    diff = float(np.abs(p1 - p2).max())
    print(f"PPM 1 vs 2 ranks: max |valid probability diff| {diff:.2g}")
    assert np.array_equal(y1, y2) and diff < 1e-4 and m2["processes"] == 2
    assert m2["valid_click_auc"] == pytest.approx(m1["valid_click_auc"], abs=1e-4)


class _Stop(Exception):
    pass


def test_resumed_training_equals_an_uninterrupted_run(tmp_path):
    """A run stopped after epoch 1 (before epoch 2's checkpoint) and started again resumes from the epoch-1
    checkpoint (weights, AdamW moments, the best epoch, the shuffling and dropout streams) and ends with the
    weights of a run that never stopped, bit for bit."""
    from ppm_platform.training.urm_train import train_ctr_model

    path = tmp_path / "training_set.parquet"
    pq.write_table(pa.Table.from_pandas(_training_set(), preserve_index=False), path, row_group_size=64)
    s = _settings(tmp_path, urm={"epochs": 3})           # with ID and content dropout: the streams matter
    straight = train_ctr_model(s, path, use_ppm=False, checkpoint_dir=tmp_path / "a")
    lines: list[str] = []

    def stop_in_epoch_2(msg: str) -> None:
        lines.append(msg)
        if "epoch 2/3" in msg:
            raise _Stop

    with pytest.raises(_Stop):
        train_ctr_model(s, path, use_ppm=False, progress=stop_in_epoch_2, checkpoint_dir=tmp_path / "b")
    assert [p.name for p in (tmp_path / "b").glob("epoch-*")] == ["epoch-0001"]
    resumed = train_ctr_model(s, path, use_ppm=False, progress=lines.append, checkpoint_dir=tmp_path / "b")
    assert any("resumed after epoch 1/3" in m for m in lines)
    assert all(torch.equal(v, resumed.model.state_dict()[k]) for k, v in straight.model.state_dict().items())
    untimed = [[{k: v for k, v in e.items() if not k.endswith("_s")} for e in m.metrics["epochs"]]
               for m in (resumed, straight)]
    assert untimed[0] == untimed[1] and len(untimed[0]) == 3
    assert not (tmp_path / "b").exists()
    # another configuration does not resume from a checkpoint of this one
    with pytest.raises(_Stop):
        train_ctr_model(s, path, use_ppm=False, progress=stop_in_epoch_2, checkpoint_dir=tmp_path / "c")
    other = _settings(tmp_path, urm={"epochs": 3, "lr": 1e-3})
    lines.clear()
    train_ctr_model(other, path, use_ppm=False, progress=lines.append, checkpoint_dir=tmp_path / "c")
    assert not any("resumed" in m for m in lines)


def test_training_processes_setting_and_single_process_launch(tmp_path):
    """``PPM_TRAINING_PROCESSES`` selects the ranks; one process runs the job here, once, on ``SINGLE``."""
    from ppm_platform.config import Settings
    from ppm_platform.training.distributed import run_data_parallel

    assert Settings.from_env(env={"PPM_TRAINING_PROCESSES": "2"}).training.processes == 2
    s = Settings.from_env(env={}, artifacts_dir=tmp_path)
    assert s.training.processes == 1 and s.checkpoints_dir == tmp_path / "checkpoints"
    seen: list[Ranks] = []
    assert run_data_parallel(s, lambda r: seen.append(r) or "done", "test") == ("done", 1)
    assert seen == [SINGLE]
