"""Per-epoch training checkpoints: everything a training loop needs to go on after epoch ``e`` as if it had
never stopped (weights, optimizer moments, the best epoch so far, every random stream), in safetensors and
JSON only (no pickle: a checkpoint folder can never execute code).

Layout of ``<artifacts>/checkpoints/<model>/``::

    epoch-0002/
        state.safetensors        model.*, best.* (the best epoch's weights), opt.* (AdamW moments), chief
        state.json               fingerprint, epoch, history, best AUC, numpy RNG, optimizer groups, chief
        rng-rank<r>.safetensors  each rank's torch RNG states (global + its dropout generators)
        COMPLETE                 written last, by the chief, once every rank has written its part
    progress-rank<r>.json        pid, epoch and step of each running rank (what a supervisor watches)

A checkpoint is used only when its ``fingerprint`` (settings, data files, number of ranks) equals the run's,
so a changed configuration starts afresh. Older epochs are removed when a newer one is complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ppm_platform.training.distributed import Ranks

COMPLETE = "COMPLETE"


def fingerprint(settings_json: str, files: list[Path], ranks: Ranks, **extra: Any) -> str:
    """SHA-256 (16 hex chars) of the settings JSON, each data file's path / size / mtime, the number of ranks
    and ``extra``: what must be equal for a checkpoint to belong to this run."""
    stats = []
    for f in files:
        f = Path(f)
        paths = sorted(f.rglob("*")) if f.is_dir() else [f]
        stats += [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths if p.is_file()]
    doc = json.dumps({"settings": settings_json, "files": stats, "world": ranks.world, **extra}, sort_keys=True,
                     default=str)
    return hashlib.sha256(doc.encode()).hexdigest()[:16]


@dataclass
class Resumed:
    """What :meth:`EpochCheckpoint.resume` restored: the next epoch to run (0-based), the per-epoch history so
    far, and the best validation AUC with its weights."""

    next_epoch: int
    history: list[dict]
    best_auc: float
    best_state: dict[str, torch.Tensor] | None


def _opt_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for i, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"opt.{i}.{k}"] = v.detach().cpu().contiguous().clone()
            else:
                scalars[f"{i}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _opt_state(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for name, v in tensors.items():
        if name.startswith("opt."):
            _, i, k = name.split(".", 2)
            state.setdefault(int(i), {})[k] = v
    for name, v in meta["scalars"].items():
        i, k = name.split(".", 1)
        state.setdefault(int(i), {})[k] = v
    return {"state": state, "param_groups": meta["param_groups"]}


class EpochCheckpoint:
    """Checkpoints of one training run in ``folder`` (None: checkpointing off, every method a no-op).

    Args:
        folder: the model's checkpoint folder (``settings.checkpoints_dir / <model>``); shared by the ranks
            (on a cluster: storage every node sees, like the training data).
        fingerprint: :func:`fingerprint` of the run.
        ranks: this process's :class:`~ppm_platform.training.distributed.Ranks`.
    """

    def __init__(self, folder: Path | None, fingerprint: str, ranks: Ranks):
        self.folder = None if folder is None else Path(folder)
        self.fingerprint = fingerprint
        self.ranks = ranks
        self._last_beat = 0.0
        #: the epoch :meth:`resume` resumed after (None: started afresh)
        self.resumed_after: int | None = None

    def _epoch_dir(self, epoch: int) -> Path:
        return self.folder / f"epoch-{epoch:04d}"

    def _complete(self) -> list[Path]:
        if self.folder is None or not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.glob("epoch-*") if (p / COMPLETE).exists())

    def resume(self, model: torch.nn.Module, opt: torch.optim.Optimizer, rng: np.random.Generator,
               generators: list[torch.Generator]) -> Resumed | None:
        """Load the newest complete checkpoint of this run into ``model``, ``opt``, ``rng`` and ``generators``
        (and torch's global RNG). Returns None (nothing loaded) when there is none with this fingerprint."""
        for d in reversed(self._complete()):
            meta = json.loads((d / "state.json").read_text())
            mine = d / f"rng-rank{self.ranks.rank}.safetensors"
            if meta.get("fingerprint") != self.fingerprint or not mine.exists():
                continue
            tensors = load_file(d / "state.safetensors")
            model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
            opt.load_state_dict(_opt_state(tensors, meta["optimizer"]))
            best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")} or None
            rng.bit_generator.state = meta["numpy_rng"]
            rs = load_file(mine)
            torch.set_rng_state(rs["torch_global"])
            for i, g in enumerate(generators):
                g.set_state(rs[f"generator.{i}"])
            self.resumed_after = int(meta["epoch"])
            return Resumed(int(meta["epoch"]), meta["history"], float(meta["best_auc"]), best)
        return None

    def save(self, epoch: int, model: torch.nn.Module, opt: torch.optim.Optimizer, rng: np.random.Generator,
             generators: list[torch.Generator], history: list[dict], best_auc: float,
             best_state: dict[str, torch.Tensor] | None) -> None:
        """Write the checkpoint after ``epoch`` epochs (every rank its RNG states, the chief the rest, then
        ``COMPLETE``); remove the older ones. Collective: every rank calls it."""
        if self.folder is None:
            return
        d = self._epoch_dir(epoch)
        d.mkdir(parents=True, exist_ok=True)
        rs = {"torch_global": torch.get_rng_state()}
        rs.update({f"generator.{i}": g.get_state() for i, g in enumerate(generators)})
        save_file(rs, d / f"rng-rank{self.ranks.rank}.safetensors")
        self.ranks.barrier()
        if self.ranks.chief:
            tensors = {f"model.{k}": v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
            if best_state is not None:
                tensors.update({f"best.{k}": v.contiguous() for k, v in best_state.items()})
            opt_t, opt_meta = _opt_tensors(opt)
            tensors.update(opt_t)
            save_file(tensors, d / "state.safetensors")
            (d / "state.json").write_text(json.dumps(
                {"fingerprint": self.fingerprint, "epoch": epoch, "history": history, "best_auc": best_auc,
                 "numpy_rng": rng.bit_generator.state, "optimizer": opt_meta, "world": self.ranks.world},
                default=float))
            tmp = d / f".{COMPLETE}.tmp"
            tmp.write_text(str(time.time()))
            os.replace(tmp, d / COMPLETE)
            for old in self.folder.glob("epoch-*"):
                if old != d:
                    shutil.rmtree(old, ignore_errors=True)
        self.ranks.barrier()

    def heartbeat(self, epoch: int, step: int, every_s: float = 0.5) -> None:
        """Record this rank's pid, epoch and step in ``progress-rank<r>.json`` (at most every ``every_s``)."""
        if self.folder is None or time.monotonic() - self._last_beat < every_s:
            return
        self._last_beat = time.monotonic()
        self.folder.mkdir(parents=True, exist_ok=True)
        p = self.folder / f"progress-rank{self.ranks.rank}.json"
        tmp = p.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "epoch": epoch, "step": step, "time": time.time()}))
        os.replace(tmp, p)

    def clear(self) -> None:
        """Remove every checkpoint and progress file of the model (chief; after the model is saved)."""
        if self.folder is not None and self.ranks.chief:
            shutil.rmtree(self.folder, ignore_errors=True)
