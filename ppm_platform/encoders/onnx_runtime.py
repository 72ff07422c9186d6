"""onnxruntime item encoders for batch inference, and where their graphs live.

Files: a text model folder gets ``<folder>/model.onnx``; image weights ``<dir>/model.safetensors`` get
``<dir>/model.onnx`` (same stem, suffix ``.onnx``), written by :mod:`ppm_platform.encoders.onnx_export`. The
ONNX file is derived from the weights, so the encoder's version stays the weights' content hash
(:func:`~ppm_platform.encoders.text.text_encoder_version`, :func:`~ppm_platform.encoders.image.image_encoder_version`);
a stale ONNX (older than its weights) is never used (:func:`text_onnx_path`, :func:`image_onnx_path`).

:class:`OnnxTextEncoder` / :class:`OnnxImageEncoder` have the same ``encode`` / ``encode_arrays`` /
``encode_paths``, ``dim`` and ``version`` as the torch encoders; :mod:`ppm_platform.encoders.factory` picks one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ppm_platform.encoders.image import FEATURE_DIM, ImageEncoder, image_encoder_version
from ppm_platform.encoders.text import WEIGHT_FILES, check_texts, text_encoder_version
from ppm_platform.onnx_common import cpu_session

ONNX_FILE = "model.onnx"


def text_onnx_path(model_path: Path | None) -> Path | None:
    """``<model_path>/model.onnx`` if it exists and is not older than the weights, else ``None``
    (``None`` model_path = the package weights, which ship no ONNX)."""
    if model_path is None:
        return None
    folder = Path(model_path)
    onnx = folder / ONNX_FILE
    weights = [folder / w for w in WEIGHT_FILES if (folder / w).is_file()]
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


class OnnxTextEncoder:
    """Text embeddings with onnxruntime: same tokenizer, pooling and output as
    :class:`~ppm_platform.encoders.text.TextEncoder` (float32 ``[N, dim]``, unit L2 norm), same ``version``.

    Args:
        model_path: the model folder (tokenizer files + weights, for the version).
        onnx_path: the exported graph (see :func:`~ppm_platform.encoders.onnx_export.export_text_onnx`).
        max_tokens: truncation length.
        threads: onnxruntime intra-op threads (0 = onnxruntime's default, all cores).
    """

    def __init__(self, model_path: Path, onnx_path: Path, max_tokens: int = 64, threads: int = 1):
        from transformers import AutoTokenizer

        self.model_path = Path(model_path).resolve()
        self.max_tokens = int(max_tokens)
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.model_path), local_files_only=True)
        self.session = cpu_session(Path(onnx_path), threads)
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


class OnnxImageEncoder:
    """Pooled EfficientNet-Lite0 features with onnxruntime: same preprocessing, output (float32 ``[N, 1280]``)
    and ``version`` as :class:`~ppm_platform.encoders.image.ImageEncoder`.

    Args:
        weights_path: the weights the graph was exported from (for the version).
        onnx_path: the exported graph (see :func:`~ppm_platform.encoders.onnx_export.export_image_onnx`).
        image_size: input resolution.
        threads: onnxruntime intra-op threads (0 = all cores).
    """

    def __init__(self, weights_path: Path, onnx_path: Path, image_size: int = 224, threads: int = 1):
        self.weights_path = Path(weights_path).resolve()
        self.image_size = int(image_size)
        self.session = cpu_session(Path(onnx_path), threads)
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

    #: same loop as the torch encoder: ``(features [N, 1280], has_image int64 [N])``; raises ``data.item_content.ImageLoadError``
    encode_paths = ImageEncoder.encode_paths
