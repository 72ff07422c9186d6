"""Frozen item encoders (DESIGN.md §7): MiniLM text embeddings and EfficientNet-Lite0 image features.

Importing this package is cheap: torch/transformers load only when an encoder is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ppm_platform.encoders.image import (
    ImageEncoder,
    default_image_weights_path,
    get_image_encoder,
    image_encoder_version,
    load_image,
)
from ppm_platform.encoders.text import (
    TextEncoder,
    default_text_model_path,
    get_text_encoder,
    text_encoder_version,
)

if TYPE_CHECKING:  # pragma: no cover
    from ppm_platform.config import Settings


def configure_worker_threads(settings: "Settings") -> None:
    """Set torch's intra-op threads to ``settings.encoders.torch_threads_per_worker``. Call it inside Spark
    Python workers (several workers share the cores; oversubscription makes each slower), not on the driver."""
    import torch

    n = int(settings.encoders.torch_threads_per_worker)
    if n > 0 and torch.get_num_threads() != n:
        torch.set_num_threads(n)


def encoder_version(settings: "Settings") -> str:
    """``text.version + "|" + image.version`` for ``settings.encoders``, computed without loading the models."""
    enc = settings.encoders
    return f"{text_encoder_version(enc.text_model_path)}|{image_encoder_version(enc.image_weights_path, enc.image_size)}"


__all__ = [
    "ImageEncoder", "TextEncoder", "configure_worker_threads", "default_image_weights_path",
    "default_text_model_path", "encoder_version", "get_image_encoder", "get_text_encoder", "image_encoder_version",
    "load_image", "text_encoder_version",
]
