"""Model persistence: ``weights.safetensors`` + ``model.json`` (kind, config, metadata) in one folder.

Loading is safe by construction: weights come only from safetensors (no pickle, no ``torch.load``) and the
model is rebuilt from its typed dataclass config, so a model folder can never execute code.

The folder is written atomically: everything goes to a temporary sibling folder that is then renamed into
place, so a reader sees either the old model or the new one, never a mix.

``model_version(model)`` is the first 12 hex chars of the SHA-256 of the model's safetensors serialisation
(== the SHA-256 of ``weights.safetensors``). For a PPM it is the ``ppm_version`` carried by every cache row
(DESIGN.md §4, version rule); ``model.json`` records it as ``version`` and loading verifies it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor, nn

from ppm_platform.models.ppm import PPM, PPMConfig
from ppm_platform.models.urm import URM, URMConfig

WEIGHTS_FILE = "weights.safetensors"
CONFIG_FILE = "model.json"
VERSION_CHARS = 12
#: model class name (recorded in model.json) -> (config class, model class)
_CLASSES: dict[str, tuple[Any, type[nn.Module]]] = {"PPM": (PPMConfig, PPM), "URM": (URMConfig, URM)}


def _tensors(model: nn.Module) -> dict[str, Tensor]:
    # contiguous CPU copies: safetensors needs contiguous, non-aliased storage
    return {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}


def _weights_bytes(model: nn.Module) -> bytes:
    return st_save(_tensors(model))


def _short_sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:VERSION_CHARS]


def model_version(model: nn.Module) -> str:
    """Short content hash of the model's weights (12 hex chars of SHA-256 of the safetensors bytes).

    Deterministic (safetensors orders tensors canonically); changes when any weight or buffer changes.
    """
    return _short_sha(_weights_bytes(model))


def save_model(model: nn.Module, config: Any, out_dir: Path, kind: str, metadata: dict[str, Any]) -> Path:
    """Write ``out_dir/weights.safetensors`` and ``out_dir/model.json`` atomically (replacing ``out_dir``).

    Args:
        model: a :class:`PPM` or :class:`URM` (others save, but only these two load).
        config: the dataclass config the model was built from.
        out_dir: target folder (its parent is created).
        kind: free label, e.g. ``"ppm"``, ``"urm"``, ``"base"``.
        metadata: JSON-serialisable facts (metrics, ``ppm_version`` consumed, data window, ...); values JSON
            cannot encode (paths, timestamps) are written with ``str``.

    Returns:
        ``out_dir``. ``model.json`` = ``{kind, model_class, version, config, metadata}``.
    """
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"config must be a dataclass instance, got {type(config).__name__}")
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    weights = _weights_bytes(model)
    doc = {
        "kind": kind,
        "model_class": type(model).__name__,
        "version": _short_sha(weights),
        "config": dataclasses.asdict(config),
        "metadata": metadata,
    }
    text = json.dumps(doc, indent=2, sort_keys=True, default=str)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        (tmp / WEIGHTS_FILE).write_bytes(weights)
        (tmp / CONFIG_FILE).write_text(text)
        # rename() cannot replace a non-empty folder: move the old one aside first, then drop it
        if out_dir.exists():
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return out_dir


def read_model_json(model_dir: Path) -> dict[str, Any]:
    """The parsed ``model.json`` of a saved model (kind, model_class, version, config, metadata)."""
    return json.loads((Path(model_dir) / CONFIG_FILE).read_text())


def _load(model_dir: Path, expect_class: str) -> tuple[nn.Module, dict[str, Any]]:
    model_dir = Path(model_dir)
    doc = read_model_json(model_dir)
    cls_name = doc.get("model_class")
    if cls_name != expect_class:
        raise ValueError(f"{model_dir}: holds a {cls_name!r} model (kind={doc.get('kind')!r}), expected {expect_class}")
    cfg_cls, model_cls = _CLASSES[cls_name]
    cfg = cfg_cls.from_dict(doc["config"])
    raw = (model_dir / WEIGHTS_FILE).read_bytes()
    if (v := _short_sha(raw)) != doc.get("version"):
        raise ValueError(f"{model_dir}: weights hash {v} does not match model.json version {doc.get('version')}")
    model = model_cls(cfg)
    model.load_state_dict(st_load(raw), strict=True)  # safetensors only: no pickle is ever read
    model.eval()
    return model, doc["metadata"]


def load_ppm(model_dir: Path) -> tuple[PPM, dict[str, Any]]:
    """Load a saved :class:`PPM` (eval mode) and its metadata.

    Raises:
        FileNotFoundError: a file is missing. ValueError: not a PPM folder, or weights do not match the
        recorded version (corrupt / partially copied).
    """
    model, meta = _load(model_dir, "PPM")
    assert isinstance(model, PPM)
    return model, meta


def load_urm(model_dir: Path) -> tuple[URM, dict[str, Any]]:
    """Load a saved :class:`URM` (URM or Base; eval mode) and its metadata. Raises as :func:`load_ppm`."""
    model, meta = _load(model_dir, "URM")
    assert isinstance(model, URM)
    return model, meta
