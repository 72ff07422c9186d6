"""ONNX export of the item encoders (with a parity check) and onnxruntime encoders for batch inference.

Files: a text model folder gets ``<folder>/model.onnx``; image weights ``<dir>/model.safetensors`` get
``<dir>/model.onnx`` (same stem, suffix ``.onnx``). The ONNX file is derived from the weights, so the
encoder's version stays the weights' content hash (:func:`~ppm_platform.encoders.text_encoder_version`,
:func:`~ppm_platform.encoders.image_encoder_version`); a stale ONNX (older than its weights) is never used.

Graphs (legacy TorchScript exporter, opset 17, dynamic batch/sequence axes; torch.onnx docs):

* text: ``input_ids int64 [B, T]``, ``attention_mask int64 [B, T]`` -> ``embedding float32 [B, H]``
  (mean pooling + L2 norm in-graph, exactly :func:`~ppm_platform.encoders.text.mean_pool`);
* image: ``image float32 [B, 3, S, S]`` (ImageNet-normalised) -> ``features float32 [B, 1280]``
  (``extract_features`` + global average pool, exactly :meth:`ImageEncoder.encode_arrays`).

Parity: :func:`export_text_onnx` / :func:`export_image_onnx` compare onnxruntime with torch on real inputs and
raise ``ValueError`` when ``max |torch - onnxruntime| > tol`` (default 1e-4); the ONNX file is written
atomically (temp file + rename) only after it passes.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from pathlib import Path

import numpy as np

from ppm_platform.onnx_common import cpu_session, quiet_onnx_export
from ppm_platform.encoders.image import FEATURE_DIM, ImageEncoder, image_encoder_version
from ppm_platform.encoders.text import check_texts, text_encoder_version

log = logging.getLogger("ppm_platform.encoders")
ONNX_FILE = "model.onnx"
OPSET = 17


def text_onnx_path(model_path: Path | None) -> Path | None:
    """``<model_path>/model.onnx`` if it exists and is not older than the weights, else ``None``
    (``None`` model_path = the package weights, which ship no ONNX)."""
    if model_path is None:
        return None
    folder = Path(model_path)
    onnx = folder / ONNX_FILE
    weights = [folder / w for w in ("model.safetensors", "pytorch_model.bin") if (folder / w).is_file()]
    if not onnx.is_file() or not weights or onnx.stat().st_mtime_ns < weights[0].stat().st_mtime_ns:
        return None
    return onnx


def image_onnx_path(weights_path: Path | None) -> Path | None:
    """``<weights stem>.onnx`` next to the weights if it exists and is not older than them, else ``None``."""
    if weights_path is None:
        return None
    w = Path(weights_path)
    onnx = w.with_suffix(".onnx")
    if not onnx.is_file() or not w.is_file() or onnx.stat().st_mtime_ns < w.stat().st_mtime_ns:
        return None
    return onnx


def _session(path: Path, threads: int):
    return cpu_session(path, threads)


_quiet = quiet_onnx_export


def _atomic_export(module, args: tuple, out: Path, input_names: list[str], output_names: list[str],
                   dynamic_axes: dict) -> Path:
    import torch

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.{uuid.uuid4().hex[:8]}.tmp"
    with _quiet(), torch.no_grad():
        torch.onnx.export(module, args, str(tmp), input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic_axes, opset_version=OPSET, dynamo=False)
    return tmp


# ---- text --------------------------------------------------------------------------------------------------------
class _TextGraph:
    """Built lazily (needs torch): wraps a transformers encoder as ``(input_ids, attention_mask) -> embedding``."""

    @staticmethod
    def build(model):
        import torch

        from ppm_platform.encoders.text import mean_pool

        class TextEmbedding(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, input_ids, attention_mask):
                hidden = self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
                return mean_pool(hidden, attention_mask)

        return TextEmbedding(model).eval()


def export_text_onnx(model_path: Path, texts: list[str], max_tokens: int = 64, tol: float = 1e-4) -> dict:
    """Export the text model in ``model_path`` to ``model_path/model.onnx`` and check parity on ``texts``.

    Returns:
        ``{"path", "max_abs_diff", "parity_texts", "seconds"}``.

    Raises:
        ValueError: ``max |torch - onnxruntime| > tol`` on the parity texts (no ONNX file is left behind).
    """
    from transformers import AutoModel, AutoTokenizer

    t0 = time.perf_counter()
    model_path = Path(model_path)
    tok = AutoTokenizer.from_pretrained(str(model_path), local_files_only=True)
    model = AutoModel.from_pretrained(str(model_path), local_files_only=True, attn_implementation="eager").eval()
    graph = _TextGraph.build(model)
    sample = tok(list(texts[:2]) or ["x"], padding=True, truncation=True, max_length=max_tokens, return_tensors="pt")
    tmp = _atomic_export(graph, (sample["input_ids"], sample["attention_mask"]), model_path / ONNX_FILE,
                         ["input_ids", "attention_mask"], ["embedding"],
                         {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                          "embedding": {0: "batch"}})
    try:
        import torch

        enc = tok(list(texts), padding=True, truncation=True, max_length=max_tokens, return_tensors="pt")
        with torch.inference_mode():
            ref = graph(enc["input_ids"], enc["attention_mask"]).numpy()
        got = _session(tmp, 0).run(None, {"input_ids": enc["input_ids"].numpy().astype(np.int64),
                                          "attention_mask": enc["attention_mask"].numpy().astype(np.int64)})[0]
        diff = float(np.max(np.abs(ref - got))) if len(ref) else 0.0
        if not diff <= tol:
            raise ValueError(f"text ONNX parity failed for {model_path}: max |torch - onnxruntime| = {diff:.3g} > {tol}")
        os.replace(tmp, model_path / ONNX_FILE)
    finally:
        tmp.unlink(missing_ok=True)
    return {"path": str(model_path / ONNX_FILE), "max_abs_diff": diff, "parity_texts": len(texts),
            "seconds": round(time.perf_counter() - t0, 2)}


class OnnxTextEncoder:
    """Text embeddings with onnxruntime: same tokenizer, pooling and output as
    :class:`~ppm_platform.encoders.TextEncoder` (float32 ``[N, dim]``, unit L2 norm), same ``version``.

    Args:
        model_path: the model folder (tokenizer files + weights, for the version).
        onnx_path: the exported graph (see :func:`export_text_onnx`).
        max_tokens: truncation length.
        threads: onnxruntime intra-op threads (0 = onnxruntime's default, all cores).
    """

    def __init__(self, model_path: Path, onnx_path: Path, max_tokens: int = 64, threads: int = 1):
        from transformers import AutoTokenizer

        self.model_path = Path(model_path).resolve()
        self.max_tokens = int(max_tokens)
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.model_path), local_files_only=True)
        self.session = _session(Path(onnx_path), threads)
        self._dim = int(self.session.get_outputs()[0].shape[-1])
        self._version = text_encoder_version(self.model_path)

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def version(self) -> str:
        return self._version

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Embed ``texts`` -> float32 ``[N, dim]`` (unit norm rows; ``[0, dim]`` for none).

        Raises:
            TypeError: an element of ``texts`` is not a string.
        """
        texts = check_texts(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            batch = texts[start:start + batch_size]
            enc = self.tokenizer(batch, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="np")
            out[start:start + len(batch)] = self.session.run(None, {
                "input_ids": enc["input_ids"].astype(np.int64),
                "attention_mask": enc["attention_mask"].astype(np.int64)})[0]
        return out


# ---- image -------------------------------------------------------------------------------------------------------
def _image_graph(net):
    import torch

    class ImageFeatures(torch.nn.Module):
        def __init__(self, n):
            super().__init__()
            self.n = n

        def forward(self, image):
            return self.n.extract_features(image).mean(dim=(2, 3))

    return ImageFeatures(net).eval()


def export_image_onnx(weights_path: Path, images: np.ndarray, image_size: int = 224, tol: float = 1e-4) -> dict:
    """Export the EfficientNet-Lite0 backbone in ``weights_path`` to ``<weights>.onnx`` and check parity on
    ``images`` (float32 ``[B, 3, S, S]``, preprocessed by :func:`~ppm_platform.encoders.load_image`).

    Returns:
        ``{"path", "max_abs_diff", "parity_images", "seconds"}``.

    Raises:
        ValueError: ``max |torch - onnxruntime| > tol`` (no ONNX file is left behind).
    """
    import torch

    t0 = time.perf_counter()
    weights_path = Path(weights_path)
    enc = ImageEncoder(weights_path, image_size=image_size)
    graph = _image_graph(enc.model.to(memory_format=torch.contiguous_format))
    x = torch.from_numpy(np.ascontiguousarray(images[:2], dtype=np.float32))
    out = weights_path.with_suffix(".onnx")
    tmp = _atomic_export(graph, (x,), out, ["image"], ["features"], {"image": {0: "batch"}, "features": {0: "batch"}})
    try:
        enc.model.to(memory_format=torch.channels_last)
        ref = enc.encode_arrays(images)
        got = _session(tmp, 0).run(None, {"image": np.ascontiguousarray(images, dtype=np.float32)})[0]
        diff = float(np.max(np.abs(ref - got))) if len(ref) else 0.0
        if not diff <= tol:
            raise ValueError(f"image ONNX parity failed for {weights_path}: max |torch - onnxruntime| = {diff:.3g} > {tol}")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return {"path": str(out), "max_abs_diff": diff, "parity_images": int(len(images)),
            "seconds": round(time.perf_counter() - t0, 2)}


class OnnxImageEncoder:
    """Pooled EfficientNet-Lite0 features with onnxruntime: same preprocessing, output (float32 ``[N, 1280]``)
    and ``version`` as :class:`~ppm_platform.encoders.ImageEncoder`.

    Args:
        weights_path: the weights the graph was exported from (for the version).
        onnx_path: the exported graph (see :func:`export_image_onnx`).
        image_size: input resolution.
        threads: onnxruntime intra-op threads (0 = all cores).
    """

    def __init__(self, weights_path: Path, onnx_path: Path, image_size: int = 224, threads: int = 1):
        self.weights_path = Path(weights_path).resolve()
        self.image_size = int(image_size)
        self.session = _session(Path(onnx_path), threads)
        self._version = image_encoder_version(self.weights_path, self.image_size)

    @property
    def dim(self) -> int:
        return FEATURE_DIM

    @property
    def version(self) -> str:
        return self._version

    def encode_arrays(self, batch: np.ndarray) -> np.ndarray:
        """Features of preprocessed images ``[B, 3, S, S]`` -> float32 ``[B, 1280]``."""
        return self.session.run(None, {"image": np.ascontiguousarray(batch, dtype=np.float32)})[0]

    #: same loop as the torch encoder: ``(features [N, 1280], has_image int64 [N])``; raises ImageLoadError
    encode_paths = ImageEncoder.encode_paths
