"""URM: the unified ranking model = IDRec + PPM's light top + MMoE, click and order towers (PPM paper,
WWW'24: the pre-trained PPM is plugged into the ID-based model; its frozen lower layers are read from
caches, so serving runs no Transformer and latency stays flat).

``URMConfig(use_ppm=False)`` gives the paper's "Base" model (IDRec + MMoE, same towers). Both variants take
the same inputs (:data:`URM_INPUT_NAMES`) so training sets, ONNX graphs and the serving code are shared.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ppm_platform.models.idrec import IDRec
from ppm_platform.models.layers import MLP
from ppm_platform.models.mmoe import MMoE
from ppm_platform.models.ppm import PPM, PPMConfig, PPMReadout

#: Model inputs, in ``URM.forward`` order (also the ONNX graph input names).
URM_INPUT_NAMES: tuple[str, ...] = (
    "user_idx",        # int64 [B]    0 = padding, 1 = OOV, >= 2 known
    "item_idx",        # int64 [B]
    "user_side",       # int64 [B, S]
    "item_genres",     # float32 [B, G] multi-hot
    "item_content",    # float32 [B]  1 = the item's content features are present, 0 = learned fallback
    "user_dense",      # float32 [B, Du] standardized user counters (user_stats)
    "item_dense",      # float32 [B, Di] standardized item counters (item_stats)
    "hist_item_idx",   # int64 [B, L] most recent first, 0 = padding
    "hist_mask",       # float32 [B, L]
    "ppm_user_seq",    # float32 [B, L, d] cached PPM sequence-encoder output
    "ppm_seq_mask",    # float32 [B, L]
    "ppm_item_vec",    # float32 [B, d] cached PPM item-tower output
)
#: Inputs that only the PPM top reads (ignored, and possibly pruned from the ONNX graph, when use_ppm=False).
PPM_INPUT_NAMES: tuple[str, ...] = ("ppm_user_seq", "ppm_seq_mask", "ppm_item_vec")
#: Inputs of IDRec (the Base model's whole input set), in ``URM.forward`` order.
IDREC_INPUT_NAMES: tuple[str, ...] = tuple(n for n in URM_INPUT_NAMES if n not in PPM_INPUT_NAMES)
#: The inputs that depend on the user only (one row per request; broadcast to the candidates in the serving
#: graph), and those that depend on the candidate item; together :data:`URM_INPUT_NAMES`.
USER_INPUT_NAMES: tuple[str, ...] = ("user_idx", "user_side", "user_dense", "hist_item_idx", "hist_mask",
                                     "ppm_user_seq", "ppm_seq_mask")
ITEM_INPUT_NAMES: tuple[str, ...] = ("item_idx", "item_genres", "item_content", "item_dense", "ppm_item_vec")
#: Output columns of ``URM.forward``.
TASKS: tuple[str, ...] = ("click", "order")


@dataclass
class URMConfig:
    """URM / Base hyper-parameters (defaults = ``config.URMSettings``).

    Attributes:
        n_users, n_items: vocabulary sizes INCLUDING the 2 reserved indices (0 = padding, 1 = OOV).
        user_side_cardinalities: vocabulary size (incl. the 2 reserved) of each categorical user side feature.
        n_genres: width ``G`` of the item genre multi-hot.
        n_user_dense, n_item_dense: widths ``Du`` / ``Di`` of the dense counter inputs (0 = none).
        max_len: length ``L`` of the clicked-item ID sequence.
        emb_dim, cross_layers, dnn_hidden: IDRec (embeddings, DCN-V2 cross layers, DNN widths).
        n_experts, expert_hidden: MMoE; tower_hidden: hidden width of the click / order towers.
        use_ppm: False = the "Base" model (IDRec only).
        ppm: the PPM config whose readout is plugged in (defaults to ``PPMConfig()`` when ``use_ppm``).
    """

    n_users: int
    n_items: int
    user_side_cardinalities: tuple[int, ...]
    n_genres: int
    n_user_dense: int = 0
    n_item_dense: int = 0
    max_len: int = 20
    emb_dim: int = 16
    cross_layers: int = 2
    dnn_hidden: tuple[int, ...] = (128, 64)
    n_experts: int = 4
    expert_hidden: int = 64
    tower_hidden: int = 32
    dropout: float = 0.1
    use_ppm: bool = True
    ppm: PPMConfig | None = None

    def __post_init__(self) -> None:
        # JSON round trips give lists / dicts: normalise so from_dict(asdict(c)) == c
        self.user_side_cardinalities = tuple(int(c) for c in self.user_side_cardinalities)
        self.dnn_hidden = tuple(int(h) for h in self.dnn_hidden)
        if isinstance(self.ppm, Mapping):
            self.ppm = PPMConfig.from_dict(dict(self.ppm))
        if self.use_ppm and self.ppm is None:
            self.ppm = PPMConfig()
        if self.n_users < 2 or self.n_items < 2 or any(c < 2 for c in self.user_side_cardinalities):
            raise ValueError("vocabulary sizes include the 2 reserved indices (0 pad, 1 OOV): each must be >= 2")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "URMConfig":
        """Inverse of :meth:`to_dict` (accepts JSON lists for tuples, a dict for ``ppm``)."""
        known = {f.name for f in fields(cls)}
        extra = set(d) - known
        if extra:
            raise TypeError(f"unknown URMConfig field(s) {sorted(extra)}")
        return cls(**d)


class URM(nn.Module):
    """Unified ranking model: ``[IDRec rep, PPMReadout rep] -> MMoE (2 tasks) -> click / order towers``.

    The PPM top (:class:`PPMReadout`, trainable, warm-started by :meth:`load_ppm_top`) reads only the cached
    PPM vectors; URM never holds PPM's item tower or sequence encoder (paper §"plug-in").

    Shapes (forward, in :data:`URM_INPUT_NAMES` order):
        user_idx int64 ``[B]``, item_idx int64 ``[B]``, user_side int64 ``[B, S]``, item_genres f32 ``[B, G]``,
        item_content f32 ``[B]``, user_dense f32 ``[B, Du]``, item_dense f32 ``[B, Di]``, hist_item_idx int64
        ``[B, L]``, hist_mask f32 ``[B, L]``, ppm_user_seq f32 ``[B, L', d]``, ppm_seq_mask f32 ``[B, L']``,
        ppm_item_vec f32 ``[B, d]`` -> logits f32 ``[B, 2]`` (col 0 click, col 1 order). With
        ``use_ppm=False`` the ``ppm_*`` inputs are ignored (may be None). Where ``item_content == 0`` the PPM
        top reads a learned no-content item vector instead of ``ppm_item_vec``.
    """

    def __init__(self, cfg: URMConfig):
        super().__init__()
        self.cfg = cfg
        self.idrec = IDRec(cfg)
        in_dim = self.idrec.out_dim
        self.ppm_top: PPMReadout | None = None
        if cfg.use_ppm:
            assert cfg.ppm is not None
            self.ppm_top = PPMReadout(cfg.ppm)
            #: the PPM item vector of an item without content features (learned; zero at init)
            self.no_content_vec = nn.Parameter(torch.zeros(cfg.ppm.d_model))
            in_dim += self.ppm_top.out_dim
        self.mmoe = MMoE(in_dim, cfg.n_experts, cfg.expert_hidden, n_tasks=len(TASKS), dropout=cfg.dropout)
        self.towers = nn.ModuleList(
            MLP(cfg.expert_hidden, [cfg.tower_hidden, 1], dropout=cfg.dropout, final_activation=False)
            for _ in TASKS
        )

    def forward(self, user_idx: Tensor, item_idx: Tensor, user_side: Tensor, item_genres: Tensor,
                item_content: Tensor, user_dense: Tensor, item_dense: Tensor, hist_item_idx: Tensor,
                hist_mask: Tensor, ppm_user_seq: Tensor | None = None, ppm_seq_mask: Tensor | None = None,
                ppm_item_vec: Tensor | None = None) -> Tensor:
        rep = self.idrec(user_idx, item_idx, user_side, item_genres, item_content, user_dense, item_dense,
                         hist_item_idx, hist_mask)
        if self.ppm_top is not None:
            if ppm_user_seq is None or ppm_seq_mask is None or ppm_item_vec is None:
                raise ValueError("use_ppm=True: ppm_user_seq, ppm_seq_mask and ppm_item_vec are required")
            has = item_content.to(ppm_item_vec.dtype).unsqueeze(-1)
            vec = has * ppm_item_vec + (1.0 - has) * self.no_content_vec
            rep = torch.cat([rep, self.ppm_top(vec, ppm_user_seq, ppm_seq_mask)], dim=-1)
        task_reps = self.mmoe(rep)
        return torch.cat([tower(h) for tower, h in zip(self.towers, task_reps)], dim=-1)

    def forward_dict(self, batch: Mapping[str, Tensor]) -> Tensor:
        """``forward`` from a dict keyed by :data:`URM_INPUT_NAMES` (``ppm_*`` keys optional for Base).
        -> logits f32 ``[B, 2]``. Raises KeyError naming a missing required input."""
        optional = PPM_INPUT_NAMES if self.ppm_top is None else ()
        args: list[Tensor | None] = []
        for name in URM_INPUT_NAMES:
            if name in batch:
                args.append(batch[name])
            elif name in optional:
                args.append(None)
            else:
                raise KeyError(f"missing URM input {name!r}")
        return self(*args)

    @torch.no_grad()
    def load_ppm_top(self, ppm: PPM) -> None:
        """Warm-start the PPM top from a pre-trained PPM's readout (a copy: no parameter is shared).

        Raises:
            ValueError: this URM has no PPM top (``use_ppm=False``) or the readout shapes differ.
        """
        if self.ppm_top is None:
            raise ValueError("this URM was built with use_ppm=False: it has no PPM top")
        mine, theirs = self.cfg.ppm, ppm.cfg
        assert mine is not None
        if (mine.d_model, mine.readout_hidden) != (theirs.d_model, theirs.readout_hidden):
            raise ValueError(f"PPM readout shape mismatch: URM expects d_model={mine.d_model}, readout_hidden="
                             f"{mine.readout_hidden}; PPM has {theirs.d_model}, {theirs.readout_hidden}")
        # load_state_dict copies into this module's own tensors, so later URM steps never touch the PPM
        self.ppm_top.load_state_dict(ppm.readout.state_dict())


def multitask_bce(logits: Tensor, click: Tensor, order: Tensor,
                  weights: tuple[float, float] = (1.0, 1.0)) -> Tensor:
    """Weighted sum of per-task mean BCE-with-logits: ``w0 * BCE(logits[:, 0], click) + w1 * BCE(logits[:, 1], order)``.

    Args:
        logits: f32 ``[B, 2]`` (click, order). click, order: ``[B]`` labels in {0, 1} (any numeric dtype).
        weights: per-task loss weights (``URMSettings.click_weight``, ``order_weight``).

    Returns:
        f32 scalar.
    """
    lc = F.binary_cross_entropy_with_logits(logits[:, 0], click.to(logits.dtype))
    lo = F.binary_cross_entropy_with_logits(logits[:, 1], order.to(logits.dtype))
    return weights[0] * lc + weights[1] * lo
