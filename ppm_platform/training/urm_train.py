"""Train and evaluate the URM (IDRec + PPM top + MMoE) and its IDRec-only ``Base`` on the point-in-time
training set from Feast, with the fixed time split of DESIGN.md §5.

The training set has one row per impression with every feature of the ``urm_training`` feature service as
of the impression's time; :class:`~ppm_platform.training.batch.FeatureEncoder` turns it into tensors the
same way serving does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm

from ppm_platform.config import Settings
from ppm_platform.training.batch import FeatureEncoder, labels
from ppm_platform.runtime import torch_threads
from ppm_platform.training.streaming import ParquetChunks
from ppm_platform.training.metrics import auc, task_metrics
from ppm_platform.training.split import assign_split

log = logging.getLogger("ppm_platform.training")

Progress = Callable[[str], None] | None
TASKS = ("click", "order")
#: Cold-item threshold of the evaluation protocol (DESIGN.md §5): <= this many training impressions.
COLD_ITEM_MAX_TRAIN_IMPRESSIONS = 10


@dataclass
class TrainedCTRModel:
    """A trained URM/Base with what is needed to serve and evaluate it."""

    model: torch.nn.Module
    config: object
    encoder: FeatureEncoder
    metrics: dict
    use_ppm: bool


def _to_tensors(x: dict[str, np.ndarray], rows: np.ndarray | slice) -> list[torch.Tensor]:
    from ppm_platform.models.urm import URM_INPUT_NAMES

    return [torch.from_numpy(np.ascontiguousarray(x[n][rows])) for n in URM_INPUT_NAMES]


def predict(model: torch.nn.Module, x: dict[str, np.ndarray], batch_size: int = 4096) -> np.ndarray:
    """Click/order probabilities float64 [B, 2] of ``model`` on encoded inputs ``x``."""
    model.eval()
    n = len(x["user_idx"])
    out = []
    with torch.inference_mode():
        for s in range(0, n, batch_size):
            out.append(torch.sigmoid(model(*_to_tensors(x, slice(s, s + batch_size)))))
    return torch.cat(out).double().numpy() if out else np.zeros((0, 2))


def fit_multitask(model: torch.nn.Module, logits_of: Callable[[np.ndarray], torch.Tensor], y: np.ndarray,
                  rows: dict[str, np.ndarray], settings: Settings, epochs: int, name: str,
                  progress: Progress) -> list[dict]:
    """THE multi-task training loop (Base, URM and the evaluation harness's other rows): AdamW, weighted
    per-task BCE (:func:`ppm_platform.models.urm.multitask_bce`), shuffled batches of ``rows['train']``;
    after each epoch the validation AUC per task; the epoch with the best validation click AUC is loaded
    into ``model`` (the test split is never looked at). ``logits_of(row_ids) -> [B, 2]`` runs the model on
    those rows (it may behave differently in ``model.training``, e.g. ID dropout). Returns the per-epoch
    history. (In memory; :func:`fit_multitask_batches` is the same loop over any batch source.)"""
    bs = settings.urm.batch_size
    yt = torch.from_numpy(y)

    def train_batches(rng: np.random.Generator):
        rng.permutation(1)  # the chunk order of a one-chunk source (draws nothing; same stream as streaming)
        perm = rng.permutation(rows["train"])
        for s in range(0, len(perm), bs):
            b = perm[s:s + bs]
            yield (lambda b=b: logits_of(b)), yt[b]

    def score_valid() -> tuple[np.ndarray, np.ndarray]:
        return y[rows["valid"]], predict_rows(model, logits_of, rows["valid"])

    return fit_multitask_batches(model, train_batches, score_valid, len(rows["train"]), settings, epochs, name,
                                 progress)


def fit_multitask_batches(model: torch.nn.Module, train_batches, score_valid, n_train: int, settings: Settings,
                          epochs: int, name: str, progress: Progress) -> list[dict]:
    """The loop of :func:`fit_multitask` over ``train_batches(rng)`` (yields ``(logits thunk, labels [B, 2])``
    per batch, in the seeded order of ``rng``) and ``score_valid() -> (labels [V, 2], probabilities [V, 2])``."""
    from ppm_platform.models.urm import multitask_bce

    u = settings.urm
    rng = np.random.default_rng(settings.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=u.lr, weight_decay=u.weight_decay)
    history, best = [], (-1.0, None)
    for epoch in range(epochs):
        model.train()
        losses = []
        # progress bar with rate and ETA on a TTY; silent when stderr is not a terminal (tqdm disable=None)
        bar = tqdm(total=n_train, desc=f"{name} epoch {epoch + 1}/{epochs}", unit="row", disable=None, leave=False)
        for logits, yb in train_batches(rng):
            loss = multitask_bce(logits(), yb[:, 0], yb[:, 1], (u.click_weight, u.order_weight))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            bar.update(len(yb))
        bar.close()
        yv, pv = score_valid()
        v_auc = [auc(yv[:, k], pv[:, k]) for k in range(2)]
        history.append({"epoch": epoch + 1, "train_loss": float(np.mean(losses)),
                        "valid_click_auc": v_auc[0], "valid_order_auc": v_auc[1]})
        if progress:
            progress(f"{name} epoch {epoch + 1}/{epochs}: loss {np.mean(losses):.4f}, "
                     f"valid AUC click {v_auc[0]:.4f} order {v_auc[1]:.4f}")
        if not np.isnan(v_auc[0]) and v_auc[0] > best[0] or best[1] is None:
            best = (v_auc[0], {k: v.detach().clone() for k, v in model.state_dict().items()})
    model.load_state_dict(best[1])
    model.eval()
    return history


def predict_rows(model: torch.nn.Module, logits_of: Callable[[np.ndarray], torch.Tensor], rows: np.ndarray,
                 batch_size: int = 4096) -> np.ndarray:
    """Click/order probabilities float64 ``[len(rows), 2]``."""
    model.eval()
    out = []
    with torch.inference_mode():
        for s in range(0, len(rows), batch_size):
            out.append(torch.sigmoid(logits_of(rows[s:s + batch_size])))
    return torch.cat(out).double().numpy() if out else np.zeros((0, 2))


def evaluate_slices(test: pd.DataFrame, probs: np.ndarray, train: pd.DataFrame) -> dict:
    """Per-task AUC / GAUC / logloss on the slices of DESIGN.md §5.

    Slices: ``all``; ``cold_items`` (test items with <= 10 training impressions); ``warm_items``;
    ``new_users`` (no training impressions).
    """
    return evaluate_slices_counts(test, probs, train["item_id"].value_counts(), set(train["user_id"]))


def evaluate_slices_counts(test: pd.DataFrame, probs: np.ndarray, item_counts: pd.Series, train_users: set) -> dict:
    """:func:`evaluate_slices` from the train split's impressions per item (``item_counts``, indexed by
    item id) and its set of user ids, instead of the train rows themselves."""
    n_train = test["item_id"].map(item_counts).fillna(0).to_numpy()
    slices = {
        "all": np.ones(len(test), bool),
        "cold_items": n_train <= COLD_ITEM_MAX_TRAIN_IMPRESSIONS,
        "warm_items": n_train > COLD_ITEM_MAX_TRAIN_IMPRESSIONS,
        "new_users": ~test["user_id"].isin(train_users).to_numpy(),
    }
    y = labels(test)
    users = test["user_id"].to_numpy()
    out = {}
    for name, m in slices.items():
        out[name] = {t: task_metrics(users[m], y[m, k], probs[m, k]) for k, t in enumerate(TASKS)} if m.any() else {}
        out[name]["impressions"] = int(m.sum())
    return out


def id_dropout(inputs: list[torch.Tensor], p: float, gen: torch.Generator) -> list[torch.Tensor]:
    """ID dropout (Volkovs et al., "DropoutNet", NeurIPS'17): replace each known ``user_idx`` / ``item_idx``
    (inputs 0 and 1 of :data:`~ppm_platform.models.urm.URM_INPUT_NAMES`, int64 ``[B]``) by the OOV index 1 with
    probability ``p``, so the OOV embeddings that cold users / items get at serving time are trained. Returns
    ``inputs`` unchanged when ``p == 0`` (training only; never applied when scoring)."""
    if p <= 0:
        return inputs
    out = list(inputs)
    for j in (0, 1):
        t = out[j]
        drop = (torch.rand(t.shape, generator=gen) < p) & (t > 1)
        out[j] = torch.where(drop, torch.ones_like(t), t)
    return out


def train_ctr_model(settings: Settings, training_set: "pd.DataFrame | Path", use_ppm: bool, ppm=None,
                    progress=None, recent_train_fraction: float = 1.0) -> TrainedCTRModel:
    """Train the URM (``use_ppm=True``, PPM top warm-started from ``ppm``) or the Base IDRec
    (``use_ppm=False``) end-to-end on click + order with a weighted sum of per-task BCE.

    Vocabularies are fitted on the train split; the epoch with the best validation click AUC is kept
    (the test split is only scored, never used for selection).

    Args:
        training_set: point-in-time training set (one row per impression, ``urm_training`` features + labels):
            a DataFrame, or the path of the ``training_set`` parquet, which is then read ``urm.chunk_rows`` rows
            at a time (vocabularies from the train split's id columns only, batches shuffled by chunk order
            and within chunks, validation / test scored chunk by chunk): memory bounded by the chunk, not by
            the number of impressions. Both forms give the same model when the data fit in one chunk.
        ppm: the pre-trained PPM (required when ``use_ppm``).
        progress: optional callable(str) for one line per epoch.
        recent_train_fraction: train on only the most recent fraction (by ``event_timestamp``) of the train
            window (data-efficiency runs, DESIGN.md §5); vocabularies and the cold/new-user slices then
            follow those rows. Validation and test rows are unchanged.

    Returns:
        :class:`TrainedCTRModel` whose ``metrics`` hold per-epoch curves, validation and test metrics by
        slice and task, and row counts per split.

    Raises:
        ValueError: ``use_ppm`` without a ``ppm``, an empty split, or ``recent_train_fraction`` outside (0, 1].
    """
    if use_ppm and ppm is None:
        raise ValueError("use_ppm=True needs the pre-trained PPM")
    if not 0 < recent_train_fraction <= 1:
        raise ValueError(f"recent_train_fraction must be in (0, 1], got {recent_train_fraction}")
    with torch_threads(settings.urm.threads):
        if isinstance(training_set, (str, Path)):
            return _train_file(settings, Path(training_set), use_ppm, ppm, progress, recent_train_fraction)
        return _train_frame(settings, training_set, use_ppm, ppm, progress, recent_train_fraction)


def _urm(settings: Settings, enc: FeatureEncoder, use_ppm: bool, ppm):
    from ppm_platform.models.urm import URM, URMConfig

    u = settings.urm
    cfg = URMConfig(n_users=enc.n_users, n_items=enc.n_items, user_side_cardinalities=enc.user_side_cardinalities,
                    n_genres=enc.n_genres, max_len=settings.sequence.max_len, emb_dim=u.emb_dim,
                    cross_layers=u.cross_layers, dnn_hidden=tuple(u.dnn_hidden), n_experts=u.n_experts,
                    expert_hidden=u.expert_hidden, tower_hidden=u.tower_hidden, dropout=u.dropout,
                    use_ppm=use_ppm, ppm=ppm.cfg if use_ppm else None)
    model = URM(cfg)
    if use_ppm:
        model.load_ppm_top(ppm)
    return model, cfg


def _train_frame(settings: Settings, training_set: pd.DataFrame, use_ppm: bool, ppm, progress,
                 recent_train_fraction: float) -> TrainedCTRModel:
    torch.manual_seed(settings.seed)
    u = settings.urm
    df = training_set.reset_index(drop=True)
    split = assign_split(df["event_timestamp"], settings.split.train_frac, settings.split.valid_frac).to_numpy()
    rows = {s: np.flatnonzero(split == s) for s in ("train", "valid", "test")}
    for s, r in rows.items():
        if len(r) == 0:
            raise ValueError(f"the {s} split is empty ({len(df)} rows in the training set)")
    if recent_train_fraction < 1:
        tr = rows["train"][np.argsort(df["event_timestamp"].to_numpy()[rows["train"]], kind="stable")]
        rows["train"] = np.sort(tr[len(tr) - max(1, int(round(len(tr) * recent_train_fraction))):])
    # Base ignores the ppm_* inputs (URM with use_ppm=False), so one encoder layout serves both models
    enc = FeatureEncoder.fit(df.iloc[rows["train"]], settings.sequence.max_len, settings.ppm.d_model)
    x = enc.transform(df)
    y = labels(df)
    model, cfg = _urm(settings, enc, use_ppm, ppm)
    gen = torch.Generator().manual_seed(settings.seed)

    def logits_of(b: np.ndarray) -> torch.Tensor:
        t = _to_tensors(x, b)
        return model(*(id_dropout(t, u.id_dropout, gen) if model.training else t))

    t0 = time.perf_counter()
    history = fit_multitask(model, logits_of, y, rows, settings, u.epochs, "URM" if use_ppm else "Base", progress)
    train_df = df.iloc[rows["train"]]
    metrics = {"rows": {s: int(len(r)) for s, r in rows.items()}, "epochs": history,
               "train_seconds": round(time.perf_counter() - t0, 1)}
    for s in ("valid", "test"):
        p = predict(model, {k: v[rows[s]] for k, v in x.items()})
        metrics[s] = evaluate_slices(df.iloc[rows[s]], p, train_df)
    return TrainedCTRModel(model, cfg, enc, metrics, use_ppm)


#: training-set columns the streaming trainer reads (the rest, e.g. ``hist_age_s`` and versions, are not inputs)
_READ_COLUMNS = ("user_id", "item_id", "click", "order", "age", "gender", "occupation", "hist_item_ids",
                 "ppm_user_seq", "ppm_seq_len", "categories", "ppm_item_vec")


def _train_file(settings: Settings, path: Path, use_ppm: bool, ppm, progress,
                recent_train_fraction: float) -> TrainedCTRModel:
    """:func:`train_ctr_model` over the training-set parquet, a chunk at a time (see its docstring)."""
    from ppm_platform.models.urm import URM_INPUT_NAMES
    from ppm_platform.training.ppm_train import split_codes

    torch.manual_seed(settings.seed)
    u = settings.urm
    src = ParquetChunks(path, u.chunk_rows)
    ts = pq.read_table(path, columns=["event_timestamp"]).column(0).to_pandas()
    codes = split_codes(ts, settings) if len(ts) >= 3 else np.full(len(ts), 2, np.int8)
    for name, c in (("train", 0), ("valid", 1), ("test", 2)):
        if not (codes == c).any():
            raise ValueError(f"the {name} split is empty ({len(ts)} rows in the training set)")
    if recent_train_fraction < 1:  # the older part of the train window gets code 3 (not read)
        tr = np.flatnonzero(codes == 0)
        tr = tr[np.argsort(ts.to_numpy()[tr], kind="stable")]
        codes[tr[:len(tr) - max(1, int(round(len(tr) * recent_train_fraction)))]] = 3
    del ts
    names = set(src.file.schema_arrow.names)
    cols = [c for c in _READ_COLUMNS if c in names]

    def frame(k: int, code: int, columns: list[str]) -> pd.DataFrame | None:
        start, n = src.plan[k]
        m = codes[start:start + n] == code
        if not m.any():
            return None
        tbl = src.read(k, columns)
        return (tbl if m.all() else tbl.filter(pa.array(m))).to_pandas()

    # pass 1: vocabularies (train split, id columns only) + the train-split figures of the cold / new slices
    item_counts: list[pd.Series] = []
    users: set = set()

    def train_id_frames():
        for k in range(len(src)):
            df = frame(k, 0, [c for c in FeatureEncoder.FIT_COLUMNS if c in names])
            if df is not None:
                item_counts.append(df["item_id"].value_counts())
                users.update(df["user_id"].tolist())
                yield df

    enc = FeatureEncoder.fit_chunks(train_id_frames(), settings.sequence.max_len, settings.ppm.d_model)
    counts = pd.concat(item_counts).groupby(level=0).sum() if item_counts else pd.Series(dtype="int64")
    model, cfg = _urm(settings, enc, use_ppm, ppm)
    gen = torch.Generator().manual_seed(settings.seed)

    def encoded(k: int, code: int):
        df = frame(k, code, cols)
        if df is None:
            return None
        return enc.transform(df), labels(df), df[["user_id", "item_id", "click", "order"]]

    def train_batches(rng: np.random.Generator):
        for k in src.order(rng):
            e = encoded(int(k), 0)
            if e is None:
                continue
            x, y, _ = e
            perm = rng.permutation(len(y))
            xt = [torch.from_numpy(x[n]) for n in URM_INPUT_NAMES]  # gathered per batch: no permuted copy
            yt = torch.from_numpy(y)
            for s in range(0, len(perm), u.batch_size):
                b = torch.from_numpy(perm[s:s + u.batch_size])
                t = [a[b] for a in xt]
                yield (lambda t=t: model(*(id_dropout(t, u.id_dropout, gen) if model.training else t))), yt[b]

    def score(code: int, keep_rows: bool = False):
        ys, ps, frames = [], [], []
        for k in range(len(src)):
            e = encoded(k, code)
            if e is None:
                continue
            x, y, df = e
            ys.append(y)
            ps.append(predict(model, x))
            if keep_rows:
                frames.append(df)
        return np.concatenate(ys), np.concatenate(ps), (pd.concat(frames, ignore_index=True) if keep_rows else None)

    t0 = time.perf_counter()
    n_rows = {s: int((codes == c).sum()) for s, c in (("train", 0), ("valid", 1), ("test", 2))}
    history = fit_multitask_batches(model, train_batches, lambda: score(1)[:2], n_rows["train"], settings, u.epochs,
                                    "URM" if use_ppm else "Base", progress)
    metrics = {"rows": n_rows, "epochs": history, "train_seconds": round(time.perf_counter() - t0, 1)}
    for s, c in (("valid", 1), ("test", 2)):
        _, p, df = score(c, keep_rows=True)
        metrics[s] = evaluate_slices_counts(df, p, counts, users)
    return TrainedCTRModel(model, cfg, enc, metrics, use_ppm)
