"""ONNX export of the URM / Base model with a parity check, and the onnxruntime scorer used online.

The exported graph maps the :data:`~ppm_platform.models.urm.URM_INPUT_NAMES` inputs (batch axis dynamic,
named ``batch``) to one output ``probs`` = ``sigmoid(logits)``, f32 ``[B, 2]`` (click, order). The serving
graph (``model_serving.onnx``, :func:`export_serving_onnx`) takes the user inputs with batch 1 and broadcasts
them to the candidates inside the graph. A Base model
(``use_ppm=False``) is exported with only the IDRec inputs: its graph declares no ``ppm_*`` input, and
:class:`OnnxScorer` feeds only what a graph declares, so callers can always pass the full input dict. A model
that embeds semantic ids declares ``item_sid`` (int64 ``[B, Ls]``, an item input) after the others.

Exporter: the torch.export-based exporter (``dynamo=True``, torch's default and maintained path, opset 20;
slower to export). ``dynamo=False`` selects the legacy TorchScript exporter (faster to export, opset 17,
deprecated by torch); both pass the same parity check.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ppm_platform.onnx_common import cpu_session, quiet_onnx_export
from ppm_platform.models.urm import (
    IDREC_INPUT_NAMES,
    ITEM_INPUT_NAMES,
    SID_INPUT_NAMES,
    URM,
    URM_INPUT_NAMES,
    USER_INPUT_NAMES,
)

BASE_INPUT_NAMES: tuple[str, ...] = IDREC_INPUT_NAMES
OUTPUT_NAME = "probs"
_INT_INPUTS = frozenset({"user_idx", "item_idx", "user_side", "hist_item_idx", "item_sid"})
LEGACY_OPSET = 17
_NP_DTYPES = {"tensor(int64)": np.int64, "tensor(float)": np.float32, "tensor(int32)": np.int32,
              "tensor(double)": np.float64, "tensor(bool)": np.bool_}


class _URMProbs(nn.Module):
    """Export wrapper: explicit positional signature (torch.export needs one) and the sigmoid in-graph."""

    def __init__(self, model: URM):
        super().__init__()
        self.model = model

    def forward(self, user_idx: Tensor, item_idx: Tensor, user_side: Tensor, item_genres: Tensor,
                item_content: Tensor, user_dense: Tensor, item_dense: Tensor, hist_item_idx: Tensor,
                hist_mask: Tensor, ppm_user_seq: Tensor, ppm_seq_mask: Tensor, ppm_item_vec: Tensor) -> Tensor:
        return torch.sigmoid(self.model(user_idx, item_idx, user_side, item_genres, item_content, user_dense,
                                        item_dense, hist_item_idx, hist_mask, ppm_user_seq, ppm_seq_mask,
                                        ppm_item_vec))


class _BaseProbs(nn.Module):
    """Export wrapper for ``use_ppm=False``: only the IDRec inputs become graph inputs."""

    def __init__(self, model: URM):
        super().__init__()
        self.model = model

    def forward(self, user_idx: Tensor, item_idx: Tensor, user_side: Tensor, item_genres: Tensor,
                item_content: Tensor, user_dense: Tensor, item_dense: Tensor, hist_item_idx: Tensor,
                hist_mask: Tensor) -> Tensor:
        return torch.sigmoid(self.model(user_idx, item_idx, user_side, item_genres, item_content, user_dense,
                                        item_dense, hist_item_idx, hist_mask))


class _URMSIDProbs(nn.Module):
    """Export wrapper of a URM that embeds semantic ids (``item_sid`` last)."""

    def __init__(self, model: URM):
        super().__init__()
        self.model = model

    def forward(self, user_idx: Tensor, item_idx: Tensor, user_side: Tensor, item_genres: Tensor,
                item_content: Tensor, user_dense: Tensor, item_dense: Tensor, hist_item_idx: Tensor,
                hist_mask: Tensor, ppm_user_seq: Tensor, ppm_seq_mask: Tensor, ppm_item_vec: Tensor,
                item_sid: Tensor) -> Tensor:
        return torch.sigmoid(self.model(user_idx, item_idx, user_side, item_genres, item_content, user_dense,
                                        item_dense, hist_item_idx, hist_mask, ppm_user_seq, ppm_seq_mask,
                                        ppm_item_vec, item_sid))


class _BaseSIDProbs(nn.Module):
    """Export wrapper of a Base that embeds semantic ids: the IDRec inputs, then ``item_sid``."""

    def __init__(self, model: URM):
        super().__init__()
        self.model = model

    def forward(self, user_idx: Tensor, item_idx: Tensor, user_side: Tensor, item_genres: Tensor,
                item_content: Tensor, user_dense: Tensor, item_dense: Tensor, hist_item_idx: Tensor,
                hist_mask: Tensor, item_sid: Tensor) -> Tensor:
        return torch.sigmoid(self.model(user_idx, item_idx, user_side, item_genres, item_content, user_dense,
                                        item_dense, hist_item_idx, hist_mask, item_sid=item_sid))


def _has_sid(model: URM) -> bool:
    return bool(model.cfg.sid_cardinalities)


def _batch_wrapper(model: URM) -> nn.Module:
    if model.ppm_top is not None:
        return _URMSIDProbs(model) if _has_sid(model) else _URMProbs(model)
    return _BaseSIDProbs(model) if _has_sid(model) else _BaseProbs(model)


def graph_input_names(model: URM) -> tuple[str, ...]:
    """The input names the exported graph of ``model`` declares (all of :data:`URM_INPUT_NAMES` for URM,
    :data:`BASE_INPUT_NAMES` for Base; then ``item_sid`` when it embeds semantic ids)."""
    names = URM_INPUT_NAMES if model.ppm_top is not None else BASE_INPUT_NAMES
    return (*names, *(SID_INPUT_NAMES if _has_sid(model) else ()))


_quiet_exporter = quiet_onnx_export


def _to_torch(example: Mapping[str, np.ndarray], names: tuple[str, ...]) -> tuple[Tensor, ...]:
    out = []
    for n in names:
        if n not in example:
            raise KeyError(f"example is missing input {n!r}")
        # cast to the contract dtypes so the graph never declares e.g. int32 ids because an encoder made them
        dtype = np.int64 if n in _INT_INPUTS else np.float32
        out.append(torch.from_numpy(np.ascontiguousarray(example[n], dtype=dtype)))
    return tuple(out)


def _export_graph(wrapper: nn.Module, names: tuple[str, ...], trace_args: tuple[Tensor, ...], batched: set[str],
                  path: Path, parity: list[tuple[Tensor, ...]], atol: float, dynamo: bool) -> dict[str, Any]:
    """Export ``wrapper`` (eval mode) with inputs ``names`` (axis 0 dynamic, named ``batch``, for those in
    ``batched``; the others keep their traced shape) to ``path`` atomically, after checking onnxruntime
    against torch on every input tuple of ``parity``.

    Raises:
        ValueError: ``max |onnxruntime - torch| > atol`` or a non-finite / mis-shaped output (not written).
    """
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        t0 = time.perf_counter()
        with _quiet_exporter(), torch.no_grad():
            if dynamo:
                batch = torch.export.Dim("batch")
                program = torch.onnx.export(
                    wrapper, trace_args, input_names=list(names), output_names=[OUTPUT_NAME],
                    dynamic_shapes=tuple({0: batch} if n in batched else {} for n in names), dynamo=True,
                    verbose=False,
                    # onnxscript 0.7.2's optimizer rewrites `x + c` to `x` when |c| <= 1e-8 (its add_0 rule,
                    # abs_tol=1e-8): it deletes masked_softmax's `+ 1e-9` and an empty history gives NaN.
                    # onnxruntime applies its own (exact) graph optimisations at session creation anyway.
                    optimize=False,
                )
                assert program is not None
                program.save(str(tmp))
            else:
                torch.onnx.export(
                    wrapper, trace_args, str(tmp), input_names=list(names), output_names=[OUTPUT_NAME],
                    dynamic_axes={n: {0: "batch"} for n in (*names, OUTPUT_NAME) if n in batched or n == OUTPUT_NAME},
                    dynamo=False, opset_version=LEGACY_OPSET,
                )
        export_s = time.perf_counter() - t0
        opset = max(o.version for o in onnx.load(str(tmp), load_external_data=False).opset_import
                    if o.domain in ("", "ai.onnx"))
        scorer = OnnxScorer(tmp)
        max_diff = 0.0
        with torch.no_grad():
            for b in parity:
                ref = wrapper(*b).numpy()
                got = scorer.predict({n: a.numpy() for n, a in zip(names, b)})
                if got.shape != ref.shape:
                    raise ValueError(f"ONNX output shape {got.shape} != torch {ref.shape}")
                diff = np.abs(got - ref)
                # max() with NaN silently keeps the old value: treat any non-finite output as a failure
                max_diff = max(max_diff, float(diff.max()) if np.isfinite(diff).all() else float("inf"))
        if not max_diff <= atol:  # also catches NaN
            raise ValueError(f"ONNX parity failed: max |onnxruntime - torch| = {max_diff:.3g} > atol {atol:g}")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return {"max_abs_diff": max_diff, "opset": int(opset), "export_s": round(export_s, 3), "path": str(path),
            "exporter": "dynamo" if dynamo else "torchscript", "input_names": list(names)}


def export_urm_onnx(model: URM, example: Mapping[str, np.ndarray], path: Path, atol: float = 1e-5,
                    dynamo: bool = True, serving: bool = True) -> dict[str, Any]:
    """Export ``model`` to ONNX at ``path`` (atomically) and check parity against torch with onnxruntime;
    with ``serving``, also the broadcasting serving graph next to it (:func:`export_serving_onnx`,
    :data:`SERVING_FILE`).

    Args:
        model: a :class:`URM` (``use_ppm`` True or False). Exported in eval mode; its mode is restored.
        example: numpy inputs keyed by :data:`URM_INPUT_NAMES` (``ppm_*`` optional for Base), batch ``B >= 1``:
            int64 ids / float32 features as in :class:`URM`. Used for tracing and parity.
        path: destination ``.onnx`` file (parent created; written to a temp file then renamed).
        atol: maximum allowed ``|onnxruntime - torch|`` on the probabilities.
        dynamo: True = torch.export-based exporter (opset 20); False = legacy TorchScript exporter (opset 17).
        serving: also write the serving graph (``model_serving.onnx``) with its own parity check.

    Parity is checked on ``example``, on its first 3 rows (or 1 row), on ``example`` stacked twice (a batch
    size never seen at trace time), and on ``example`` with every ``*mask`` input zeroed (empty histories).

    Returns:
        ``{"max_abs_diff": float, "opset": int, "export_s": float, "path": str, "exporter": str,
        "input_names": list[str]}`` (+ ``"serving": {...}`` the same figures of the serving graph).

    Raises:
        KeyError: ``example`` lacks a graph input. ValueError: ``max_abs_diff > atol`` (the file is not
        written in that case).
    """
    path = Path(path)
    names = graph_input_names(model)
    args = _to_torch(example, names)
    wrapper = _batch_wrapper(model)
    was_training = model.training
    # eval the wrapper, not just the model: the legacy exporter restores the *wrapper's* mode after export,
    # which would otherwise switch dropout back on for the parity reference
    wrapper.eval()
    try:
        # torch.export specialises a dimension of size 1: trace with at least 2 rows so batch stays symbolic
        trace_args = args if args[0].shape[0] >= 2 else tuple(torch.cat([a, a]) for a in args)
        n_small = 3 if args[0].shape[0] >= 3 else 1
        # the example, a smaller and a larger batch than traced, and the example with every history empty
        # (users with no clicks yet: all-masked softmax rows must stay finite in the graph too)
        empty = tuple(torch.zeros_like(a) if n.endswith("mask") else a for n, a in zip(names, args))
        parity = [args, tuple(a[:n_small] for a in args), tuple(torch.cat([a, a]) for a in args), empty]
        out = _export_graph(wrapper, names, trace_args, set(names), path, parity, atol, dynamo)
        if serving:
            out["serving"] = export_serving_onnx(model, example, path.with_name(SERVING_FILE), atol, dynamo)
    finally:
        model.train(was_training)
    return out


#: file name of the serving graph next to ``model.onnx``
SERVING_FILE = "model_serving.onnx"


class _ServingProbs(nn.Module):
    """Serving wrapper: the user inputs come with batch 1 and are broadcast to the ``N`` candidates inside the
    graph (``expand``, as TorchEasyRec's serving processor tiles user features); the item inputs have batch N.
    Positional inputs in :func:`serving_input_names` order."""

    def __init__(self, model: URM):
        super().__init__()
        self.model = model
        self.names = serving_input_names(model)

    def _forward(self, inputs: tuple[Tensor, ...]) -> Tensor:
        named = dict(zip(self.names, inputs))
        n = named["item_idx"].shape[0]
        for k in USER_INPUT_NAMES:
            if k in named:
                named[k] = named[k].expand(n, *named[k].shape[1:])
        return torch.sigmoid(self.model.forward_dict(named))


class _ServingURM(_ServingProbs):
    def forward(self, user_idx: Tensor, user_side: Tensor, user_dense: Tensor, hist_item_idx: Tensor,
                hist_mask: Tensor, ppm_user_seq: Tensor, ppm_seq_mask: Tensor, item_idx: Tensor,
                item_genres: Tensor, item_content: Tensor, item_dense: Tensor, ppm_item_vec: Tensor) -> Tensor:
        return self._forward((user_idx, user_side, user_dense, hist_item_idx, hist_mask, ppm_user_seq, ppm_seq_mask,
                              item_idx, item_genres, item_content, item_dense, ppm_item_vec))


class _ServingBase(_ServingProbs):
    def forward(self, user_idx: Tensor, user_side: Tensor, user_dense: Tensor, hist_item_idx: Tensor,
                hist_mask: Tensor, item_idx: Tensor, item_genres: Tensor, item_content: Tensor,
                item_dense: Tensor) -> Tensor:
        return self._forward((user_idx, user_side, user_dense, hist_item_idx, hist_mask, item_idx, item_genres,
                              item_content, item_dense))


class _ServingURMSID(_ServingProbs):
    def forward(self, user_idx: Tensor, user_side: Tensor, user_dense: Tensor, hist_item_idx: Tensor,
                hist_mask: Tensor, ppm_user_seq: Tensor, ppm_seq_mask: Tensor, item_idx: Tensor,
                item_genres: Tensor, item_content: Tensor, item_dense: Tensor, ppm_item_vec: Tensor,
                item_sid: Tensor) -> Tensor:
        return self._forward((user_idx, user_side, user_dense, hist_item_idx, hist_mask, ppm_user_seq, ppm_seq_mask,
                              item_idx, item_genres, item_content, item_dense, ppm_item_vec, item_sid))


class _ServingBaseSID(_ServingProbs):
    def forward(self, user_idx: Tensor, user_side: Tensor, user_dense: Tensor, hist_item_idx: Tensor,
                hist_mask: Tensor, item_idx: Tensor, item_genres: Tensor, item_content: Tensor,
                item_dense: Tensor, item_sid: Tensor) -> Tensor:
        return self._forward((user_idx, user_side, user_dense, hist_item_idx, hist_mask, item_idx, item_genres,
                              item_content, item_dense, item_sid))


#: the serving graph's item inputs (batch N): :data:`ITEM_INPUT_NAMES`, then the semantic ids
SERVING_ITEM_INPUT_NAMES: tuple[str, ...] = (*ITEM_INPUT_NAMES, *SID_INPUT_NAMES)


def _serving_wrapper(model: URM) -> _ServingProbs:
    if model.ppm_top is not None:
        return (_ServingURMSID if _has_sid(model) else _ServingURM)(model)
    return (_ServingBaseSID if _has_sid(model) else _ServingBase)(model)


def serving_input_names(model: URM) -> tuple[str, ...]:
    """The serving graph's inputs: the user inputs (batch 1), then the item inputs (batch N); ``ppm_*`` only
    for a URM, ``item_sid`` only for a model that embeds semantic ids."""
    keep = set(graph_input_names(model))
    return tuple(n for n in (*USER_INPUT_NAMES, *SERVING_ITEM_INPUT_NAMES) if n in keep)


def export_serving_onnx(model: URM, example: Mapping[str, np.ndarray], path: Path, atol: float = 1e-5,
                        dynamo: bool = True) -> dict[str, Any]:
    """Export the serving form of ``model`` to ``path``: user inputs with batch 1, broadcast inside the graph
    to the N candidates' item inputs, so a request sends its user row (e.g. the 640-float PPM sequence) once,
    not N times. Parity against torch on the batch form (``model`` on the user row repeated N times) for the
    users of ``example`` (rows 0, 1 and the last) with N = 1, 3 and every row of ``example`` as candidates,
    and with the user's history empty.

    Args:
        example: numpy inputs keyed by :data:`URM_INPUT_NAMES`, batch >= 1 (its rows give users and items).

    Returns / Raises: as :func:`export_urm_onnx` (without ``"serving"``).
    """
    path = Path(path)
    names = serving_input_names(model)
    full = dict(zip(graph_input_names(model), _to_torch(example, graph_input_names(model))))
    B = full["item_idx"].shape[0]
    wrapper = _serving_wrapper(model).eval()

    def request(user_row: int, items: Tensor, empty_history: bool = False) -> tuple[Tensor, ...]:
        out = []
        for n in names:
            if n in USER_INPUT_NAMES:
                v = full[n][user_row:user_row + 1]
                out.append(torch.zeros_like(v) if empty_history and n.endswith("mask") else v)
            else:
                out.append(full[n][items])
        return tuple(out)

    all_items = torch.arange(B).repeat(2) if B < 2 else torch.arange(B)  # trace with N >= 2: batch stays symbolic
    parity = [request(u, idx) for u in sorted({0, min(1, B - 1), B - 1})
              for idx in (torch.arange(1), torch.arange(B)[:3], torch.arange(B).repeat(2))]
    parity.append(request(0, torch.arange(B), empty_history=True))
    return _export_graph(wrapper, names, request(0, all_items), set(SERVING_ITEM_INPUT_NAMES), path, parity, atol,
                         dynamo)


class OnnxScorer:
    """onnxruntime CPU session over an exported URM / Base graph.

    Args:
        path: ``.onnx`` file written by :func:`export_urm_onnx`.
        intra_op_threads: onnxruntime intra-op threads (1 = one core per scorer; scale out with processes).

    ``predict(inputs)`` feeds only the inputs the graph declares (Base graphs have no ``ppm_*`` inputs), cast
    to the graph's dtypes, and returns probabilities f32 ``[B, 2]`` (click, order).
    """

    def __init__(self, path: Path, intra_op_threads: int = 1):
        self.path = Path(path)
        self._session = cpu_session(self.path, intra_op_threads)
        self._inputs = [(i.name, _NP_DTYPES.get(i.type, np.float32)) for i in self._session.get_inputs()]
        self._output = self._session.get_outputs()[0].name

    @property
    def input_names(self) -> list[str]:
        """Names of the inputs the graph declares, in graph order."""
        return [n for n, _ in self._inputs]

    def predict(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Probabilities f32 ``[B, 2]`` for a batch.

        Args:
            inputs: arrays keyed by input name; extra keys are ignored.

        Raises:
            KeyError: naming a declared input that ``inputs`` lacks.
        """
        feed: dict[str, np.ndarray] = {}
        for name, dtype in self._inputs:
            if name not in inputs:
                raise KeyError(f"missing ONNX input {name!r} (graph declares {self.input_names})")
            feed[name] = np.ascontiguousarray(inputs[name], dtype=dtype)
        return np.asarray(self._session.run([self._output], feed)[0], dtype=np.float32)
