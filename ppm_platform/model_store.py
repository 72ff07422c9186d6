"""The model store: save and load the PPM / URM artifacts (``weights.safetensors`` + ``model.json`` with kind,
config and metadata, in one version folder), publish them atomically, and resolve the published version.

Loading is safe by construction: weights come only from safetensors (no pickle, no ``torch.load``) and the
model is rebuilt from its typed config (``PPMConfig`` / ``URMConfig``), so a model folder can never execute
code.

Publication: every save writes a new immutable version folder
``<name>.versions/<id>/`` next to ``<name>`` (``<id>`` = UTC time + weights hash, so names sort by age), staged
under a hidden name and renamed into ``<name>.versions/`` only once complete (weights, ``model.json`` and
whatever the ``finish`` hook writes, e.g. the ONNX graphs). ``<name>`` itself is a relative symlink to the
current version, replaced with one ``os.replace`` (rename(2) replaces a symlink atomically), so a reader of
``<name>/...`` sees the old complete model or the new complete one, never a gap or a mix. A pointer symlink
rather than a ``CURRENT`` file: every existing reader of ``models/<name>/model.json`` keeps working
unchanged. A reader that opens several files resolves the link once (:func:`resolve_model_dir`) and reads
them all from that folder, because the link may move between two opens. The newest
:data:`KEEP_VERSIONS` versions (and the current one) are kept, older ones removed; a plain folder found at
``<name>`` (saved before versioning, or copied without its links) is moved in as a version on first publish.

``model_version(model)`` is the first 12 hex chars of the SHA-256 of the model's safetensors serialisation
(== the SHA-256 of ``weights.safetensors``). For a PPM it is the ``ppm_version`` carried by every cache row
(DESIGN.md §4, version rule); ``model.json`` records it as ``version`` and loading verifies it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
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
#: suffix of the folder holding a model's versions: ``models/urm`` -> ``models/urm.versions/<id>/``
VERSIONS_SUFFIX = ".versions"
#: versions kept per model (plus the current one): a Ranker still loading the previous one finds it
KEEP_VERSIONS = 3
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


def versions_dir(model_dir: Path) -> Path:
    """The folder holding the versions of the model published at ``model_dir``: ``<model_dir>.versions``."""
    model_dir = Path(model_dir)
    return model_dir.parent / f"{model_dir.name}{VERSIONS_SUFFIX}"


def resolve_model_dir(model_dir: Path) -> Path:
    """The folder of the model currently published at ``model_dir``, resolved once (absolute, no symlink).

    Read every file of one model from the returned folder: ``model_dir`` is a symlink that a publication
    may move between two opens. A plain folder (saved before versioning, or written by hand) is returned
    as it is.

    Raises:
        FileNotFoundError: nothing is published at ``model_dir`` (names ``model_dir/model.json``).
    """
    model_dir = Path(model_dir)
    # a plain folder published for the first time is renamed into its versions folder just before the link
    # takes its place (rename(2) cannot swap a folder for a link): a reader in that instant retries briefly
    for _ in range(20):
        try:
            return model_dir.resolve(strict=True)
        except FileNotFoundError:
            if not versions_dir(model_dir).is_dir():
                break
            time.sleep(0.01)
    raise FileNotFoundError(f"{model_dir / CONFIG_FILE} not found: no model published at {model_dir}")


def _version_id(weights_sha: str) -> str:
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S%fZ}-{weights_sha}"


def _publish(out_dir: Path, version: Path) -> None:
    """Point ``out_dir`` at ``version`` (a folder inside :func:`versions_dir`) with one atomic rename."""
    link = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    os.symlink(os.path.relpath(version, out_dir.parent), link, target_is_directory=True)
    try:
        if out_dir.is_dir() and not out_dir.is_symlink():  # a plain model folder: kept as the oldest version
            mtime = datetime.fromtimestamp(out_dir.stat().st_mtime, timezone.utc)
            v = (json.loads((out_dir / CONFIG_FILE).read_text()).get("version") if (out_dir / CONFIG_FILE).is_file()
                 else None) or "legacy"
            os.replace(out_dir, version.parent / f"{mtime:%Y%m%dT%H%M%S%fZ}-{v}-plain")
        os.replace(link, out_dir)
    finally:
        if os.path.lexists(link):
            os.unlink(link)


def _prune(vdir: Path, keep: int, current: Path) -> None:
    versions = sorted(p for p in vdir.iterdir() if not p.name.startswith(".") and p.is_dir())
    for p in versions[:-keep] if keep > 0 else versions:
        if p != current:
            shutil.rmtree(p, ignore_errors=True)


def save_model(model: nn.Module, config: Any, out_dir: Path, kind: str, metadata: dict[str, Any],
               finish: Callable[[Path], Any] | None = None, keep: int = KEEP_VERSIONS) -> Path:
    """Publish ``model`` at ``out_dir`` atomically: a new version folder with ``weights.safetensors``,
    ``model.json`` and what ``finish`` writes, then ``out_dir`` pointed at it (see the module docstring).

    Args:
        model: a :class:`PPM` or :class:`URM` (others save, but only these two load).
        config: the typed config the model was built from (``PPMConfig`` / ``URMConfig``: its ``to_dict()``
            is recorded, ``from_dict`` rebuilds it).
        out_dir: where the model is published (a symlink; its parent is created).
        kind: free label, e.g. ``"ppm"``, ``"urm"``, ``"base"``.
        metadata: JSON-serialisable facts (metrics, ``ppm_version`` consumed, data window, ...); values JSON
            cannot encode (paths, timestamps) are written with ``str``.
        finish: called with the staged version folder (weights and ``model.json`` already in it) before it
            is published, to add files that belong to the version (the ONNX graphs). If it raises, nothing is
            published: the stage is removed and the error propagates.
        keep: versions kept in ``<out_dir>.versions`` after publishing (the current one always is).

    Returns:
        ``out_dir``. ``model.json`` = ``{kind, model_class, version, config, metadata}``; the published
        folder is :func:`resolve_model_dir` ``(out_dir)``.
    """
    if isinstance(config, type) or not callable(getattr(config, "to_dict", None)):
        raise TypeError(f"config must be a model config instance (with to_dict), got {type(config).__name__}")
    out_dir = Path(out_dir)
    weights = _weights_bytes(model)
    doc = {
        "kind": kind,
        "model_class": type(model).__name__,
        "version": _short_sha(weights),
        "config": config.to_dict(),
        "metadata": metadata,
    }
    text = json.dumps(doc, indent=2, sort_keys=True, default=str)
    vdir = versions_dir(out_dir)
    vdir.mkdir(parents=True, exist_ok=True)
    stage = vdir / f".tmp-{uuid.uuid4().hex[:8]}"
    try:
        stage.mkdir()
        (stage / WEIGHTS_FILE).write_bytes(weights)
        (stage / CONFIG_FILE).write_text(text)
        if finish is not None:
            finish(stage)
        version = vdir / _version_id(doc["version"])
        os.rename(stage, version)  # the version appears complete, under its final name
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    _publish(out_dir, version)
    _prune(vdir, keep, version)
    return out_dir


def read_model_json(model_dir: Path) -> dict[str, Any]:
    """The parsed ``model.json`` of a saved model (kind, model_class, version, config, metadata)."""
    return json.loads((Path(model_dir) / CONFIG_FILE).read_text())


def _load(model_dir: Path, expect_class: str) -> tuple[nn.Module, dict[str, Any]]:
    model_dir = resolve_model_dir(model_dir)  # model.json and the weights from the same version
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
