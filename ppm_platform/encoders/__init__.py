"""Item encoders (DESIGN.md §7): MiniLM text embeddings and EfficientNet-Lite0 image features.

Layout: :mod:`~ppm_platform.encoders.factory` (settings -> encoder objects, backend choice, version),
:mod:`~ppm_platform.encoders.text` / :mod:`~ppm_platform.encoders.image` (torch encoders),
:mod:`~ppm_platform.encoders.onnx_runtime` (onnxruntime encoders), :mod:`~ppm_platform.encoders.onnx_export`
(export with a parity check) and :mod:`~ppm_platform.encoders.finetune` (query-matching / entity-prediction
fine-tuning). This package exports the factory and the torch encoders' public names.

Importing this package is cheap: torch/transformers load only when an encoder is built.
"""

from __future__ import annotations

from ppm_platform.encoders.factory import (
    configure_worker_threads,
    encoder_settings,
    encoder_version,
    get_image_encoder,
    get_text_encoder,
)
from ppm_platform.encoders.image import ImageEncoder, default_image_weights_path, image_encoder_version, load_image
from ppm_platform.encoders.text import TextEncoder, default_text_model_path, text_encoder_version

__all__ = [
    "ImageEncoder", "TextEncoder", "configure_worker_threads", "default_image_weights_path", "default_text_model_path",
    "encoder_settings", "encoder_version", "get_image_encoder", "get_text_encoder", "image_encoder_version",
    "load_image", "text_encoder_version",
]
