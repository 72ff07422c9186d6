"""Encoder settings -> encoder objects: which weights (pre-trained or fine-tuned), which runtime (torch or
onnxruntime), one loaded encoder per process, and the encoders' version.

Every stage that encodes items (the ``item_multimodal`` Spark job, the new-item path, the benchmarks) gets its
encoders here, so they all see the same weights and the same backend choice:

* :func:`encoder_settings`: the settings with the fine-tuned encoders' paths when they exist;
* :func:`get_text_encoder` / :func:`get_image_encoder`: the process-wide encoder of those settings, torch
  (:mod:`~ppm_platform.encoders.text`, :mod:`~ppm_platform.encoders.image`) or onnxruntime
  (:mod:`~ppm_platform.encoders.onnx_runtime`) per ``encoders.text_backend`` / ``image_backend``;
* :func:`encoder_version`: the pair's identity, without loading a model.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from ppm_platform.config import Settings
from ppm_platform.data import catalog
from ppm_platform.encoders.image import ImageEncoder, image_encoder_version
from ppm_platform.encoders.text import TextEncoder, text_encoder_version

_ENCODERS: dict[tuple, object] = {}
_LOCK = threading.Lock()


def _process_wide(key: tuple, build: Callable[[], object]):
    """The encoder cached under ``key`` in this process, built by ``build()`` on the first call (under a lock, so
    threads of one Spark worker share one load)."""
    with _LOCK:
        if key not in _ENCODERS:
            _ENCODERS[key] = build()
        return _ENCODERS[key]


def encoder_settings(settings: Settings) -> Settings:
    """A copy of ``settings`` whose ``encoders.text_model_path`` / ``image_weights_path`` point at the
    fine-tuned encoders (``models_dir/text_encoder``, ``models_dir/image_encoder/model.safetensors``) when
    they exist and ``finetune.use_finetuned`` is on; otherwise ``settings`` unchanged (never mutated)."""
    from ppm_platform.encoders.finetune.image import IMAGE_WEIGHTS_FILE

    if not settings.finetune.use_finetuned:
        return settings
    s = settings.model_copy(deep=True)
    text_dir, image_w = catalog.path(s, "text_encoder"), catalog.path(s, "image_encoder") / IMAGE_WEIGHTS_FILE
    if (text_dir / "config.json").is_file():
        s.encoders.text_model_path = text_dir
    if image_w.is_file():
        s.encoders.image_weights_path = image_w
    return s


def get_text_encoder(settings: Settings):
    """The process-wide text encoder for ``settings.encoders`` (loaded once per process, so a Spark Python
    worker that is reused across batches and jobs loads the model once).

    Backend (``settings.encoders.text_backend``): ``onnx`` returns an
    :class:`~ppm_platform.encoders.onnx_runtime.OnnxTextEncoder` when the model folder holds a ``model.onnx``
    (written, parity-checked, by the fine-tuning stage), else a torch :class:`TextEncoder`. Both have the
    same ``encode``/``dim``/``version``. The cache key includes the weights' version, so a model re-trained
    into the same folder is reloaded.
    """
    enc = settings.encoders
    version = text_encoder_version(enc.text_model_path)
    onnx = None
    if enc.text_backend == "onnx":
        from ppm_platform.encoders.onnx_runtime import text_onnx_path

        onnx = text_onnx_path(enc.text_model_path)

    def build():
        if onnx is None:
            return TextEncoder(enc.text_model_path, max_tokens=enc.max_text_tokens)
        from ppm_platform.encoders.onnx_runtime import OnnxTextEncoder

        return OnnxTextEncoder(enc.text_model_path, onnx, max_tokens=enc.max_text_tokens,
                               threads=enc.torch_threads_per_worker)

    return _process_wide(("text", str(enc.text_model_path) if enc.text_model_path else None, enc.max_text_tokens,
                          version, str(onnx)), build)


def get_image_encoder(settings: Settings):
    """The process-wide image encoder for ``settings.encoders`` (loaded once per process).

    Backend (``settings.encoders.image_backend``): ``onnx`` returns an
    :class:`~ppm_platform.encoders.onnx_runtime.OnnxImageEncoder` when ``<weights>.onnx`` exists next to the
    weights file (written, parity-checked, by the fine-tuning stage), else a torch :class:`ImageEncoder`.
    Both have the same ``encode_paths``/``encode_arrays``/``dim``/``version``. The cache key includes the
    weights' version, so weights re-trained into the same path are reloaded.
    """
    enc = settings.encoders
    version = image_encoder_version(enc.image_weights_path, enc.image_size)
    onnx = None
    if enc.image_backend == "onnx":
        from ppm_platform.encoders.onnx_runtime import image_onnx_path

        onnx = image_onnx_path(enc.image_weights_path)

    def build():
        if onnx is None:
            return ImageEncoder(enc.image_weights_path, image_size=enc.image_size)
        from ppm_platform.encoders.onnx_runtime import OnnxImageEncoder

        return OnnxImageEncoder(enc.image_weights_path, onnx, image_size=enc.image_size,
                                threads=enc.torch_threads_per_worker)

    return _process_wide(("image", str(enc.image_weights_path) if enc.image_weights_path else None, enc.image_size,
                          version, str(onnx)), build)


def configure_worker_threads(settings: Settings) -> None:
    """Set torch's intra-op threads to ``settings.encoders.torch_threads_per_worker``. Call it inside Spark
    Python workers (several workers share the cores; oversubscription makes each slower), not on the driver."""
    import torch

    n = int(settings.encoders.torch_threads_per_worker)
    if n > 0 and torch.get_num_threads() != n:
        torch.set_num_threads(n)


def encoder_version(settings: Settings) -> str:
    """``text.version + "|" + image.version`` for ``settings.encoders``, computed without loading the models."""
    enc = settings.encoders
    return f"{text_encoder_version(enc.text_model_path)}|{image_encoder_version(enc.image_weights_path, enc.image_size)}"
