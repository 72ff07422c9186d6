"""PPM pre-training (ID-free, click task) on the train window.

Each training example is an impression ``(user, item, t, click)`` of the train window joined as of ``t`` to
the user's behaviour-sequence row (the last L clicks strictly before ``t``, DESIGN.md §4) -- the same
``feature_ts <= event_ts`` semantics as Feast's point-in-time join, done here with DuckDB's ``ASOF JOIN``
because PPM is pre-trained before the feature views exist (DESIGN.md §3 asset graph).

Items enter only through their multi-modal (ME) features: no ID embedding anywhere, so PPM scores
cold items as well as warm ones.

Two forms of the examples, one training loop: :class:`PPMExamples` (dense arrays in memory, small data,
the evaluation harness) and :class:`PPMExampleFile` (the pipeline's: the as-of join is written by DuckDB
to a parquet file on disk with a memory limit, then read a chunk of ``ppm.chunk_rows`` rows at a time, so
memory does not grow with the number of impressions).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm

from ppm_platform.config import Settings
from ppm_platform.training.me_index import MEIndex
from ppm_platform.training.metrics import auc, logloss
from ppm_platform.data.split import SPLIT_CODES, split_codes, split_labels
from ppm_platform.runtime import torch_threads
from ppm_platform.training.checkpoint import EpochCheckpoint, fingerprint
from ppm_platform.training.distributed import SINGLE, Ranks
from ppm_platform.training.streaming import ParquetChunks, parquet_glob

log = logging.getLogger("ppm_platform.training")


def asof_sequences(interactions: pd.DataFrame, sequences_path: Path) -> pd.DataFrame:
    """Attach to each impression the latest behaviour-sequence row with ``row_ts <= event_timestamp``.

    Returns ``interactions`` (same order) plus ``hist_item_ids``, ``hist_age_s`` and ``hist_len``
    (null when the user had no click before the impression).
    """
    con = duckdb.connect()
    try:
        con.register("imp", interactions.assign(_row=np.arange(len(interactions))))
        out = con.execute(
            f"""SELECT imp.*, s.hist_item_ids, s.hist_age_s, s.hist_len
                FROM imp ASOF LEFT JOIN read_parquet('{sequences_path}') s
                  ON imp.user_id = s.user_id AND imp.event_timestamp >= s.event_timestamp
                ORDER BY imp._row""").df()
    finally:
        con.close()
    return out.drop(columns="_row")


@dataclass
class PPMExamples:
    """Dense arrays for PPM training. ``me`` row 0 is the all-zero padding item.

    Attributes:
        me: float32 [N_items + 1, me_dim] ME features by row; target/hist refer to rows.
        target: int64 [B]; hist: int64 [B, L] (0 = padding); age_s: float32 [B, L]; mask: float32 [B, L];
        click: float32 [B]; split: object [B] (train/valid/test).
    """

    me: np.ndarray
    target: np.ndarray
    hist: np.ndarray
    age_s: np.ndarray
    mask: np.ndarray
    click: np.ndarray
    split: np.ndarray


def build_examples(settings: Settings, interactions: pd.DataFrame, item_multimodal: pd.DataFrame,
                   sequences_path: Path) -> PPMExamples:
    """Join impressions to sequences as of their time and index everything into the ME table.

    Raises:
        KeyError: an impression or history refers to an item without an ME feature row.
    """
    from ppm_platform.features.ppm_caches import pad_history

    index = MEIndex.of(item_multimodal)
    df = asof_sequences(interactions, sequences_path)
    target = index.rows(df["item_id"].to_numpy(np.int64))
    ids, age, mask = pad_history(list(df["hist_item_ids"]), list(df["hist_age_s"]), settings.sequence.max_len)
    split = split_labels(df["event_timestamp"], settings).to_numpy()
    return PPMExamples(index.table, target, index.history_rows(ids, mask), age, mask,
                       df["click"].to_numpy(np.float32), split)


class PPMExampleFile:
    """PPM examples on disk (written by :func:`write_examples`), read ``chunk_rows`` rows at a time.

    The file has one row per train / valid impression in input order: ``_row`` (position in the
    interactions table), ``item_id``, ``click``, ``hist_item_ids``, ``hist_age_s`` (null before the
    user's first click). A chunk becomes the same dense arrays as :class:`PPMExamples` (``me`` rows,
    0 = padding).

    Attributes:
        me: float32 [N_items + 1, me_dim]; split_code: int8 [N interactions] (0 train, 1 valid, 2 test).
    """

    def __init__(self, path: Path, me_item_ids: np.ndarray, me: np.ndarray, split_code: np.ndarray,
                 max_len: int, chunk_rows: int):
        self.path = Path(path)
        self._args = (me_item_ids, me, split_code, max_len, chunk_rows)
        self._index = MEIndex(me_item_ids, me)
        self.me = self._index.table
        self.split_code = split_code
        self.max_len = max_len
        self.chunks = ParquetChunks(self.path, chunk_rows)

    def __reduce__(self):
        # reopened from its path by whoever unpickles it (a training rank): the open file handle is not shipped
        return (PPMExampleFile, (self.path, *self._args))

    def _padded(self, col: pa.ChunkedArray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(values gathered into [n, L] (0 where padded), valid mask bool [n, L], lengths [n]) of a list column;
        null lists are empty; lists keep their first L values (most recent first)."""
        arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        if isinstance(arr, pa.ChunkedArray):  # zero chunks
            arr = pa.array([], type=col.type)
        offsets = arr.offsets.to_numpy()
        lens = np.diff(offsets)
        if arr.null_count:
            lens = np.where(arr.is_null().to_numpy(zero_copy_only=False), 0, lens)
        L = self.max_len
        valid = np.arange(L)[None, :] < np.minimum(lens, L)[:, None]
        idx = offsets[:-1, None] + np.arange(L)[None, :]
        values = arr.values.to_numpy(zero_copy_only=False)
        out = np.zeros((n, L), dtype=values.dtype if values.size else np.float64)
        out[valid] = values[idx[valid]]
        return out, valid, lens

    def split_mask(self, tbl: pa.Table, split: int) -> np.ndarray:
        """bool [tbl.num_rows]: the rows of ``tbl`` in ``split`` (code)."""
        return self.split_code[tbl.column("_row").to_numpy()] == split

    def arrays(self, tbl: pa.Table, split: int, positions: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Dense arrays (``target``, ``hist``, ``age_s``, ``mask``, ``click``) of the rows of ``tbl`` in
        ``split`` (code), in file order; ``positions`` (sorted int64): only those of them (one rank's rows).

        Raises:
            KeyError: an item or history item without an ME row. ValueError: ids / ages of different lengths.
        """
        keep = self.split_mask(tbl, split)
        if not keep.all():
            tbl = tbl.filter(pa.array(keep))
        if positions is not None:
            tbl = tbl.take(pa.array(positions))
        n = tbl.num_rows
        ids, valid, lens = self._padded(tbl.column("hist_item_ids"), n)
        age, _, age_lens = self._padded(tbl.column("hist_age_s"), n)
        if (lens != age_lens).any():
            r = int(np.flatnonzero(lens != age_lens)[0])
            raise ValueError(f"row {r}: {int(lens[r])} item ids but {int(age_lens[r])} ages")
        return {"target": self._index.rows(tbl.column("item_id").to_numpy().astype(np.int64)),
                "hist": self._index.history_rows(ids.astype(np.int64), valid),
                "age_s": np.where(valid, age, 0).astype(np.float32),
                "mask": valid.astype(np.float32),
                "click": tbl.column("click").to_numpy().astype(np.float32)}

    def count(self, split: int) -> int:
        return int((self.split_code == split).sum())


def write_examples(settings: Settings, interactions_path: Path, item_multimodal: pd.DataFrame,
                   sequences_path: Path, out_path: Path) -> PPMExampleFile:
    """The as-of join of :func:`asof_sequences` for every train / valid impression, written by DuckDB
    straight to ``out_path`` (parquet) under ``ppm.join_memory_limit`` (DuckDB spills to a temp folder next
    to ``out_path``); nothing of the impressions is held in Python but their split codes (1 byte each).

    Returns:
        the :class:`PPMExampleFile` over ``out_path``.
    """
    from ppm_platform.features.item_multimodal import me_matrix

    out_path = Path(out_path)
    item_ids, me = me_matrix(item_multimodal)
    ts = pq.read_table(interactions_path, columns=["event_timestamp"]).column(0).to_pandas()
    codes = split_codes(ts, settings)
    test_rows = np.flatnonzero(codes == 2)
    # conservative SQL filter (<=): the exact split is the per-row code, looked up by _row when reading
    test_start = ts.iloc[test_rows].min() if len(test_rows) else None
    del ts
    spill = out_path.parent / f".{out_path.name}.spill"
    con = duckdb.connect()
    try:
        con.execute(f"SET memory_limit = '{settings.ppm.join_memory_limit}'")
        con.execute(f"SET temp_directory = '{spill}'")
        src = parquet_glob(interactions_path)
        if Path(interactions_path).is_dir():
            imp = (f"SELECT user_id, item_id, event_timestamp, click, row_number() OVER (ORDER BY filename, "
                   f"file_row_number) - 1 AS _row FROM read_parquet('{src}', filename=true, file_row_number=true)")
        else:
            imp = (f"SELECT user_id, item_id, event_timestamp, click, file_row_number AS _row "
                   f"FROM read_parquet('{src}', file_row_number=true)")
        where = "" if test_start is None else "WHERE event_timestamp <= $test_start"
        params = {} if test_start is None else {"test_start": test_start.to_pydatetime()}
        con.execute(
            f"""COPY (
                  SELECT imp._row::BIGINT AS _row, imp.item_id::BIGINT AS item_id, imp.click::FLOAT AS click,
                         s.hist_item_ids, s.hist_age_s
                  FROM (SELECT * FROM ({imp}) {where}) imp
                  ASOF LEFT JOIN (SELECT user_id, event_timestamp, hist_item_ids, hist_age_s
                                  FROM read_parquet('{parquet_glob(sequences_path)}')) s
                    ON imp.user_id = s.user_id AND imp.event_timestamp >= s.event_timestamp
                  ORDER BY imp._row
                ) TO '{out_path}' (FORMAT parquet, ROW_GROUP_SIZE 65536)""", params)
    finally:
        con.close()
        import shutil

        shutil.rmtree(spill, ignore_errors=True)
    return PPMExampleFile(out_path, item_ids, me, codes, settings.sequence.max_len, settings.ppm.chunk_rows)


def _ppm_logits(ppm, me_t: torch.Tensor, target: torch.Tensor, hist: torch.Tensor, age: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
    """PPM's full forward with the item tower run once per ME row the step needs, not on every target and
    history position (B x (L + 1) tower calls): over the whole catalog when it is smaller than the batch's
    positions, else over the batch's distinct items (``torch.unique``). The tower is row-wise, so the
    numbers are those of ``ppm(me[target], me[hist], age, mask)`` (tested)."""
    B, L = hist.shape
    if me_t.shape[0] <= B * (L + 1):
        item_vecs = ppm.encode_items(me_t)
        return ppm.logit_from_cache(item_vecs[target], ppm.encode_sequence(item_vecs[hist], age, mask), mask)
    uniq, inv = torch.unique(torch.cat([target, hist.reshape(-1)]), return_inverse=True)
    vecs = ppm.encode_items(me_t[uniq])
    return ppm.logit_from_cache(vecs[inv[:B]], ppm.encode_sequence(vecs[inv[B:]].view(B, L, -1), age, mask), mask)


_ARRAY_KEYS = ("target", "hist", "age_s", "mask", "click")


def _in_memory_arrays(ex: PPMExamples, rows: np.ndarray) -> dict[str, np.ndarray]:
    return {"target": ex.target[rows], "hist": ex.hist[rows], "age_s": ex.age_s[rows], "mask": ex.mask[rows],
            "click": ex.click[rows]}


def iter_split(ex: "PPMExamples | PPMExampleFile", split: str, rng: np.random.Generator | None = None,
               ranks: Ranks = SINGLE):
    """Chunks (dicts of dense arrays, :data:`_ARRAY_KEYS`) of the ``split`` rows of ``ex``. ``rng`` None:
    file order (with several ``ranks``: this rank's ``r::world`` shard of each chunk); else chunks in a seeded
    random order, rows shuffled inside each (in memory: one chunk, i.e. ``rng.permutation`` of the split's
    rows)."""
    if isinstance(ex, PPMExamples):
        rows = np.flatnonzero(ex.split == split)
        if rng is not None:
            rng.permutation(1)  # the chunk order of a one-chunk source (draws nothing; keeps the streams equal)
            rows = rng.permutation(rows)
        else:
            rows = rows[ranks.shard(len(rows))]
        if len(rows):
            yield _in_memory_arrays(ex, rows)
        return
    code = SPLIT_CODES[split]
    for k in ex.chunks.order(rng):
        tbl = ex.chunks.read(int(k))
        if rng is None and ranks.distributed:
            a = ex.arrays(tbl, code, ranks.shard(int(ex.split_mask(tbl, code).sum())))
        else:
            a = ex.arrays(tbl, code)
        if rng is not None:
            perm = rng.permutation(len(a["click"]))
            a = {key: v[perm] for key, v in a.items()}
        if len(a["click"]):
            yield a


def train_batches(ex: "PPMExamples | PPMExampleFile", rng: np.random.Generator, batch_size: int,
                  ranks: Ranks = SINGLE):
    """The pre-training's batches: ``(dict of tensors of this rank's rows of the batch, loss scale)``, global
    batches of ``batch_size`` rows of the train split in the seeded order of :func:`iter_split` (chunks in
    random order, rows shuffled in each), each rank's part by :meth:`Ranks.batch_plan`. A rank decodes only
    the rows it trains on. With one rank: the batches of :func:`iter_split`'s shuffled chunks, in order."""
    if isinstance(ex, PPMExamples):
        rows = np.flatnonzero(ex.split == "train")
        rng.permutation(1)  # the chunk order of a one-chunk source (see iter_split)
        perm = rng.permutation(len(rows))
        for r, sc in ranks.batch_plan(len(rows), perm, batch_size):
            yield {k: torch.from_numpy(v) for k, v in _in_memory_arrays(ex, rows[r]).items()}, sc
        return
    for k in ex.chunks.order(rng):
        tbl = ex.chunks.read(int(k))
        n_k = int(ex.split_mask(tbl, 0).sum())
        plan = ranks.batch_plan(n_k, rng.permutation(n_k), batch_size)
        if not plan:
            continue
        mine = np.unique(np.concatenate([r for r, _ in plan]))
        t = {key: torch.from_numpy(v) for key, v in ex.arrays(tbl, 0, mine if ranks.distributed else None).items()}
        for r, sc in plan:
            b = torch.from_numpy(np.searchsorted(mine, r) if ranks.distributed else r)
            yield {key: v[b] for key, v in t.items()}, sc


def _predict_arrays(ppm, item_vecs: torch.Tensor, a: dict[str, np.ndarray], batch_size: int,
                    item_bias: torch.Tensor | None = None) -> list[torch.Tensor]:
    out = []
    for s in range(0, len(a["click"]), batch_size):
        sl = slice(s, s + batch_size)
        mask = torch.from_numpy(a["mask"][sl])
        target = torch.from_numpy(a["target"][sl])
        seq = ppm.encode_sequence(item_vecs[torch.from_numpy(a["hist"][sl])], torch.from_numpy(a["age_s"][sl]), mask)
        logit = ppm.logit_from_cache(item_vecs[target], seq, mask)
        out.append(torch.sigmoid(logit if item_bias is None else logit + item_bias[target]))
    return out


def predict_ppm(ppm, ex: PPMExamples, rows: np.ndarray, batch_size: int = 2048) -> np.ndarray:
    """Click probabilities float64 [len(rows)] of a (frozen) PPM on the given example rows."""
    ppm.eval()
    with torch.inference_mode():
        out = _predict_arrays(ppm, ppm.encode_items(torch.from_numpy(ex.me)), _in_memory_arrays(ex, rows), batch_size)
    return torch.cat(out).double().numpy() if out else np.zeros(0)


def predict_split(ppm, ex: "PPMExamples | PPMExampleFile", split: str, batch_size: int = 2048,
                  item_bias: torch.Tensor | None = None, ranks: Ranks = SINGLE) -> tuple[np.ndarray, np.ndarray]:
    """(click labels float32, probabilities float64) of the ``split`` rows of ``ex``, in row order, read a
    chunk at a time (``item_bias``: the pre-training's per-item logit offsets, f32 ``[N_items + 1]``). With
    several ``ranks``: each scores its shard and gets every rank's rows (rank-major order)."""
    ppm.eval()
    ys, ps = [], []
    with torch.inference_mode():
        item_vecs = ppm.encode_items(torch.from_numpy(ex.me))
        for a in iter_split(ex, split, ranks=ranks):
            ys.append(a["click"])
            ps += _predict_arrays(ppm, item_vecs, a, batch_size, item_bias)
    y = np.concatenate(ys) if ys else np.zeros(0, np.float32)
    p = torch.cat(ps).double().numpy() if ps else np.zeros(0)
    y, p = ranks.gather([y, p])
    return y, p


class PPMTrainStep(torch.nn.Module):
    """The pre-training forward as one module (what DDP wraps): PPM's logits over a batch (:func:`_ppm_logits`)
    plus, when ``item_bias``, a learned per-item logit offset discarded after pre-training.

    Args:
        ppm: the :class:`~ppm_platform.models.ppm.PPM` being pre-trained; n_items: ME rows (``[N_items + 1]``).
    """

    def __init__(self, ppm, n_items: int, item_bias: bool):
        super().__init__()
        self.ppm = ppm
        self.bias = torch.nn.Parameter(torch.zeros(n_items)) if item_bias else None

    def forward(self, me_t: torch.Tensor, target: torch.Tensor, hist: torch.Tensor, age: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        """Logits f32 ``[B]`` of targets int64 ``[B]`` after histories int64 ``[B, L]`` (ME rows of ``me_t``
        f32 ``[N_items + 1, me_dim]``), ages f32 ``[B, L]`` (s), valid mask f32 ``[B, L]``."""
        logits = _ppm_logits(self.ppm, me_t, target, hist, age, mask)
        return logits if self.bias is None else logits + self.bias[target]


def pretrain_ppm(settings: Settings, ex: "PPMExamples | PPMExampleFile", progress=None, ranks: Ranks = SINGLE,
                 checkpoint_dir: Path | None = None) -> tuple[object, dict]:
    """Pre-train PPM on the click labels of the train window; monitor validation AUC each epoch and keep
    the best epoch's weights. Runs under ``ppm.threads`` torch threads.

    Args:
        ex: in-memory examples or the pipeline's on-disk :class:`PPMExampleFile` (read chunk by chunk).
        progress: optional callable(str) for one line per epoch (Dagster log / CLI).
        ranks: this process's rank among data-parallel training processes (every rank calls this with the same
            arguments; :func:`pretrain_ppm_on_ranks` launches them); only the chief gets the model, the other
            ranks get ``(None, None)``.
        checkpoint_dir: per-epoch checkpoints there (resumed from when they belong to this run; removed at the
            end); None: none.

    Returns:
        (PPM in eval mode, metrics dict with per-epoch train loss and valid AUC, seconds, row counts).
    """
    with torch_threads(settings.ppm.threads):
        ckpt = None
        if checkpoint_dir is not None:
            files = [ex.path] if isinstance(ex, PPMExampleFile) else []
            ckpt = EpochCheckpoint(checkpoint_dir, fingerprint(settings.model_dump_json(), files, ranks), ranks)
        out = _pretrain(settings, ex, progress, ranks, ckpt)
        if ckpt is not None:
            ranks.barrier()
            ckpt.clear()
        return out


def pretrain_ppm_on_ranks(settings: Settings, ex: PPMExampleFile, progress=None) -> tuple[object, dict]:
    """:func:`pretrain_ppm` on ``settings.training.processes`` data-parallel ranks
    (:func:`~ppm_platform.training.distributed.run_data_parallel`), per-epoch checkpoints in
    ``settings.checkpoints_dir / "ppm"`` when ``training.checkpoints``. With more than one process every rank
    reopens ``ex`` from its path (on storage every rank sees) and the chief publishes the PPM under
    ``<checkpoints>/ppm.result``, loaded back here.

    Raises:
        as :func:`pretrain_ppm`; RuntimeError when every distributed attempt failed.
    """
    from functools import partial

    from ppm_platform.model_store import load_ppm
    from ppm_platform.training.distributed import run_data_parallel

    ckpt = settings.checkpoints_dir / "ppm" if settings.training.checkpoints else None
    if settings.training.processes <= 1:
        return pretrain_ppm(settings, ex, progress, checkpoint_dir=ckpt)
    folder, attempts = run_data_parallel(settings, partial(_ppm_rank_job, settings, ex, ckpt,
                                                           settings.checkpoints_dir / "ppm.result"), "PPM")
    ppm, metrics = load_ppm(Path(folder))
    metrics["launches"] = attempts
    if progress:
        for h in metrics["epochs"]:
            progress(f"PPM epoch {h['epoch']}: train loss {h['train_loss']:.4f}, valid click AUC "
                     f"{h['valid_click_auc']:.4f} ({settings.training.processes} ranks)")
    return ppm, metrics


def _ppm_rank_job(settings: Settings, ex: PPMExampleFile, checkpoint_dir: Path | None, result: Path,
                  ranks: Ranks) -> str | None:
    """One rank of :func:`pretrain_ppm_on_ranks`: pre-train; the chief publishes the PPM at ``result``."""
    from ppm_platform.model_store import save_model

    ppm, metrics = pretrain_ppm(settings, ex, (lambda m: print(m, flush=True)) if ranks.chief else None, ranks,
                                checkpoint_dir)
    if not ranks.chief:
        return None
    save_model(ppm, ppm.cfg, result, "ppm", metrics)
    return str(result)


def _pretrain(settings: Settings, ex, progress, ranks: Ranks = SINGLE,
              checkpoint: EpochCheckpoint | None = None) -> tuple[object, dict]:
    from ppm_platform.models.ppm import PPM, PPMConfig

    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    p = settings.ppm
    cfg = PPMConfig.from_settings(settings, me_dim=ex.me.shape[1])
    ppm = PPM(cfg)
    # a per-item logit offset during pre-training only (discarded after): it absorbs each item's popularity so
    # the content tower is not pushed to memorize it (the URM reads popularity from the counters, leak-free)
    step_module = PPMTrainStep(ppm, ex.me.shape[0], p.item_bias)
    bias = step_module.bias
    groups = [{"params": list(ppm.parameters())}]
    if bias is not None:  # one scalar per item, seen ~ (its impressions / batch) times an epoch: a larger step
        groups.append({"params": [bias], "lr": p.lr * 10, "weight_decay": 0.0})
    opt = torch.optim.AdamW(groups, lr=p.lr, weight_decay=p.weight_decay)
    if ranks.distributed:  # the same initial weights on every rank (above), then per-rank dropout streams
        torch.manual_seed(settings.seed + 7919 * ranks.rank)
    fwd = ranks.wrap(step_module)
    if isinstance(ex, PPMExamples):
        n_train, n_valid = int((ex.split == "train").sum()), int((ex.split == "valid").sum())
    else:
        n_train, n_valid = ex.count(0), ex.count(1)
    me_t = torch.from_numpy(ex.me)
    t0 = time.perf_counter()
    history, best, start = [], (-1.0, None), 0
    if checkpoint is not None and (r := checkpoint.resume(step_module, opt, rng, [])) is not None:
        start, history, best = r.next_epoch, r.history, (r.best_auc, r.best_state)
        if progress:
            progress(f"PPM: resumed after epoch {start}/{p.epochs} from {checkpoint.folder}")
    for epoch in range(start, p.epochs):
        ppm.train()
        losses = []
        t_epoch = time.perf_counter()
        # progress bar with rate and ETA on a TTY; silent when stderr is not a terminal (tqdm disable=None)
        bar = tqdm(total=n_train, desc=f"PPM epoch {epoch + 1}/{p.epochs}", unit="row",
                   disable=None if ranks.chief else True, leave=False)
        for step, (t, scale) in enumerate(train_batches(ex, rng, p.batch_size, ranks)):
            logits = fwd(me_t, t["target"], t["hist"], t["age_s"], t["mask"])
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, t["click"])
            opt.zero_grad()
            (loss * scale if ranks.distributed else loss).backward()
            opt.step()
            losses.append(loss.item())
            bar.update(len(t["click"]) * ranks.world)
            if checkpoint is not None:
                checkpoint.heartbeat(epoch + 1, step)
        bar.close()
        t_valid = time.perf_counter()
        yv, pv = predict_split(ppm, ex, "valid", item_bias=None if bias is None else bias.detach(), ranks=ranks)
        v_auc = auc(yv, pv) if len(yv) else float("nan")
        history.append({"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "valid_click_auc": v_auc,
                        "train_s": round(t_valid - t_epoch, 3), "valid_s": round(time.perf_counter() - t_valid, 3)})
        if progress and ranks.chief:
            progress(f"PPM epoch {epoch + 1}/{p.epochs}: train loss {np.mean(losses):.4f}, valid click AUC {v_auc:.4f}")
        if not np.isnan(v_auc) and v_auc > best[0]:
            best = (v_auc, {k: v.detach().clone() for k, v in ppm.state_dict().items()})
        if checkpoint is not None:
            checkpoint.save(epoch + 1, step_module, opt, rng, [], history, best[0], best[1])
    if not ranks.chief:
        return None, None
    if best[1] is not None:
        ppm.load_state_dict(best[1])
    ppm.eval()
    yv, v_prob = predict_split(ppm, ex, "valid")
    secs = time.perf_counter() - t0
    metrics = {
        "train_rows": n_train, "valid_rows": n_valid,
        "seconds": round(secs, 1), "train_rows_per_s": round(n_train * p.epochs / secs, 1) if secs else None,
        "epochs": history,
        "processes": ranks.world,
        "resumed_after_epoch": None if checkpoint is None else checkpoint.resumed_after,
        # the saved PPM (ID-free: without the pre-training's item offsets); the per-epoch figures and the
        # epoch selection use the pre-training objective (with them when ppm.item_bias)
        "valid_click_auc": auc(yv, v_prob) if len(yv) else float("nan"),
        "valid_click_auc_pretraining": best[0] if best[1] is not None else float("nan"),
        "item_bias": bias is not None,
        "valid_click_logloss": logloss(yv, v_prob) if len(yv) else float("nan"),
        "config": cfg.__dict__,
    }
    return ppm, metrics
