"""ONNX export of the item encoders, each checked for parity against torch before it is kept.

Graphs (legacy TorchScript exporter, opset 17, dynamic batch/sequence axes; torch.onnx docs):

* text: ``input_ids int64 [B, T]``, ``attention_mask int64 [B, T]`` -> ``embedding float32 [B, H]``
  (mean pooling + L2 norm in-graph, exactly :func:`~ppm_platform.encoders.text.mean_pool`);
* image: ``image float32 [B, 3, S, S]`` (ImageNet-normalised) -> ``features float32 [B, 1280]``
  (``extract_features`` + global average pool, exactly :meth:`~ppm_platform.encoders.image.ImageEncoder.encode_arrays`).

Parity: :func:`export_text_onnx` / :func:`export_image_onnx` compare onnxruntime with torch on real inputs and
raise ``ValueError`` when ``max |torch - onnxruntime| > tol`` (default 1e-4); the ONNX file is written
atomically (temp file + rename) only after it passes, where :mod:`ppm_platform.encoders.onnx_runtime` looks
for it.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import numpy as np

from ppm_platform.encoders.image import ImageEncoder
from ppm_platform.encoders.onnx_runtime import ONNX_FILE
from ppm_platform.onnx_common import cpu_session, quiet_onnx_export

OPSET = 17


def _atomic_export(module, args: tuple, out: Path, input_names: list[str], output_names: list[str],
                   dynamic_axes: dict) -> Path:
    import torch

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.{uuid.uuid4().hex[:8]}.tmp"
    with quiet_onnx_export(), torch.no_grad():
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
        got = cpu_session(tmp, 0).run(None, {"input_ids": enc["input_ids"].numpy().astype(np.int64),
                                          "attention_mask": enc["attention_mask"].numpy().astype(np.int64)})[0]
        diff = float(np.max(np.abs(ref - got))) if len(ref) else 0.0
        if not diff <= tol:
            raise ValueError(f"text ONNX parity failed for {model_path}: max |torch - onnxruntime| = {diff:.3g} > {tol}")
        os.replace(tmp, model_path / ONNX_FILE)
    finally:
        tmp.unlink(missing_ok=True)
    return {"path": str(model_path / ONNX_FILE), "max_abs_diff": diff, "parity_texts": len(texts),
            "seconds": round(time.perf_counter() - t0, 2)}


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
    ``images`` (float32 ``[B, 3, S, S]``, preprocessed by :func:`~ppm_platform.encoders.image.load_image`).

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
        got = cpu_session(tmp, 0).run(None, {"image": np.ascontiguousarray(images, dtype=np.float32)})[0]
        diff = float(np.max(np.abs(ref - got))) if len(ref) else 0.0
        if not diff <= tol:
            raise ValueError(f"image ONNX parity failed for {weights_path}: max |torch - onnxruntime| = {diff:.3g} > {tol}")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return {"path": str(out), "max_abs_diff": diff, "parity_images": int(len(images)),
            "seconds": round(time.perf_counter() - t0, 2)}
