"""Entity-prediction fine-tune of the image encoder (PPM, DESIGN.md §1: the image encoder is fine-tuned to
predict the entities an item image shows). Our entities are the item's ``categories`` (MovieLens: the 19
genres), a multi-label target trained with binary cross-entropy from the poster.

What is trained (CPU budget: full fine-tuning at ~10 img/s is too slow): EfficientNet-Lite0 is cut at block
``k = settings.finetune.image.train_from_block`` (of 16).

* frozen **trunk** = stem (``_conv_stem``, ``_bn0``) + ``_blocks[0:k]``: run ONCE per image, its activations
  cached in memory (``[192, 7, 7]`` float32 per image for ``k = 12``, ~37 KB); the pass runs in onnxruntime
  (exported trunk, parity-checked against torch on the first batch, faster than torch on CPU);
* trained **tail** = ``_blocks[k:16]`` + ``_conv_head`` + ``_bn1`` (conv and BN affine weights; BN running
  statistics stay frozen, BN layers in eval mode, as usual for small-data fine-tuning) + a new classifier
  ``_fc: Linear(1280, C)`` on the global-average-pooled features, dropout 0.2 before it (the package's own).
  Default ``k = 12``: 4 MBConv blocks at 7x7 + head, 2.4 M of the 3.4 M backbone weights.

Splits (:func:`split_items`): items with an image and >= 1 category, seeded permutation into train / valid /
test (disjoint by construction). The epoch with the best validation mAP is kept. Baseline: a linear probe
(sklearn one-vs-rest ``LogisticRegression`` on standardised frozen pre-trained pooled 1280-d features, ``C``
chosen on validation mAP). Both are scored on the same held-out test items: micro/macro F1 at threshold 0.5
and mAP (macro average precision over categories with a positive test item), sklearn.metrics.

Output: ``settings.models_dir / "image_encoder" / "model.safetensors"``: the full EfficientNet-Lite0 state
dict (pre-trained trunk + fine-tuned tail + the ``_fc`` entity head, which :class:`ImageEncoder` ignores), so
``ImageEncoder(weights_path=...)`` loads it; plus ``metrics.json``, ``training_curve.png`` and (``export_onnx``)
``model.onnx``. Written to a temp folder, then renamed into place.
"""

from __future__ import annotations

import copy
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
from ppm_platform.runtime import Progress

log = logging.getLogger("ppm_platform.encoders")
#: the weights file in the fine-tuned image encoder's folder (catalog ``image_encoder``): EfficientNet's state
#: dict, not a ``model_store`` model (that one is ``model_store.WEIGHTS_FILE``)
IMAGE_WEIGHTS_FILE = "model.safetensors"
N_BLOCKS = 16


# ---- data ------------------------------------------------------------------------------------------------------
def split_items(item_ids: np.ndarray, test_frac: float, valid_frac: float, seed: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded split of item ids into disjoint ``(train, valid, test)`` id arrays (each sorted).

    Raises:
        ValueError: fractions outside [0, 1) or summing to >= 1, or fewer than 3 items.
    """
    ids = np.unique(np.asarray(item_ids, dtype=np.int64))
    if not (0 < test_frac < 1 and 0 <= valid_frac < 1 and test_frac + valid_frac < 1):
        raise ValueError(f"bad split fractions test={test_frac} valid={valid_frac}")
    if len(ids) < 3:
        raise ValueError(f"need >= 3 items to split, got {len(ids)}")
    perm = np.random.default_rng(seed).permutation(len(ids))
    n_test = max(1, int(round(test_frac * len(ids))))
    n_valid = max(1 if valid_frac > 0 else 0, int(round(valid_frac * len(ids))))
    test, valid, train = perm[:n_test], perm[n_test:n_test + n_valid], perm[n_test + n_valid:]
    return np.sort(ids[train]), np.sort(ids[valid]), np.sort(ids[test])


def multi_hot(categories: pd.Series, vocab: list[str]) -> np.ndarray:
    """float32 ``[N, len(vocab)]`` multi-hot targets of each row's category list (unknown names ignored)."""
    pos = {c: i for i, c in enumerate(vocab)}
    y = np.zeros((len(categories), len(vocab)), dtype=np.float32)
    for r, cats in enumerate(categories):
        for c in (cats if cats is not None else []):
            if c in pos:
                y[r, pos[c]] = 1.0
    return y


def multilabel_metrics(y_true: np.ndarray, prob: np.ndarray, threshold: float = 0.5) -> dict:
    """micro/macro F1 at ``threshold`` and mAP (macro AP over columns with >= 1 positive), sklearn.metrics.

    Args:
        y_true: ``[N, C]`` 0/1; prob: ``[N, C]`` probabilities.
    """
    from sklearn.metrics import average_precision_score, f1_score

    pred = (prob >= threshold).astype(int)
    cols = np.flatnonzero(y_true.sum(0) > 0)
    return {"micro_f1": float(f1_score(y_true, pred, average="micro", zero_division=0)),
            "macro_f1": float(f1_score(y_true[:, cols], pred[:, cols], average="macro", zero_division=0)),
            "map": float(average_precision_score(y_true[:, cols], prob[:, cols], average="macro")),
            "micro_ap": float(average_precision_score(y_true, prob, average="micro")),
            "items": int(len(y_true)), "categories_scored": int(len(cols))}


# ---- model pieces ------------------------------------------------------------------------------------------------
def build_parts(net, train_from_block: int, n_classes: int):
    """Cut an EfficientNet-Lite0 ``net`` into ``(trunk, tail)`` modules.

    ``trunk(x [B, 3, S, S]) -> [B, C_k, H_k, W_k]`` (stem + blocks ``< k``, frozen);
    ``tail(a) -> (features [B, 1280], logits [B, n_classes])`` (blocks ``>= k`` + head + new ``_fc``).
    Drop-connect rates follow the package (``rate * idx / 16``).

    Raises:
        ValueError: ``train_from_block`` not in ``[0, 16]``.
    """
    import torch
    from torch import nn

    if not 0 <= train_from_block <= N_BLOCKS:
        raise ValueError(f"train_from_block must be in [0, {N_BLOCKS}], got {train_from_block}")
    rate = net._global_params.drop_connect_rate or 0.0

    class Trunk(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem, self.bn0, self.act = net._conv_stem, net._bn0, net._swish
            self.blocks = nn.ModuleList(net._blocks[:train_from_block])

        def forward(self, x):
            x = self.act(self.bn0(self.stem(x)))
            for i, b in enumerate(self.blocks):
                x = b(x, drop_connect_rate=rate * i / N_BLOCKS)
            return x

    class Tail(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList(net._blocks[train_from_block:])
            self.conv_head, self.bn1, self.act = net._conv_head, net._bn1, net._swish
            self.dropout = nn.Dropout(net._global_params.dropout_rate or 0.0)
            self.fc = nn.Linear(net._bn1.num_features, n_classes)

        def forward(self, a):
            for i, b in enumerate(self.blocks):
                a = b(a, drop_connect_rate=rate * (train_from_block + i) / N_BLOCKS)
            feats = self.act(self.bn1(self.conv_head(a))).mean(dim=(2, 3))
            return feats, self.fc(self.dropout(feats))

    trunk, tail = Trunk().eval(), Tail()
    for p in trunk.parameters():
        p.requires_grad_(False)
    torch.manual_seed(0)
    return trunk, tail


def _train_mode(tail) -> None:
    """Tail in train mode (dropout, drop-connect) with every BatchNorm kept in eval mode (frozen statistics)."""
    from torch import nn

    tail.train()
    for m in tail.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def _tail_outputs(tail, acts: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    import torch

    tail.eval()
    feats, probs = [], []
    with torch.inference_mode():
        for s in range(0, len(acts), batch_size):
            f, lg = tail(torch.from_numpy(acts[s:s + batch_size]))
            feats.append(f.numpy())
            probs.append(torch.sigmoid(lg).numpy())
    return np.concatenate(feats), np.concatenate(probs)


#: tolerance of the first-batch ONNX-vs-torch check of :func:`cache_trunk` (``numpy.allclose`` semantics)
TRUNK_PARITY_ATOL, TRUNK_PARITY_RTOL = 1e-4, 1e-4


def cache_trunk(trunk, paths: list[str], image_size: int, batch_size: int = 32, use_onnx: bool = True,
                progress: Progress = None, *, root: Path | str | None) -> np.ndarray:
    """Run the frozen trunk once over ``paths`` -> float32 ``[N, C_k, H_k, W_k]`` activations.

    Images are opened with :func:`~ppm_platform.encoders.image.load_image` inside the catalog ``root``
    (``Settings.data_dir``; required, ``None`` only where there is no catalog).

    With ``use_onnx`` the trunk is exported (legacy exporter, temp file) and run in onnxruntime; the first batch
    is checked against torch element-wise, ``|onnx - torch| <= 1e-4 + 1e-4 * |torch|`` (``numpy.allclose``
    semantics: the activations are not normalised), else ``ValueError``. Logs images/s every batch.

    Raises:
        ppm_platform.data.item_content.ImageLoadError: an image cannot be read, or is refused (outside ``root``, too
            many pixels: ``ImageRefusedError``).
        ValueError: the ONNX trunk disagrees with torch.
    """
    import tempfile

    import torch

    from ppm_platform.encoders.image import load_image

    say = progress or log.info
    run = None
    tmpdir = tempfile.mkdtemp(prefix="ppm-trunk-")
    out, t0 = [], time.perf_counter()
    try:
        for s in range(0, len(paths), batch_size):
            x = np.stack([load_image(p, image_size, root=root) for p in paths[s:s + batch_size]])
            if run is None:
                with torch.inference_mode():
                    ref = trunk(torch.from_numpy(x)).numpy()
                if use_onnx:
                    from ppm_platform.onnx_common import cpu_session, quiet_onnx_export

                    onnx = Path(tmpdir) / "trunk.onnx"
                    with quiet_onnx_export(), torch.no_grad():
                        torch.onnx.export(trunk, (torch.from_numpy(x[:2]),), str(onnx), input_names=["image"],
                                          output_names=["act"], dynamic_axes={"image": {0: "b"}, "act": {0: "b"}},
                                          opset_version=17, dynamo=False)
                    sess = cpu_session(onnx, 0)
                    got = sess.run(None, {"image": x})[0]
                    # element-wise |got - ref| <= atol + rtol * |ref| (numpy.allclose): the trunk's activations
                    # reach ~10-30, where float32 kernels of two runtimes differ by ~1e-4 absolute (~3e-6
                    # relative), so a purely absolute bound fails on them
                    excess = np.abs(got - ref) - (TRUNK_PARITY_ATOL + TRUNK_PARITY_RTOL * np.abs(ref))
                    if excess.max() > 0:
                        k = int(excess.argmax())
                        raise ValueError(f"ONNX trunk disagrees with torch: |diff| = {abs(got.flat[k] - ref.flat[k]):.3g} "
                                         f"at an activation of {ref.flat[k]:.3g} (allowed {TRUNK_PARITY_ATOL:g} + "
                                         f"{TRUNK_PARITY_RTOL:g} x |activation|)")

                    def run(a, sess=sess):
                        return sess.run(None, {"image": a})[0]
                else:
                    def run(a):
                        with torch.inference_mode():
                            return trunk(torch.from_numpy(a).contiguous(memory_format=torch.channels_last)).numpy()
                out.append(ref)
            else:
                out.append(np.ascontiguousarray(run(x), dtype=np.float32))
            done = s + len(x)
            if done == len(paths) or (s // batch_size) % 10 == 0:
                el = time.perf_counter() - t0
                say(f"image_encoder: frozen trunk cached for {done}/{len(paths)} images ({done / max(el, 1e-9):.1f} img/s)")
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return np.concatenate(out) if out else np.zeros((0,), dtype=np.float32)


def linear_probe(f_train: np.ndarray, y_train: np.ndarray, f_valid: np.ndarray, y_valid: np.ndarray,
                 f_test: np.ndarray, seed: int, cs: tuple[float, ...] = (0.01, 0.1, 1.0)) -> tuple[np.ndarray, dict]:
    """One-vs-rest logistic regression on standardised features; ``C`` picked by validation mAP.

    Returns:
        ``(test probabilities [N_test, C], {"C": chosen, "valid_map": {C: mAP}})``.
    """
    import warnings

    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    best, scores = None, {}
    for c in cs:
        clf = make_pipeline(StandardScaler(), OneVsRestClassifier(LogisticRegression(C=c, max_iter=2000,
                                                                                     random_state=seed)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a category absent from the train split is predicted constant
            clf.fit(f_train, y_train)
        m = multilabel_metrics(y_valid, clf.predict_proba(f_valid))["map"] if len(y_valid) else 0.0
        scores[str(c)] = m
        if best is None or m > best[0]:
            best = (m, c, clf)
    return best[2].predict_proba(f_test), {"C": best[1], "valid_map": scores}


# ---- reproducible weights file ----------------------------------------------------------------------------------
def canonical_safetensors(data: bytes) -> bytes:
    """``data`` (a safetensors file) with its JSON header's ``__metadata__`` keys in sorted order.

    safetensors keeps the metadata in a Rust ``HashMap``, whose iteration order is randomized per process, so
    the same tensors and metadata give different file bytes (hence a different weight hash / ``encoder_version``)
    from one process to the next whenever there are >= 2 metadata keys. Only the key order changes, so the
    header keeps its length and the tensor offsets stay valid."""
    import json
    import struct

    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    if "__metadata__" in header:
        header = {"__metadata__": dict(sorted(header["__metadata__"].items())),
                  **{k: v for k, v in header.items() if k != "__metadata__"}}
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if len(raw) > n:  # pragma: no cover - only if safetensors ever changes its JSON layout
        raise ValueError(f"canonical safetensors header is longer than the original ({len(raw)} > {n})")
    return data[:8] + raw + b" " * (n - len(raw)) + data[8 + n:]


def save_canonical(state: dict, path: Path, metadata: dict[str, str]) -> None:
    """``safetensors.torch.save_file`` with byte-identical output for identical inputs (:func:`canonical_safetensors`)."""
    from safetensors.torch import save

    Path(path).write_bytes(canonical_safetensors(save(state, metadata=metadata)))


# ---- the stage -----------------------------------------------------------------------------------------------
def finetune_image_encoder(settings: "Settings", items: pd.DataFrame, progress: Progress = None) -> dict:
    """Entity-prediction fine-tune of ``settings.encoders.image_weights_path`` (``None`` = ImageNet
    EfficientNet-Lite0) on ``items`` (``item_id``, ``image_uri``, ``categories``).

    Budget: ``settings.finetune.image`` (epochs, batch_size, lr, backbone_lr, weight_decay, train_from_block,
    test_frac, valid_frac, max_items); torch threads ``settings.finetune.threads``; seeded by ``settings.seed``.

    Returns:
        JSON-able dict: ``probe`` and ``finetuned`` test metrics (micro/macro F1, mAP), ``split`` sizes,
        ``categories``, ``cache_seconds``, ``train_seconds``, ``curve`` (train loss, valid mAP per epoch),
        ``best_epoch``, ``trained`` (what was trained), ``path``, ``version``, ``onnx``.

        With too little data (< 10 items with an image and a category, or < 2 categories) nothing is trained:
        ``{"skipped": reason, "split": ...}``, and an earlier fine-tuned model in the folder is removed.

    Raises:
        ValueError: ONNX parity failure.
        ppm_platform.data.item_content.ImageLoadError: an image cannot be read.
    """
    from ppm_platform.runtime import torch_threads

    with torch_threads(settings.finetune.threads):
        return _finetune_image(settings, items, progress)


def _finetune_image(settings: "Settings", items: pd.DataFrame, progress: Progress) -> dict:
    import torch

    from ppm_platform.encoders.finetune.common import replace_dir, skipped
    from ppm_platform.reporting.plots import curve_png
    from ppm_platform.encoders.image import ImageEncoder, image_encoder_version

    ft, enc = settings.finetune.image, settings.encoders
    say = progress or log.info
    t_all, cpu_all = time.perf_counter(), time.process_time()
    torch.manual_seed(settings.seed)
    df = items[["item_id", "image_uri", "categories"]].copy()
    has = df["image_uri"].notna() & (df["image_uri"].astype(str) != "")
    has_cat = df["categories"].map(lambda c: c is not None and len(c) > 0)
    df = df[has & has_cat].sort_values("item_id").reset_index(drop=True)
    vocab = sorted({str(c) for cats in df["categories"] for c in cats})
    if ft.max_items is not None and len(df) > ft.max_items:
        df = df.iloc[np.sort(np.random.default_rng(settings.seed).permutation(len(df))[:ft.max_items])]
        df = df.reset_index(drop=True)
    out = catalog.path(settings, "image_encoder")
    if len(df) < 10 or len(vocab) < 2:
        return skipped(out, f"{len(df)} items with an image and a category, {len(vocab)} categories "
                            "(need >= 10 and >= 2)", {"items_with_image": int(has.sum()), "used": len(df)})
    tr_ids, va_ids, te_ids = split_items(df["item_id"].to_numpy(), ft.test_frac, ft.valid_frac, settings.seed)
    split = {"items_with_image": int(has.sum()), "used": len(df), "train": len(tr_ids), "valid": len(va_ids),
             "test": len(te_ids), "categories": len(vocab)}
    y = multi_hot(df["categories"], vocab)
    pos = {int(i): n for n, i in enumerate(df["item_id"])}
    tr, va, te = ([pos[int(i)] for i in ids] for ids in (tr_ids, va_ids, te_ids))

    base = ImageEncoder(enc.image_weights_path, image_size=enc.image_size)
    net = base.model.to(memory_format=torch.contiguous_format)
    trunk, tail = build_parts(net, ft.train_from_block, len(vocab))
    t0 = time.perf_counter()
    acts = cache_trunk(trunk, df["image_uri"].astype(str).tolist(), enc.image_size, enc.image_batch_size,
                       progress=say, root=settings.data_dir)
    cache_seconds = time.perf_counter() - t0

    # baseline: linear probe on the frozen pre-trained pooled features (the pre-trained tail, untouched)
    feats0, _ = _tail_outputs(tail, acts)
    probe_prob, probe_info = linear_probe(feats0[tr], y[tr], feats0[va], y[va], feats0[te], settings.seed)
    probe = multilabel_metrics(y[te], probe_prob)
    say(f"image_encoder: linear probe (frozen) test mAP={probe['map']:.4f} micro-F1={probe['micro_f1']:.4f} "
        f"macro-F1={probe['macro_f1']:.4f}")

    torch.manual_seed(settings.seed)
    torch.nn.init.normal_(tail.fc.weight, std=0.01)
    torch.nn.init.zeros_(tail.fc.bias)
    # the head starts from the class prior so the first epochs do not destroy the backbone tail
    prior = np.clip(y[tr].mean(0), 1e-3, 1 - 1e-3)
    with torch.no_grad():
        tail.fc.bias.copy_(torch.from_numpy(np.log(prior / (1 - prior))).float())
    backbone = [p for n, p in tail.named_parameters() if not n.startswith("fc.")]
    opt = torch.optim.AdamW([{"params": backbone, "lr": ft.backbone_lr}, {"params": tail.fc.parameters(), "lr": ft.lr}],
                            weight_decay=ft.weight_decay)
    lossf = torch.nn.BCEWithLogitsLoss()
    rng = np.random.default_rng(settings.seed)
    a_tr, y_tr = torch.from_numpy(acts[tr]), torch.from_numpy(y[tr])
    curve = {"train_loss": [], "valid_map": []}
    best = (-1.0, 0, copy.deepcopy(tail.state_dict()))
    t0 = time.perf_counter()
    for epoch in range(ft.epochs):
        _train_mode(tail)
        perm = rng.permutation(len(tr))
        losses = []
        for s in range(0, len(perm), ft.batch_size):
            idx = torch.from_numpy(perm[s:s + ft.batch_size])
            _, logits = tail(a_tr[idx])
            loss = lossf(logits, y_tr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        vmap = multilabel_metrics(y[va], _tail_outputs(tail, acts[va])[1])["map"] if va else float("nan")
        curve["train_loss"].append(float(np.mean(losses)))
        curve["valid_map"].append(vmap)
        if not va or vmap > best[0]:
            best = (vmap, epoch + 1, copy.deepcopy(tail.state_dict()))
        say(f"image_encoder: epoch {epoch + 1}/{ft.epochs} train BCE={curve['train_loss'][-1]:.4f} "
            f"valid mAP={vmap:.4f} ({time.perf_counter() - t0:.1f} s)")
    train_seconds = time.perf_counter() - t0
    tail.load_state_dict(best[2])
    finetuned = multilabel_metrics(y[te], _tail_outputs(tail, acts[te])[1])
    say(f"image_encoder: fine-tuned test mAP={finetuned['map']:.4f} micro-F1={finetuned['micro_f1']:.4f} "
        f"macro-F1={finetuned['macro_f1']:.4f} (best epoch {best[1]})")

    # the full state dict in EfficientNet's own key names: the tail modules are the net's own modules
    net._fc = tail.fc
    state = {k: v.detach().cpu().contiguous().clone() for k, v in net.state_dict().items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    trained_params = int(sum(p.numel() for p in tail.parameters()))
    try:
        save_canonical(state, tmp / IMAGE_WEIGHTS_FILE, {"format": "pt", "categories": ",".join(vocab)})
        onnx = None
        if settings.finetune.export_onnx:
            from ppm_platform.encoders.image import load_image
            from ppm_platform.encoders.onnx_export import export_image_onnx

            sample = np.stack([load_image(p, enc.image_size, root=settings.data_dir)
                               for p in df["image_uri"].astype(str).tolist()[:4]])
            onnx = export_image_onnx(tmp / IMAGE_WEIGHTS_FILE, sample, image_size=enc.image_size)
            onnx["path"] = str(out / Path(onnx["path"]).name)
        curve_png(curve["train_loss"], tmp / "training_curve.png", "entity prediction (BCE)", "epoch",
                   "train loss", extra={"valid mAP": curve["valid_map"]})
        result = {
            "task": "entity prediction (multi-label BCE over categories)",
            "trained": (f"_blocks[{ft.train_from_block}:16] + _conv_head + _bn1 (BN statistics frozen) + new "
                        f"_fc Linear(1280, {len(vocab)}); stem + _blocks[0:{ft.train_from_block}] frozen, "
                        "activations cached once"),
            "trained_params": trained_params, "categories": vocab, "split": split,
            "probe": probe, "probe_selection": probe_info, "finetuned": finetuned,
            "map_probe": probe["map"], "map_finetuned": finetuned["map"],
            "micro_f1_probe": probe["micro_f1"], "micro_f1_finetuned": finetuned["micro_f1"],
            "macro_f1_probe": probe["macro_f1"], "macro_f1_finetuned": finetuned["macro_f1"],
            "epochs": ft.epochs, "best_epoch": best[1], "curve": curve,
            "cache_seconds": round(cache_seconds, 2), "train_seconds": round(train_seconds, 2),
            "onnx": onnx, "seed": settings.seed,
        }
        from ppm_platform.io import write_json_atomic

        write_json_atomic(result, tmp / "metrics.json")
        replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["path"] = str(out / IMAGE_WEIGHTS_FILE)
    result["curve_png"] = str(out / "training_curve.png")
    result["version"] = image_encoder_version(out / IMAGE_WEIGHTS_FILE, enc.image_size)
    result["seconds"] = round(time.perf_counter() - t_all, 2)
    result["cpu_seconds"] = round(time.process_time() - cpu_all, 2)
    return result
