"""Train and evaluate the URM (IDRec + PPM top + MMoE) and its IDRec-only ``Base`` on the point-in-time
training set from Feast, with the fixed time split of DESIGN.md §5.

The training set has one row per impression with every feature of the ``urm_training`` feature service as
of the impression's time; :class:`~ppm_platform.features.encoding.FeatureVectorizer` turns it into tensors the
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
import torch
from tqdm.auto import tqdm

from ppm_platform.config import Settings
from ppm_platform.features.encoding import FeatureVectorizer
from ppm_platform.training.batch import labels
from ppm_platform.training.checkpoint import EpochCheckpoint, fingerprint
from ppm_platform.training.distributed import SINGLE, Ranks
from ppm_platform.runtime import Progress, torch_threads
from ppm_platform.training.streaming import ParquetChunks
from ppm_platform.training.metrics import auc, evaluate_slices_counts
from ppm_platform.data.split import split_codes

log = logging.getLogger("ppm_platform.training")


@dataclass
class TrainedCTRModel:
    """A trained URM/Base with what is needed to serve and evaluate it."""

    model: torch.nn.Module
    config: object
    vectorizer: FeatureVectorizer
    metrics: dict
    use_ppm: bool
    #: the ``ppm_version`` of the PPM cache rows it was trained on (URM; None for Base): what it is labelled with
    cache_version: str | None = None
    #: the ``sid_version`` of the semantic-id rows it was trained on (None: no semantic ids)
    sid_version: str | None = None


def _to_tensors(x: dict[str, np.ndarray], rows: np.ndarray | slice, names: tuple[str, ...]) -> list[torch.Tensor]:
    return [torch.from_numpy(np.ascontiguousarray(x[n][rows])) for n in names]


def predict(model: torch.nn.Module, x: dict[str, np.ndarray], batch_size: int = 4096) -> np.ndarray:
    """Click/order probabilities float64 [B, 2] of ``model`` (a URM / Base) on encoded inputs ``x``
    (:func:`predict_rows` over all of them)."""
    from ppm_platform.models.urm import model_input_names

    names = model_input_names(model.cfg)
    return predict_rows(model, lambda rows: model(*_to_tensors(x, rows, names)), np.arange(len(x["user_idx"])),
                        batch_size)


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
            yield (lambda b=b: logits_of(b)), yt[b], 1.0

    def score_valid() -> tuple[np.ndarray, np.ndarray]:
        return y[rows["valid"]], predict_rows(model, logits_of, rows["valid"])

    return fit_multitask_batches(model, train_batches, score_valid, len(rows["train"]), settings, epochs, name,
                                 progress)


def fit_multitask_batches(model: torch.nn.Module, train_batches, score_valid, n_train: int, settings: Settings,
                          epochs: int, name: str, progress: Progress, ranks: Ranks = SINGLE,
                          checkpoint: EpochCheckpoint | None = None,
                          generators: tuple[torch.Generator, ...] = ()) -> list[dict]:
    """The loop of :func:`fit_multitask` over ``train_batches(rng)`` (yields ``(logits thunk, labels [B, 2],
    loss scale)`` per batch, in the seeded order of ``rng``) and ``score_valid() -> (labels [V, 2],
    probabilities [V, 2])``.

    Data-parallel (:mod:`ppm_platform.training.distributed`): ``ranks`` with more than one rank means the
    thunks run the DDP-wrapped model on this rank's part of each global batch (scaled by the loss scale), and
    ``score_valid`` returns the validation rows of every rank (gathered), so each rank keeps the same epoch.
    ``checkpoint``: written after every epoch, and resumed from when it holds this run's epochs already
    (``generators``: the dropout generators whose state it carries, with torch's global one).
    """
    from ppm_platform.models.urm import multitask_bce

    u = settings.urm
    rng = np.random.default_rng(settings.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=u.lr, weight_decay=u.weight_decay)
    history, best = [], (-1.0, None)
    start = 0
    if checkpoint is not None and (r := checkpoint.resume(model, opt, rng, list(generators))) is not None:
        start, history, best = r.next_epoch, r.history, (r.best_auc, r.best_state)
        if progress:
            progress(f"{name}: resumed after epoch {start}/{epochs} from {checkpoint.folder}")
    for epoch in range(start, epochs):
        model.train()
        losses = []
        t_epoch = time.perf_counter()
        # progress bar with rate and ETA on a TTY; silent when stderr is not a terminal (tqdm disable=None)
        bar = tqdm(total=n_train, desc=f"{name} epoch {epoch + 1}/{epochs}", unit="row",
                   disable=None if ranks.chief else True, leave=False)
        for step, (logits, yb, scale) in enumerate(train_batches(rng)):
            loss = multitask_bce(logits(), yb[:, 0], yb[:, 1], (u.click_weight, u.order_weight))
            opt.zero_grad()
            (loss * scale if ranks.distributed else loss).backward()
            opt.step()
            losses.append(loss.item())
            bar.update(len(yb) * ranks.world)
            if checkpoint is not None:
                checkpoint.heartbeat(epoch + 1, step)
        bar.close()
        t_valid = time.perf_counter()
        yv, pv = score_valid()
        v_auc = [auc(yv[:, k], pv[:, k]) for k in range(2)]
        history.append({"epoch": epoch + 1, "train_loss": float(np.mean(losses)),
                        "valid_click_auc": v_auc[0], "valid_order_auc": v_auc[1],
                        "train_s": round(t_valid - t_epoch, 3), "valid_s": round(time.perf_counter() - t_valid, 3)})
        if progress and ranks.chief:
            progress(f"{name} epoch {epoch + 1}/{epochs}: loss {np.mean(losses):.4f}, "
                     f"valid AUC click {v_auc[0]:.4f} order {v_auc[1]:.4f}")
        if not np.isnan(v_auc[0]) and v_auc[0] > best[0] or best[1] is None:
            best = (v_auc[0], {k: v.detach().clone() for k, v in model.state_dict().items()})
        if checkpoint is not None:
            checkpoint.save(epoch + 1, model, opt, rng, list(generators), history, best[0], best[1])
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


def content_dropout(inputs: list[torch.Tensor], p: float, gen: torch.Generator) -> list[torch.Tensor]:
    """Content dropout (DropoutNet, as :func:`id_dropout`): with probability ``p`` per row, ``item_content``
    (input 4, f32 ``[B]``) becomes 0, so the model's learned no-content inputs are trained (what an item with
    no catalog row gets online), and, drawn separately, the row's ``user_side`` (input 2, int64 ``[B, S]``)
    becomes OOV (a user with no profile row). ``inputs`` unchanged when ``p == 0``; training only."""
    if p <= 0:
        return inputs
    out = list(inputs)
    side, content = out[2], out[4]
    hide_side = torch.rand(side.shape[0], generator=gen) < p
    out[2] = torch.where(hide_side.unsqueeze(-1) & (side > 0), torch.ones_like(side), side)
    out[4] = torch.where(torch.rand(content.shape, generator=gen) < p, torch.zeros_like(content), content)
    return out


def training_inputs(inputs: list[torch.Tensor], settings: Settings, gen: torch.Generator) -> list[torch.Tensor]:
    """The training-time input noise of every CTR model here: :func:`id_dropout` then :func:`content_dropout`
    with ``settings.urm``'s rates (``inputs`` in :data:`~ppm_platform.models.urm.URM_INPUT_NAMES` order, at least
    the first five)."""
    return content_dropout(id_dropout(inputs, settings.urm.id_dropout, gen), settings.urm.content_dropout, gen)


def train_ctr_model(settings: Settings, training_set: "pd.DataFrame | Path", use_ppm: bool, ppm=None,
                    progress=None, recent_train_fraction: float = 1.0,
                    held_out_items: set | None = None, ppm_version: str | None = None,
                    semantic_ids: bool | None = None, ranks: Ranks = SINGLE,
                    checkpoint_dir: Path | None = None) -> TrainedCTRModel:
    """Train the URM (``use_ppm=True``, PPM top warm-started from ``ppm``) or the Base IDRec
    (``use_ppm=False``) end-to-end on click + order with a weighted sum of per-task BCE.

    Vocabularies, the counters' standardization and their rate prior are fitted on the train split
    (:class:`~ppm_platform.features.encoding.FeatureVectorizer`, ``urm.min_count``); training adds ID and content
    dropout (:func:`training_inputs`); the epoch with the best validation click AUC is kept (the test split is
    only scored, never used for selection).

    Args:
        training_set: point-in-time training set (one row per impression, ``urm_training`` features + labels):
            a DataFrame (encoded once, kept in memory) or the path of the ``training_set`` parquet, read
            ``urm.chunk_rows`` rows at a time (memory bounded by the chunk, not by the number of impressions).
            Both go through the same loop (:class:`~ppm_platform.training.streaming.FrameChunks` /
            :class:`~ppm_platform.training.streaming.ParquetChunks`): batches shuffled by chunk order and
            within chunks, validation / test scored chunk by chunk; they give the same model.
        ppm: the pre-trained PPM (required when ``use_ppm``).
        progress: optional callable(str) for one line per epoch.
        recent_train_fraction: train on only the most recent fraction (by ``event_timestamp``) of the train
            window (data-efficiency runs, DESIGN.md §5); vocabularies and the cold/new-user slices then
            follow those rows. Validation and test rows are unchanged.
        held_out_items: the item-cold protocol's held-out items: adds their slice to the metrics.
        ppm_version: the version of ``ppm`` (``ppm_caches.ppm_version_of``): with ``use_ppm``, every PPM cache
            row of the training set must hold it (:func:`training_set_cache_version`).
        semantic_ids: embed the item's semantic-id codes (``semantic_ids.levels`` levels of the
            ``item_semantic_id`` view); None = ``urm.semantic_ids``. The model is labelled with the one
            ``sid_version`` of the training set's code rows (:func:`training_set_sid_version`).
        ranks: this process's rank among the data-parallel training processes (default: the only one); on
            more than one rank every rank calls this with the same arguments and only the chief gets the model
            (the others get None). :func:`train_ctr_model_on_ranks` launches them.
        checkpoint_dir: write a checkpoint after every epoch there and resume from the last one of the same
            run (settings, data, ranks); removed once training ends. None: no checkpoints.

    Returns:
        :class:`TrainedCTRModel` whose ``metrics`` hold per-epoch curves, validation and test metrics by
        slice and task, row counts per split and (URM) ``cache_versions``
        (:func:`cache_version_counts`); its ``cache_version`` is the version of the cache rows it trained on.

    Raises:
        ValueError: ``use_ppm`` without a ``ppm``, an empty split, or ``recent_train_fraction`` outside (0, 1];
            with ``use_ppm``, a training set whose PPM cache rows are missing, of mixed versions or of another
            version than ``ppm_version`` (:func:`training_set_cache_version`).
        KeyError: ``urm.use_counters`` and the training set lacks a counter column (named); semantic ids and it
            lacks a code column.
    """
    from ppm_platform.training.streaming import FrameChunks

    if use_ppm and ppm is None:
        raise ValueError("use_ppm=True needs the pre-trained PPM")
    if not 0 < recent_train_fraction <= 1:
        raise ValueError(f"recent_train_fraction must be in (0, 1], got {recent_train_fraction}")
    with torch_threads(settings.urm.threads):
        if isinstance(training_set, (str, Path)):
            src = ParquetChunks(Path(training_set), settings.urm.chunk_rows)
        else:
            src = FrameChunks(training_set.reset_index(drop=True), settings.urm.chunk_rows)
        sid = settings.urm.semantic_ids if semantic_ids is None else semantic_ids
        ckpt = None
        if checkpoint_dir is not None:
            files = [Path(training_set)] if isinstance(training_set, (str, Path)) else []
            ckpt = EpochCheckpoint(checkpoint_dir, fingerprint(settings.model_dump_json(), files, ranks,
                                                               use_ppm=use_ppm, sid=sid, ppm_version=ppm_version,
                                                               recent=recent_train_fraction), ranks)
        out = _train(settings, src, use_ppm, ppm, progress, recent_train_fraction, held_out_items, ppm_version,
                     settings.semantic_ids.levels if sid else 0, ranks, ckpt)
        if ckpt is not None:
            ranks.barrier()
            ckpt.clear()
        return out


def train_ctr_model_on_ranks(settings: Settings, training_set: Path, name: str, use_ppm: bool,
                             ppm_dir: Path | None, ppm_version: str | None, semantic_ids: bool,
                             progress=None) -> TrainedCTRModel:
    """:func:`train_ctr_model` on ``settings.training.processes`` data-parallel ranks
    (:func:`~ppm_platform.training.distributed.run_data_parallel`), with per-epoch checkpoints in
    ``settings.checkpoints_dir / name`` when ``training.checkpoints``.

    One process: trained here (``progress`` gets one line per epoch). More: every rank loads the PPM from
    ``ppm_dir`` and reads its shard of the ``training_set`` parquet; the chief publishes the trained model
    with :func:`~ppm_platform.model_store.save_model` under ``<checkpoints>/<name>.result`` and the model is
    loaded back from there (safetensors; nothing pickled but the small arguments and the folder name).

    Raises:
        as :func:`train_ctr_model`; RuntimeError when every distributed attempt failed.
    """
    from functools import partial

    from ppm_platform.model_store import load_ppm, load_urm
    from ppm_platform.training.distributed import run_data_parallel

    ckpt = settings.checkpoints_dir / name if settings.training.checkpoints else None
    if settings.training.processes <= 1:
        ppm = load_ppm(ppm_dir)[0] if use_ppm else None
        return train_ctr_model(settings, training_set, use_ppm=use_ppm, ppm=ppm, progress=progress,
                               ppm_version=ppm_version, semantic_ids=semantic_ids, checkpoint_dir=ckpt)
    result = settings.checkpoints_dir / f"{name}.result"
    job = partial(_ctr_rank_job, settings, Path(training_set), name, use_ppm, ppm_dir, ppm_version, semantic_ids,
                  ckpt, result)
    folder, attempts = run_data_parallel(settings, job, name)
    model, meta = load_urm(Path(folder))
    meta["metrics"]["launches"] = attempts
    trained = TrainedCTRModel(model, model.cfg, FeatureVectorizer.from_dict(meta["feature_encoder"]),
                              meta["metrics"], use_ppm, meta["ppm_version"], meta["sid_version"])
    if progress:
        for h in trained.metrics["epochs"]:
            progress(f"{name} epoch {h['epoch']}: loss {h['train_loss']:.4f}, valid AUC click "
                     f"{h['valid_click_auc']:.4f} order {h['valid_order_auc']:.4f} ({settings.training.processes} ranks)")
    return trained


def _ctr_rank_job(settings: Settings, training_set: Path, name: str, use_ppm: bool, ppm_dir: Path | None,
                  ppm_version: str | None, semantic_ids: bool, checkpoint_dir: Path | None, result: Path,
                  ranks: Ranks) -> str | None:
    """One rank of :func:`train_ctr_model_on_ranks`: train; the chief publishes the model at ``result`` and
    returns its path (the other ranks None)."""
    from ppm_platform.model_store import load_ppm, save_model

    ppm = load_ppm(ppm_dir)[0] if use_ppm else None
    trained = train_ctr_model(settings, training_set, use_ppm=use_ppm, ppm=ppm,
                              progress=(lambda m: print(m, flush=True)) if ranks.chief else None,
                              ppm_version=ppm_version, semantic_ids=semantic_ids, ranks=ranks,
                              checkpoint_dir=checkpoint_dir)
    if not ranks.chief:
        return None
    save_model(trained.model, trained.config, result, name,
               {"metrics": trained.metrics, "feature_encoder": trained.vectorizer.to_dict(),
                "ppm_version": trained.cache_version, "sid_version": trained.sid_version})
    return str(result)


def counter_windows(settings: Settings) -> tuple[int, ...] | None:
    """The counter windows the CTR models read (``counters.windows_days``), None when ``urm.use_counters`` is off."""
    return tuple(settings.counters.windows_days) if settings.urm.use_counters else None


def training_set_sid_version(src, levels: int) -> str:
    """The one ``sid_version`` of a training set's semantic-id rows (a model trained on codes of one codebook
    means nothing with another's), read a chunk at a time; null rows (items without a code row) are fine.

    Raises:
        KeyError: the training set lacks the code columns (no ``item_semantic_id`` view when it was built).
        ValueError: several versions, or no code row at all.
    """
    from ppm_platform.data.schemas import semantic_id_columns

    need = [*semantic_id_columns(levels), "sid_version"]
    if missing := [c for c in need if c not in set(src.columns)]:
        raise KeyError(f"training set lacks semantic-id column(s) {missing}: materialize item_semantic_id (with "
                       f"semantic_ids.levels = {levels}), then feast_definitions and training_set")
    seen: dict[str, int] = {}
    for k in range(len(src)):
        for v, n in src.read_frame(k, ["sid_version"])["sid_version"].dropna().astype(str).value_counts().items():
            seen[v] = seen.get(v, 0) + int(n)
    if len(seen) != 1:
        raise ValueError(f"training set semantic-id rows hold sid_version(s) {seen or 'none'}: one codebook per "
                         "model; re-materialize item_semantic_id and rebuild the training set")
    return next(iter(seen))


def fit_vectorizer(settings: Settings, train: pd.DataFrame, ppm_dim: int) -> FeatureVectorizer:
    """The :class:`FeatureVectorizer` of ``settings`` fitted on in-memory train rows (what :func:`train_ctr_model`
    fits chunk by chunk): ``urm.min_count`` vocabularies, the counters of :func:`counter_windows` with the rate
    prior of the rows' labels."""
    from ppm_platform.features.encoding import label_prior

    return FeatureVectorizer.fit(train, settings.sequence.max_len, ppm_dim, min_count=settings.urm.min_count,
                              counter_windows=counter_windows(settings),
                              rate_prior=label_prior(train["click"], train["order"], settings.counters.prior_strength))


def _urm(settings: Settings, enc: FeatureVectorizer, use_ppm: bool, ppm):
    from ppm_platform.models.urm import URM, URMConfig

    cfg = URMConfig.from_settings(settings, enc, ppm.cfg if use_ppm else None)
    model = URM(cfg)
    if use_ppm:
        model.load_ppm_top(ppm)
    return model, cfg


#: training-set columns the trainer reads besides the counters (the rest, e.g. ``hist_age_s`` and versions,
#: are not inputs)
_READ_COLUMNS = ("user_id", "item_id", "click", "order", "age", "gender", "occupation", "hist_item_ids",
                 "ppm_user_seq", "ppm_seq_len", "categories", "ppm_item_vec")


#: training-set columns holding the version of the PPM cache row joined into each row (null: no cache row at or
#: before the row's time, e.g. a user's first impression or an item without ME features)
CACHE_VERSION_COLUMNS = ("ppm_user_version", "ppm_item_version")


def cache_version_counts(src) -> dict[str, dict]:
    """Rows per version in each :data:`CACHE_VERSION_COLUMNS` column of a training set, read a chunk at a time.

    Args:
        src: a chunk source (:class:`~ppm_platform.training.streaming.ParquetChunks` /
            :class:`~ppm_platform.training.streaming.FrameChunks`) or a DataFrame.

    Returns:
        ``{column: {"versions": {version: rows}, "null_rows": rows}}``.

    Raises:
        KeyError: a version column is missing (the training set was not built through the ``urm_training``
            feature service, whose ``ppm_user_cache`` / ``ppm_item_cache`` views carry them).
    """
    from ppm_platform.training.streaming import FrameChunks

    if isinstance(src, pd.DataFrame):
        src = FrameChunks(src, max(len(src), 1))
    if missing := [c for c in CACHE_VERSION_COLUMNS if c not in set(src.columns)]:
        raise KeyError(f"training set lacks {missing}: the URM is labelled with the version of the PPM cache rows it "
                       "trains on; rebuild the training set through the urm_training feature service (training_set)")
    out = {c: {"versions": {}, "null_rows": 0} for c in CACHE_VERSION_COLUMNS}
    for k in range(len(src)):
        df = src.read_frame(k, list(CACHE_VERSION_COLUMNS))
        for c in CACHE_VERSION_COLUMNS:
            col = df[c]
            out[c]["null_rows"] += int(col.isna().sum())
            for v, n in col.dropna().astype(str).value_counts().items():
                out[c]["versions"][v] = out[c]["versions"].get(v, 0) + int(n)
    return out


def training_set_cache_version(counts: dict[str, dict], expected: str | None) -> str:
    """The one ``ppm_version`` of a training set's PPM cache rows, which the URM trained on it is labelled with
    (DESIGN.md §4 version rule: never just the PPM it loaded, which may differ from the caches'). Rows with no
    cache row (null version: unknown users, a user's first impression, items without ME features) are fine:
    they get the same zero inputs offline and online.

    Args:
        counts: :func:`cache_version_counts` of the training set.
        expected: the ``ppm_version`` of the PPM the URM warm-starts from (None: not checked).

    Returns:
        the version.

    Raises:
        ValueError: the cache rows hold several versions (across or within the user / item columns), a
            version other than ``expected``, or there is no cache row at all; the message names each version
            with its row counts.
    """
    versions = sorted(set().union(*(c["versions"] for c in counts.values())))
    held = "; ".join(f"{col}: " + (", ".join(f"{v} ({n} rows)" for v, n in sorted(c["versions"].items())) or "none")
                     + f", null {c['null_rows']} rows" for col, c in counts.items())
    nulls = ("rows with a null version have no cache row (unknown users, first impressions, items without ME "
             "features) and are fine")
    fix = "recompute ppm_item_cache and ppm_user_cache with the PPM, then rebuild the training set"
    if not versions:
        raise ValueError(f"training set has no PPM cache row ({held}): {fix}")
    if len(versions) > 1:
        raise ValueError(f"training set cache rows hold {len(versions)} ppm_versions ({held}): a URM is fitted on "
                         f"one feature space; {fix} ({nulls})")
    if expected is not None and versions[0] != expected:
        raise ValueError(f"training set cache rows hold ppm_version {versions[0]} ({held}) but the URM warm-starts "
                         f"from the PPM of version {expected}: {fix} ({nulls})")
    return versions[0]


def split_plan(settings: Settings, ts: pd.Series, recent_train_fraction: float = 1.0) -> np.ndarray:
    """int8 code per training-set row: 0 train, 1 valid, 2 test (:func:`~ppm_platform.data.split.split_codes`),
    3 = a train row older than the most recent ``recent_train_fraction`` of the train window (not trained on).

    Raises:
        ValueError: an empty train, valid or test split.
    """
    codes = split_codes(ts, settings) if len(ts) >= 3 else np.full(len(ts), 2, np.int8)
    for name, c in (("train", 0), ("valid", 1), ("test", 2)):
        if not (codes == c).any():
            raise ValueError(f"the {name} split is empty ({len(ts)} rows in the training set)")
    if recent_train_fraction < 1:
        tr = np.flatnonzero(codes == 0)
        tr = tr[np.argsort(ts.to_numpy()[tr], kind="stable")]
        codes[tr[:len(tr) - max(1, int(round(len(tr) * recent_train_fraction)))]] = 3
    return codes


def _train(settings: Settings, src, use_ppm: bool, ppm, progress, recent_train_fraction: float,
           held_out_items: set | None, ppm_version: str | None = None, sid_levels: int = 0,
           ranks: Ranks = SINGLE, checkpoint: EpochCheckpoint | None = None) -> TrainedCTRModel | None:
    """:func:`train_ctr_model` over a chunk source (see its docstring); ``sid_levels`` 0 = no semantic ids.
    On more than one rank (:mod:`ppm_platform.training.distributed`) the chief fits the vectorizer and
    broadcasts it, each rank trains on its rows of every global batch and scores its shard of the validation
    rows, and only the chief scores the final metrics; the other ranks return None."""
    from ppm_platform.data.schemas import semantic_id_columns
    from ppm_platform.models.urm import model_input_names
    from ppm_platform.features.encoding import label_prior

    torch.manual_seed(settings.seed)
    u = settings.urm
    codes = split_plan(settings, src.column("event_timestamp"), recent_train_fraction)
    names = set(src.columns)
    # before any fitting: the version the URM is labelled with is that of the cache rows it trains on
    version_counts = cache_version_counts(src) if use_ppm else None
    cache_version = training_set_cache_version(version_counts, ppm_version) if use_ppm else None
    sid_version = training_set_sid_version(src, sid_levels) if sid_levels else None
    windows = counter_windows(settings)
    needed = FeatureVectorizer.counter_columns("user", windows) + FeatureVectorizer.counter_columns("item", windows)
    if missing := [c for c in needed if c not in names]:
        raise KeyError(f"training set lacks counter column(s) {missing[:4]}{' ...' if len(missing) > 4 else ''}: "
                       "rebuild it with the item_stats / user_stats views (or set urm.use_counters false)")
    cols = [c for c in _READ_COLUMNS if c in names] + needed + semantic_id_columns(sid_levels)
    #: rows of each split code in each chunk: what a rank's shard of a chunk is drawn from, before reading it
    per_chunk = [np.bincount(codes[start:start + n], minlength=4) for start, n in src.plan]

    def frame(k: int, code: int, columns: list[str]) -> pd.DataFrame | None:
        start, n = src.plan[k]
        m = codes[start:start + n] == code
        if not m.any():
            return None
        return src.read_frame(k, columns, None if m.all() else m)

    # pass 1 (the chief): the vectorizer (train split only) + the train-split figures of the cold / new slices
    item_counts: list[pd.Series] = []
    users: set = set()

    def train_frames():
        for k in range(len(src)):
            df = frame(k, 0, [c for c in FeatureVectorizer.fit_columns(windows, sid_levels) if c in names])
            if df is not None:
                item_counts.append(df["item_id"].value_counts())
                users.update(df["user_id"].tolist())
                yield df

    enc = None
    if ranks.chief:
        labels_all = src.columns_frame(["click", "order"])
        prior = label_prior(labels_all["click"].to_numpy()[codes == 0], labels_all["order"].to_numpy()[codes == 0],
                            settings.counters.prior_strength)
        del labels_all
        enc = FeatureVectorizer.fit_chunks(train_frames(), settings.sequence.max_len,
                                           settings.ppm.d_model if use_ppm else 0, min_count=u.min_count,
                                           counter_windows=windows, rate_prior=prior, sid_levels=sid_levels)
    enc = ranks.broadcast(enc)
    counts = pd.concat(item_counts).groupby(level=0).sum() if item_counts else pd.Series(dtype="int64")
    model, cfg = _urm(settings, enc, use_ppm, ppm)
    input_names = model_input_names(cfg)
    gen = torch.Generator().manual_seed(settings.seed + 7919 * ranks.rank)
    if ranks.distributed:  # the same initial weights on every rank (above), then per-rank dropout streams
        torch.manual_seed(settings.seed + 7919 * ranks.rank)
    fwd = ranks.wrap(model)
    cache: dict[tuple[int, int], tuple] = {}

    def encoded(k: int, code: int):
        if (k, code) in cache:
            return cache[(k, code)]
        df = frame(k, code, cols)
        e = None if df is None else (enc.transform(df), labels(df), df[["user_id", "item_id", "click", "order"]])
        if src.in_memory:  # the frame is in memory anyway: encode each chunk once
            cache[(k, code)] = e
        return e

    def encoded_rows(k: int, code: int, pos: np.ndarray):
        """Chunk ``k``'s rows of split ``code`` at sorted positions ``pos`` among them (one rank's shard):
        only these rows are decoded into a frame and encoded."""
        start, n = src.plan[k]
        m = np.zeros(n, dtype=bool)
        m[np.flatnonzero(codes[start:start + n] == code)[pos]] = True
        df = src.read_frame(k, cols, m)
        return enc.transform(df), labels(df)

    def train_batches(rng: np.random.Generator):
        for k in src.order(rng):
            n_k = int(per_chunk[int(k)][0])
            if n_k == 0:
                continue
            plan = ranks.batch_plan(n_k, rng.permutation(n_k), u.batch_size)
            if ranks.distributed:
                if not plan:
                    continue
                mine = np.unique(np.concatenate([r for r, _ in plan]))
                x, y = encoded_rows(int(k), 0, mine)
                plan = [(np.searchsorted(mine, r), sc) for r, sc in plan]
            else:
                x, y, _ = encoded(int(k), 0)
            xt = [torch.from_numpy(np.ascontiguousarray(x[n])) for n in input_names]  # gathered per batch
            yt = torch.from_numpy(y)
            for rows, sc in plan:
                b = torch.from_numpy(rows)
                t = [a[b] for a in xt]
                yield (lambda t=t: fwd(*(training_inputs(t, settings, gen) if model.training else t))), yt[b], sc

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

    def score_shard(code: int) -> tuple[np.ndarray, np.ndarray]:
        """Labels and probabilities of this rank's shard of split ``code``, gathered from every rank."""
        ys, ps = [np.zeros((0, 2), np.float32)], [np.zeros((0, 2))]
        for k in range(len(src)):
            pos = ranks.shard(int(per_chunk[k][code]))
            if len(pos):
                x, y = encoded_rows(k, code, pos)
                ys.append(y)
                ps.append(predict(model, x))
        y, p = ranks.gather([np.concatenate(ys), np.concatenate(ps)])
        return y, p

    t0 = time.perf_counter()
    n_rows = {s: int((codes == c).sum()) for s, c in (("train", 0), ("valid", 1), ("test", 2))}
    history = fit_multitask_batches(model, train_batches,
                                    (lambda: score_shard(1)) if ranks.distributed else (lambda: score(1)[:2]),
                                    n_rows["train"], settings, u.epochs, "URM" if use_ppm else "Base", progress,
                                    ranks, checkpoint, (gen,))
    if not ranks.chief:
        return None
    metrics = {"rows": n_rows, "epochs": history, "train_seconds": round(time.perf_counter() - t0, 1),
               "processes": ranks.world, "resumed_after_epoch": None if checkpoint is None else checkpoint.resumed_after}
    if use_ppm:
        metrics["cache_versions"] = version_counts
    if sid_levels:
        metrics["sid_version"] = sid_version
    for s, c in (("valid", 1), ("test", 2)):
        _, p, df = score(c, keep_rows=True)
        metrics[s] = evaluate_slices_counts(df, p, counts, users, held_out_items)
    return TrainedCTRModel(model, cfg, enc, metrics, use_ppm, cache_version, sid_version)
