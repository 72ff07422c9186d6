"""URM: the unified ranking model = IDRec + PPM's light top + MMoE, click and order towers (PPM paper,
WWW'24: the pre-trained PPM is plugged into the ID-based model; its frozen lower layers are read from
caches, so serving runs no Transformer and latency stays flat).

``URMConfig(use_ppm=False)`` gives the paper's "Base" model (IDRec + MMoE, same towers). Both variants take
the same inputs (:data:`URM_INPUT_NAMES`) so training sets, ONNX graphs and the serving code are shared.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from pydantic import model_validator
from torch import Tensor, nn

from ppm_platform.config import URMHyperParams, Settings
from ppm_platform.models.idrec import IDRec, IDRecConfig
from ppm_platform.models.layers import MLP
from ppm_platform.models.mmoe import MMoE, MMoEConfig
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
#: The semantic-id input (int64 ``[B, Ls]``, one vocabulary index per level; 1 = OOV), after
#: :data:`URM_INPUT_NAMES` in ``URM.forward``; a model built without semantic ids has no such input.
SID_INPUT_NAMES: tuple[str, ...] = ("item_sid",)
#: Output columns of ``URM.forward``.
TASKS: tuple[str, ...] = ("click", "order")


class InputShapes(Protocol):
    """The input widths a fitted feature vectorizer gives (``features.encoding.FeatureVectorizer`` has them): vocabulary
    sizes incl. the 2 reserved indices, the genre multi-hot width and the dense counter widths."""

    @property
    def n_users(self) -> int: ...
    @property
    def n_items(self) -> int: ...
    @property
    def user_side_cardinalities(self) -> tuple[int, ...]: ...
    @property
    def n_genres(self) -> int: ...
    @property
    def n_user_dense(self) -> int: ...
    @property
    def n_item_dense(self) -> int: ...
    @property
    def sid_cardinalities(self) -> tuple[int, ...]: ...


class URMConfig(IDRecConfig, URMHyperParams):
    """URM / Base config: IDRec's (:class:`~ppm_platform.models.idrec.IDRecConfig`: input widths and IDRec
    hyper-parameters), MMoE's and the towers' (:class:`~ppm_platform.config.URMHyperParams`, set under ``urm``
    in the settings), and the plugged-in PPM's. :attr:`idrec` and :attr:`mmoe` are the configs the
    sub-modules are built from. Flat (one level, as ``model.json`` records it), so a saved URM's config reads
    back unchanged. Build it from settings with :meth:`from_settings`.

    Attributes:
        use_ppm: False = the "Base" model (IDRec only).
        ppm: the PPM config whose readout is plugged in (defaults to ``PPMConfig()`` when ``use_ppm``).

    Raises:
        pydantic.ValidationError (a ValueError): a vocabulary size below 2 (see ``IDRecConfig``).
    """

    use_ppm: bool = True
    ppm: PPMConfig | None = None

    @model_validator(mode="after")
    def _default_ppm(self) -> "URMConfig":
        if self.use_ppm and self.ppm is None:
            self.ppm = PPMConfig()
        return self

    @property
    def idrec(self) -> IDRecConfig:
        """The :class:`~ppm_platform.models.idrec.IDRecConfig` part (what :class:`IDRec` is built from)."""
        return IDRecConfig(**self.model_dump(include=set(IDRecConfig.model_fields)))

    @property
    def mmoe(self) -> MMoEConfig:
        """The :class:`~ppm_platform.models.mmoe.MMoEConfig` part: one gate per task of :data:`TASKS`."""
        return MMoEConfig(**self.model_dump(include=set(MMoEConfig.model_fields) - {"n_tasks"}), n_tasks=len(TASKS))

    @classmethod
    def from_settings(cls, settings: Settings, shapes: InputShapes, ppm: PPMConfig | None = None) -> "URMConfig":
        """The config of ``settings.urm``'s hyper-parameters for the input widths of ``shapes`` (a fitted
        ``FeatureVectorizer``) and ``settings.sequence.max_len``; URM with ``ppm`` (the config of the PPM whose
        readout is plugged in), Base when ``ppm`` is None. The one place a URM / Base config is built."""
        hyper = settings.urm.model_dump(include=set(URMHyperParams.model_fields))
        return cls(**hyper, n_users=shapes.n_users, n_items=shapes.n_items,
                   user_side_cardinalities=tuple(shapes.user_side_cardinalities), n_genres=shapes.n_genres,
                   n_user_dense=shapes.n_user_dense, n_item_dense=shapes.n_item_dense,
                   max_len=settings.sequence.max_len, use_ppm=ppm is not None, ppm=ppm,
                   sid_cardinalities=tuple(getattr(shapes, "sid_cardinalities", ())))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready flat dict (tuples as lists, ``ppm`` a dict or None); :meth:`from_dict` inverts it."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "URMConfig":
        """Inverse of :meth:`to_dict` (accepts JSON lists for tuples, a dict for ``ppm``); unknown keys raise
        ``TypeError`` (a config from another version)."""
        extra = set(d) - set(cls.model_fields)
        if extra:
            raise TypeError(f"unknown URMConfig field(s) {sorted(extra)}")
        return cls.model_validate(d)


def model_input_names(cfg: IDRecConfig) -> tuple[str, ...]:
    """``URM.forward``'s inputs for ``cfg``: :data:`URM_INPUT_NAMES`, then :data:`SID_INPUT_NAMES` when it embeds
    semantic ids."""
    return (*URM_INPUT_NAMES, *(SID_INPUT_NAMES if cfg.sid_cardinalities else ()))


class URM(nn.Module):
    """Unified ranking model: ``[IDRec rep, PPMReadout rep] -> MMoE (2 tasks) -> click / order towers``.

    The PPM top (:class:`PPMReadout`, trainable, warm-started by :meth:`load_ppm_top`) reads only the cached
    PPM vectors; URM never holds PPM's item tower or sequence encoder (paper §"plug-in").

    Shapes (forward, in :data:`URM_INPUT_NAMES` order):
        user_idx int64 ``[B]``, item_idx int64 ``[B]``, user_side int64 ``[B, S]``, item_genres f32 ``[B, G]``,
        item_content f32 ``[B]``, user_dense f32 ``[B, Du]``, item_dense f32 ``[B, Di]``, hist_item_idx int64
        ``[B, L]``, hist_mask f32 ``[B, L]``, ppm_user_seq f32 ``[B, L', d]``, ppm_seq_mask f32 ``[B, L']``,
        ppm_item_vec f32 ``[B, d]``, item_sid int64 ``[B, Ls]`` (semantic ids only) -> logits f32 ``[B, 2]``
        (col 0 click, col 1 order). With
        ``use_ppm=False`` the ``ppm_*`` inputs are ignored (may be None). Where ``item_content == 0`` the PPM
        top reads a learned no-content item vector instead of ``ppm_item_vec``.
    """

    def __init__(self, cfg: URMConfig):
        super().__init__()
        self.cfg = cfg
        self.idrec = IDRec(cfg.idrec)
        in_dim = self.idrec.out_dim
        self.ppm_top: PPMReadout | None = None
        if cfg.use_ppm:
            assert cfg.ppm is not None
            self.ppm_top = PPMReadout(cfg.ppm)
            #: the PPM item vector of an item without content features (learned; zero at init)
            self.no_content_vec = nn.Parameter(torch.zeros(cfg.ppm.d_model))
            in_dim += self.ppm_top.out_dim
        self.mmoe = MMoE(in_dim, cfg.mmoe)
        self.towers = nn.ModuleList(
            MLP(cfg.expert_hidden, [cfg.tower_hidden, 1], dropout=cfg.dropout, final_activation=False)
            for _ in TASKS
        )

    def forward(self, user_idx: Tensor, item_idx: Tensor, user_side: Tensor, item_genres: Tensor,
                item_content: Tensor, user_dense: Tensor, item_dense: Tensor, hist_item_idx: Tensor,
                hist_mask: Tensor, ppm_user_seq: Tensor | None = None, ppm_seq_mask: Tensor | None = None,
                ppm_item_vec: Tensor | None = None, item_sid: Tensor | None = None) -> Tensor:
        rep = self.idrec(user_idx, item_idx, user_side, item_genres, item_content, user_dense, item_dense,
                         hist_item_idx, hist_mask, item_sid)
        if self.ppm_top is not None:
            if ppm_user_seq is None or ppm_seq_mask is None or ppm_item_vec is None:
                raise ValueError("use_ppm=True: ppm_user_seq, ppm_seq_mask and ppm_item_vec are required")
            has = item_content.to(ppm_item_vec.dtype).unsqueeze(-1)
            vec = has * ppm_item_vec + (1.0 - has) * self.no_content_vec
            rep = torch.cat([rep, self.ppm_top(vec, ppm_user_seq, ppm_seq_mask)], dim=-1)
        task_reps = self.mmoe(rep)
        return torch.cat([tower(h) for tower, h in zip(self.towers, task_reps)], dim=-1)

    def forward_dict(self, batch: Mapping[str, Tensor]) -> Tensor:
        """``forward`` from a dict keyed by :func:`model_input_names` (``ppm_*`` keys optional for Base).
        -> logits f32 ``[B, 2]``. Raises KeyError naming a missing required input."""
        optional = PPM_INPUT_NAMES if self.ppm_top is None else ()
        args: list[Tensor | None] = []
        for name in model_input_names(self.cfg):
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
