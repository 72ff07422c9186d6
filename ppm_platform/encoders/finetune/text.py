"""Query-matching fine-tune of the text encoder (PPM, DESIGN.md §1: BERT fine-tuned by a SimCSE-style
contrastive query-matching task on (search query, clicked item text) pairs with in-batch negatives).

Task: for a batch of ``B`` pairs ``(query_i, item_i)``, embed queries and item texts with the same encoder
(mean pooling + L2 norm, :func:`~ppm_platform.encoders.text.mean_pool`), score ``s_ij = cos(q_i, d_j) / tau``
and minimise InfoNCE ``-log softmax_j(s_ij)[i]`` (Gao et al., "SimCSE", EMNLP 2021, eq. 5, supervised form with
in-batch negatives). A column ``j != i`` whose item is the same item as row ``i`` (two queries of one movie in
one batch) is the row's positive, not a negative: it is masked out of the softmax (:func:`info_nce_loss`).

Data: the ``queries`` table (MovieLens: free-text tags). Rows are first deduplicated on (normalised query text,
item) so one pair can never be on both sides of the split, then split by row into train / held-out with a
seeded permutation (:func:`split_queries`). Item text = :func:`~ppm_platform.data.item_content.item_text`.

Evaluation (:func:`retrieval_metrics`): each held-out query retrieves over the WHOLE catalog by cosine; recall@10
= share of held-out rows whose clicked item is in the top 10; MRR = mean of ``1 / rank`` of the clicked item.
Computed with the base model (before) and the fine-tuned model (after) on the same held-out rows.

Output: ``save_pretrained`` model + tokenizer into ``settings.models_dir / "text_encoder"`` (temp folder +
rename, atomic), loadable by ``TextEncoder(model_path=...)``, plus ``metrics.json``, ``training_curve.png`` and
(``finetune.export_onnx``) ``model.onnx`` (parity-checked).
"""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # pragma: no cover
    import torch

from ppm_platform.config import Settings
from ppm_platform.data import catalog
from ppm_platform.encoders.finetune.common import replace_dir, skipped
from ppm_platform.runtime import Progress, torch_threads

log = logging.getLogger("ppm_platform.encoders")


# ---- loss ----------------------------------------------------------------------------------------------------
def info_nce_loss(query_emb: "torch.Tensor", item_emb: "torch.Tensor", item_ids: "torch.Tensor",
                  temperature: float) -> "torch.Tensor":
    """InfoNCE with in-batch negatives, duplicates of the positive item masked.

    Args:
        query_emb: float ``[B, H]``, L2-normalised query embeddings.
        item_emb: float ``[B, H]``, L2-normalised item-text embeddings; row ``i`` is query ``i``'s clicked item.
        item_ids: int64 ``[B]``, the item of each row; ``item_ids[j] == item_ids[i]`` (``j != i``) means column
            ``j`` is the same item as the positive and is excluded from row ``i``'s softmax.
        temperature: ``tau > 0``; logits are ``cos / tau``.

    Returns:
        Scalar float tensor: mean over rows of ``-log(exp(s_ii) / sum_{j not masked} exp(s_ij))``.

    Raises:
        ValueError: shapes disagree or ``temperature <= 0``.
    """
    import torch

    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if query_emb.shape != item_emb.shape or query_emb.dim() != 2 or item_ids.shape != query_emb.shape[:1]:
        raise ValueError(f"info_nce_loss: query {tuple(query_emb.shape)}, item {tuple(item_emb.shape)}, "
                         f"item_ids {tuple(item_ids.shape)} do not match ([B, H], [B, H], [B])")
    logits = query_emb @ item_emb.T / temperature  # [B, B]
    same = item_ids.view(-1, 1) == item_ids.view(1, -1)
    eye = torch.eye(len(item_ids), dtype=torch.bool, device=logits.device)
    logits = logits.masked_fill(same & ~eye, float("-inf"))
    return torch.nn.functional.cross_entropy(logits, torch.arange(len(item_ids), device=logits.device))


# ---- data ----------------------------------------------------------------------------------------------------
def normalise_query(q: str) -> str:
    """Lower-case, collapse whitespace (the dedup key of a query text)."""
    return " ".join(str(q).lower().split())


def split_queries(queries: pd.DataFrame, catalog_ids: np.ndarray, test_frac: float, seed: int
                  ) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Deduplicate and split the query rows into train / held-out (disjoint by construction).

    Args:
        queries: ``query:str``, ``item_id:int64`` (+ any other columns).
        catalog_ids: the catalog's item ids; query rows for other items are dropped (counted).
        test_frac: share of the deduplicated rows held out (at least 1 row when there are >= 2 rows).
        seed: permutation seed (same seed, same split).

    Returns:
        ``(train, test, info)``: frames with ``query``, ``item_id``, ``query_key``; ``info`` has the row counts
        (``rows_in``, ``not_in_catalog``, ``empty_query``, ``duplicates``, ``train``, ``test``,
        ``train_items``, ``test_items``).

    Raises:
        ValueError: a required column is missing, or ``test_frac`` is not in (0, 1).
    """
    missing = [c for c in ("query", "item_id") if c not in queries.columns]
    if missing:
        raise ValueError(f"queries: missing column(s) {missing}")
    if not 0 < test_frac < 1:
        raise ValueError(f"test_frac must be in (0, 1), got {test_frac}")
    df = queries[["query", "item_id"]].copy()
    rows_in = len(df)
    in_cat = df["item_id"].isin(set(int(i) for i in catalog_ids))
    df = df[in_cat]
    df["query_key"] = df["query"].map(normalise_query)
    empty = df["query_key"] == ""
    df = df[~empty]
    n_before = len(df)
    df = df.drop_duplicates(["query_key", "item_id"]).sort_values(["query_key", "item_id"]).reset_index(drop=True)
    perm = np.random.default_rng(seed).permutation(len(df))
    n_test = int(round(test_frac * len(df)))
    if len(df) >= 2:
        n_test = min(max(n_test, 1), len(df) - 1)
    test = df.iloc[np.sort(perm[:n_test])].reset_index(drop=True)
    train = df.iloc[np.sort(perm[n_test:])].reset_index(drop=True)
    info = {"rows_in": rows_in, "not_in_catalog": int((~in_cat).sum()), "empty_query": int(empty.sum()),
            "duplicates": n_before - len(df), "train": len(train), "test": len(test),
            "train_items": int(train["item_id"].nunique()), "test_items": int(test["item_id"].nunique())}
    return train, test, info


def retrieval_metrics(query_emb: np.ndarray, item_emb: np.ndarray, catalog_ids: np.ndarray,
                      target_ids: np.ndarray, k: int = 10) -> dict:
    """Query -> item retrieval over the whole catalog by cosine (rows are L2-normalised).

    Args:
        query_emb: float32 ``[Q, H]``; item_emb: float32 ``[N, H]`` (one row per catalog item, in
        ``catalog_ids`` order); target_ids: int64 ``[Q]``, each query's clicked item (must be in the catalog).

    Returns:
        ``{"recall@k": float, "mrr": float, "queries": Q, "catalog": N}``; rank 1 = best, ties broken
        pessimistically (an item with the same score as the target counts as ranked above it).

    Raises:
        KeyError: a target item is not in the catalog.
    """
    pos = {int(i): n for n, i in enumerate(catalog_ids)}
    try:
        tgt = np.array([pos[int(t)] for t in target_ids], dtype=np.int64)
    except KeyError as e:
        raise KeyError(f"retrieval_metrics: target item {e.args[0]} is not in the catalog") from None
    scores = query_emb @ item_emb.T  # [Q, N]
    own = scores[np.arange(len(tgt)), tgt][:, None]
    rank = (scores >= own).sum(axis=1)  # includes the target itself
    return {f"recall@{k}": float(np.mean(rank <= k)) if len(rank) else float("nan"),
            "mrr": float(np.mean(1.0 / rank)) if len(rank) else float("nan"),
            "queries": int(len(tgt)), "catalog": int(len(catalog_ids))}


# ---- encoding with a model being trained ---------------------------------------------------------------------
def _embed(model, tokenizer, texts: list[str], max_tokens: int) -> "torch.Tensor":
    from ppm_platform.encoders.text import mean_pool

    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_tokens, return_tensors="pt")
    return mean_pool(model(**enc).last_hidden_state, enc["attention_mask"])


def _encode_all(model, tokenizer, texts: list[str], max_tokens: int, batch_size: int = 128) -> np.ndarray:
    import torch

    model.eval()
    out = []
    with torch.inference_mode():
        for s in range(0, len(texts), batch_size):
            out.append(_embed(model, tokenizer, texts[s:s + batch_size], max_tokens).float().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.config.hidden_size), dtype=np.float32)


def _evaluate(model, tokenizer, test: pd.DataFrame, catalog_ids: np.ndarray, catalog_texts: list[str],
              max_tokens: int) -> dict:
    items = _encode_all(model, tokenizer, catalog_texts, max_tokens)
    q = _encode_all(model, tokenizer, test["query"].astype(str).tolist(), max_tokens)
    return retrieval_metrics(q, items, catalog_ids, test["item_id"].to_numpy())


# ---- the stage -----------------------------------------------------------------------------------------------
def finetune_text_encoder(settings: "Settings", queries: pd.DataFrame, items: pd.DataFrame,
                          progress: Progress = None) -> dict:
    """Query-matching fine-tune of ``settings.encoders.text_model_path`` (``None`` = MiniLM) on ``queries``.

    Budget: ``settings.finetune.text`` (epochs, max_steps, batch_size, lr, weight_decay, temperature, test_frac);
    torch threads ``settings.finetune.threads``; seeded by ``settings.seed`` (split, batch order, dropout). All layers of the transformer are trained.

    Args:
        queries: the canonical ``queries`` table (``query``, ``item_id``).
        items: the canonical ``items`` table (``item_id``, ``title``, ``categories``) = the retrieval catalog.
        progress: called with a log line per epoch.

    Returns:
        JSON-able dict: ``before`` / ``after`` retrieval metrics on the held-out queries, ``split`` sizes,
        ``train_seconds``, ``steps``, ``loss_curve`` (mean loss per epoch), ``path``, ``version``, ``onnx``.

        With too little data (no queries, or < 2 training / < 1 held-out rows after dedup) nothing is trained:
        ``{"skipped": reason, "split": ...}`` and any earlier fine-tuned model in the folder is removed, so
        ``item_multimodal`` falls back to the pre-trained encoder rather than one trained on other data.

    Raises:
        ValueError: the ONNX parity check fails.
    """
    with torch_threads(settings.finetune.threads):
        return _finetune_text(settings, queries, items, progress)


def _finetune_text(settings: "Settings", queries: pd.DataFrame, items: pd.DataFrame, progress: Progress) -> dict:
    import torch
    from transformers import AutoModel, AutoTokenizer

    from ppm_platform.data.item_content import item_text
    from ppm_platform.encoders.text import default_text_model_path, text_encoder_version
    from ppm_platform.reporting.plots import curve_png

    ft, enc = settings.finetune.text, settings.encoders
    say = progress or log.info
    t_all, cpu_all = time.perf_counter(), time.process_time()
    torch.manual_seed(settings.seed)
    items = items.sort_values("item_id").reset_index(drop=True)
    catalog_ids = items["item_id"].to_numpy(dtype=np.int64)
    catalog_texts = [item_text(t, c) for t, c in zip(items["title"], items["categories"])]
    text_of = dict(zip(catalog_ids.tolist(), catalog_texts))
    out = catalog.path(settings, "text_encoder")
    if queries is None or len(queries) == 0:
        return skipped(out, "no queries table rows", {})
    train, test, split = split_queries(queries, catalog_ids, ft.test_frac, settings.seed)
    if split["train"] < 2 or split["test"] < 1:
        return skipped(out, "fewer than 2 training or 1 held-out query rows", split)
    base = Path(enc.text_model_path) if enc.text_model_path else default_text_model_path()
    tok = AutoTokenizer.from_pretrained(str(base), local_files_only=True)
    model = AutoModel.from_pretrained(str(base), local_files_only=True)

    before = _evaluate(model, tok, test, catalog_ids, catalog_texts, enc.max_text_tokens)
    say(f"text_encoder: before fine-tuning recall@10={before['recall@10']:.4f} mrr={before['mrr']:.4f} "
        f"({split['test']} held-out queries, catalog {len(catalog_ids)})")

    opt = torch.optim.AdamW(model.parameters(), lr=ft.lr, weight_decay=ft.weight_decay)
    rng = np.random.default_rng(settings.seed)
    q_all, i_all = train["query"].astype(str).tolist(), train["item_id"].to_numpy(dtype=np.int64)
    bs = max(2, min(ft.batch_size, len(train)))
    step_losses: list[float] = []
    epoch_losses: list[float] = []
    steps, t0 = 0, time.perf_counter()
    for epoch in range(ft.epochs):
        model.train()
        perm = rng.permutation(len(train))
        losses = []
        for s in range(0, len(perm) - 1, bs):
            idx = perm[s:s + bs]
            if len(idx) < 2:
                continue
            ids = torch.from_numpy(i_all[idx])
            qe = _embed(model, tok, [q_all[j] for j in idx], enc.max_text_tokens)
            de = _embed(model, tok, [text_of[int(i)] for i in i_all[idx]], enc.max_text_tokens)
            loss = info_nce_loss(qe, de, ids, ft.temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            step_losses.append(losses[-1])
            steps += 1
            if ft.max_steps is not None and steps >= ft.max_steps:
                break
        epoch_losses.append(float(np.mean(losses)) if losses else float("nan"))
        el = time.perf_counter() - t0
        say(f"text_encoder: epoch {epoch + 1}/{ft.epochs} loss={epoch_losses[-1]:.4f} steps={steps} "
            f"({el:.1f} s, {steps * bs / max(el, 1e-9):.1f} pairs/s)")
        if ft.max_steps is not None and steps >= ft.max_steps:
            break
    train_seconds = time.perf_counter() - t0

    after = _evaluate(model, tok, test, catalog_ids, catalog_texts, enc.max_text_tokens)
    say(f"text_encoder: after fine-tuning recall@10={after['recall@10']:.4f} mrr={after['mrr']:.4f}")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        model.eval()
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        onnx = None
        if settings.finetune.export_onnx:
            from ppm_platform.encoders.onnx_export import export_text_onnx

            onnx = export_text_onnx(tmp, catalog_texts[:64] + test["query"].astype(str).tolist()[:64],
                                    max_tokens=enc.max_text_tokens)
            onnx["path"] = str(out / Path(onnx["path"]).name)
        curve_png(step_losses, tmp / "training_curve.png", "query matching (InfoNCE)", "step", "train loss")
        result = {
            "task": "query matching (SimCSE-style InfoNCE, in-batch negatives, duplicates masked)",
            "base_model": str(base), "trained": "all transformer layers (embeddings + 6 layers)",
            "split": split, "before": before, "after": after,
            "recall@10_before": before["recall@10"], "recall@10_after": after["recall@10"],
            "mrr_before": before["mrr"], "mrr_after": after["mrr"],
            "epochs": len(epoch_losses), "steps": steps, "batch_size": bs, "temperature": ft.temperature,
            "lr": ft.lr, "loss_curve": epoch_losses, "step_losses": step_losses,
            "train_seconds": round(train_seconds, 2), "onnx": onnx, "seed": settings.seed,
        }
        from ppm_platform.io import write_json_atomic

        write_json_atomic(result, tmp / "metrics.json")
        replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["path"] = str(out)
    result["curve_png"] = str(out / "training_curve.png")
    result["version"] = text_encoder_version(out)
    result["seconds"] = round(time.perf_counter() - t_all, 2)
    result["cpu_seconds"] = round(time.process_time() - cpu_all, 2)
    return result
