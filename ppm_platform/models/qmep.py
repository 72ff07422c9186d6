"""The two Table-2 rows of the PPM paper that use the multi-modal (ME) item features without PPM pre-training
(Gao et al., "PPM: A Pre-trained Plug-in Model for Click-through Rate Prediction", WWW'24 companion, Table 2):

* ``QM&EP`` -> :class:`QMEP`: the item's ME feature alone (the output of the encoders fine-tuned by query
  matching (QM) and entity prediction (EP)); a DNN over the target item's ME feature and attention + mean
  pooling of the clicked items' ME features. No ID embedding, no pre-training: trained from scratch on the
  CTR tasks.
* ``Base+QM&EP`` -> :class:`BaseQMEP`: IDRec with the same ME representation as extra inputs, two-stage (the
  ME features are computed by the frozen encoders in stage 1 and only *read* in stage 2; the trainable
  projection on top of them is trained with IDRec). Same MMoE + click / order towers as URM, so
  ``Base+QM&EP`` vs ``URM`` isolates the value of PPM's pre-training.

Both models take the ME features as dense tensors (``me_dim`` = text + image + 1 has_image,
:attr:`ppm_platform.config.EncoderSettings.me_dim`) and output click / order logits ``[B, 2]`` like :class:`~ppm_platform.models.urm.URM`.
For training over a catalog, ``forward_catalog`` projects each distinct ME row of a batch once and indexes
it (identical numbers to ``forward`` on gathered rows; up to ``B x (L + 1)`` times fewer projections). No I/O in here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn

from ppm_platform.config import EncoderSettings, Settings
from ppm_platform.models.idrec import IDRec
from ppm_platform.models.layers import MLP, DINAttention
from ppm_platform.models.mmoe import MMoE
from ppm_platform.models.urm import TASKS, URMConfig


@dataclass
class MEConfig:
    """Shape of the ME branch shared by :class:`QMEP` and :class:`BaseQMEP`.

    Attributes:
        me_dim: width of the ME item feature (``features.item_multimodal.me_matrix``; default: the default
            encoders', :attr:`~ppm_platform.config.EncoderSettings.me_dim`).
        d_model: width ``d`` of the projected item vector.
        proj_hidden: hidden width of the projection MLP (``LayerNorm(me_dim) -> proj_hidden -> d``).
        dnn_hidden: DNN widths of :class:`QMEP` (unused by :class:`BaseQMEP`, which uses IDRec's + MMoE).
        tower_hidden: hidden width of the click / order towers of :class:`QMEP`.
        dropout: dropout in the projection, DNN and towers.
    """

    me_dim: int = field(default_factory=lambda: EncoderSettings().me_dim)
    d_model: int = 32
    proj_hidden: int = 128
    dnn_hidden: tuple[int, ...] = (128, 64)
    tower_hidden: int = 32
    dropout: float = 0.1

    def __post_init__(self) -> None:
        self.dnn_hidden = tuple(int(h) for h in self.dnn_hidden)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_settings(cls, settings: Settings, me_dim: int) -> "MEConfig":
        """The ME branch of ``settings`` for ME features of width ``me_dim``: ``evaluation.me_dim`` /
        ``me_proj_hidden`` for the projection, ``urm``'s DNN, tower and dropout (the same head as Base / URM)."""
        e, u = settings.evaluation, settings.urm
        return cls(me_dim=me_dim, d_model=e.me_dim, proj_hidden=e.me_proj_hidden, dnn_hidden=tuple(u.dnn_hidden),
                   tower_hidden=u.tower_hidden, dropout=u.dropout)


class MEBranch(nn.Module):
    """ME representation of a (user history, target item) pair from frozen ME features.

    ``t = P(target_me)``, ``h_l = P(hist_me_l)`` with ``P = MLP(LayerNorm(me_dim) -> proj_hidden -> d)``
    (trainable; the ME features themselves are frozen inputs), then
    ``rep = [t, din(t, h), mean(h), t * din(t, h)]`` where ``din`` is DIN attention pooling (Zhou et al.,
    KDD'18) and ``mean`` the masked mean.

    Shapes:
        forward(target_me f32 ``[B, me_dim]``, hist_me f32 ``[B, L, me_dim]``, hist_mask f32 ``[B, L]``)
        -> f32 ``[B, 4d]`` (``out_dim``). An empty history (all-zero mask) pools to zero vectors.
    """

    def __init__(self, cfg: MEConfig):
        super().__init__()
        d = cfg.d_model
        self.proj = nn.Sequential(nn.LayerNorm(cfg.me_dim),
                                  MLP(cfg.me_dim, [cfg.proj_hidden, d], dropout=cfg.dropout, final_activation=False))
        self.din = DINAttention(d, hidden=(2 * d,), dropout=0.0)
        self.out_dim = 4 * d

    def project(self, me: Tensor) -> Tensor:
        """Trainable projection of ME features: f32 ``[..., me_dim]`` -> f32 ``[..., d]``."""
        return self.proj(me)

    def from_vectors(self, t: Tensor, h: Tensor, hist_mask: Tensor) -> Tensor:
        """The representation from projected vectors: t f32 ``[B, d]``, h f32 ``[B, L, d]``, mask f32 ``[B, L]``
        -> f32 ``[B, 4d]``."""
        m = hist_mask.to(t.dtype)
        att = self.din(t, h, m)
        mean = torch.bmm(m.unsqueeze(1), h).squeeze(1) / m.sum(dim=1, keepdim=True).clamp_min(1.0)
        return torch.cat([t, att, mean, t * att], dim=-1)

    def forward(self, target_me: Tensor, hist_me: Tensor, hist_mask: Tensor) -> Tensor:
        return self.from_vectors(self.project(target_me), self.project(hist_me), hist_mask)

    def forward_catalog(self, me_table: Tensor, target_row: Tensor, hist_row: Tensor, hist_mask: Tensor) -> Tensor:
        """Same as :meth:`forward` on ``me_table[target_row]``, ``me_table[hist_row]``, but projects each distinct
        catalog row of the batch once (the projection is per row, so the numbers are identical). me_table f32
        ``[N, me_dim]``, target_row int64 ``[B]``, hist_row int64 ``[B, L]`` (rows into ``me_table``; padded
        positions may point at any row, they are masked) -> f32 ``[B, 4d]``."""
        B, L = hist_row.shape
        uniq, inv = torch.unique(torch.cat([target_row, hist_row.reshape(-1)]), return_inverse=True)
        vecs = self.project(me_table[uniq])
        return self.from_vectors(vecs[inv[:B]], vecs[inv[B:]].view(B, L, -1), hist_mask)


def _towers(in_dim: int, hidden: int, dropout: float) -> nn.ModuleList:
    return nn.ModuleList(MLP(in_dim, [hidden, 1], dropout=dropout, final_activation=False) for _ in TASKS)


class QMEP(nn.Module):
    """``QM&EP`` row of the paper's Table 2: CTR from the (fine-tuned, frozen) ME features alone.

    ``[click, order] logits = towers(DNN(MEBranch(target_me, hist_me, hist_mask)))``; no IDs, no PPM
    pre-training (trained from scratch on the CTR tasks with :func:`~ppm_platform.models.urm.multitask_bce`).

    Shapes:
        forward(target_me f32 ``[B, me_dim]``, hist_me f32 ``[B, L, me_dim]``, hist_mask f32 ``[B, L]``)
        -> logits f32 ``[B, 2]`` (col 0 click, col 1 order).
    """

    def __init__(self, cfg: MEConfig):
        super().__init__()
        self.cfg = cfg
        self.me = MEBranch(cfg)
        self.dnn = MLP(self.me.out_dim, list(cfg.dnn_hidden), dropout=cfg.dropout)
        self.towers = _towers(self.dnn.out_dim, cfg.tower_hidden, cfg.dropout)

    def _head(self, rep: Tensor) -> Tensor:
        h = self.dnn(rep)
        return torch.cat([tower(h) for tower in self.towers], dim=-1)

    def forward(self, target_me: Tensor, hist_me: Tensor, hist_mask: Tensor) -> Tensor:
        return self._head(self.me(target_me, hist_me, hist_mask))

    def forward_catalog(self, me_table: Tensor, target_row: Tensor, hist_row: Tensor, hist_mask: Tensor) -> Tensor:
        """:meth:`forward` with ME rows gathered from ``me_table`` (see :meth:`MEBranch.forward_catalog`)
        -> logits f32 ``[B, 2]``."""
        return self._head(self.me.forward_catalog(me_table, target_row, hist_row, hist_mask))


class BaseQMEP(nn.Module):
    """``Base+QM&EP`` row of the paper's Table 2: IDRec with the ME representation as extra inputs, two-stage
    (ME features frozen, precomputed by the encoders; only the projection on top trains with IDRec).

    ``[IDRec rep, MEBranch rep] -> MMoE (2 tasks) -> click / order towers`` -- the URM layout with the PPM
    readout replaced by the un-pre-trained ME branch.

    Shapes:
        forward(the IDRec inputs of :class:`~ppm_platform.models.idrec.IDRec` (user_idx int64 ``[B]`` ...
        hist_mask f32 ``[B, L]``, in its order), target_me f32 ``[B, me_dim]``, hist_me f32 ``[B, L', me_dim]``,
        me_mask f32 ``[B, L']``) -> logits f32 ``[B, 2]``.
        ID conventions as :class:`~ppm_platform.models.idrec.IDRec` (0 pad, 1 OOV).
    """

    def __init__(self, cfg: URMConfig, me_cfg: MEConfig):
        super().__init__()
        self.cfg, self.me_cfg = cfg, me_cfg
        self.idrec = IDRec(cfg.idrec)
        self.me = MEBranch(me_cfg)
        in_dim = self.idrec.out_dim + self.me.out_dim
        self.mmoe = MMoE(in_dim, cfg.mmoe)
        self.towers = _towers(cfg.expert_hidden, cfg.tower_hidden, cfg.dropout)

    def _head(self, id_rep: Tensor, me_rep: Tensor) -> Tensor:
        task_reps = self.mmoe(torch.cat([id_rep, me_rep], dim=-1))
        return torch.cat([tower(h) for tower, h in zip(self.towers, task_reps)], dim=-1)

    def forward(self, user_idx: Tensor, item_idx: Tensor, user_side: Tensor, item_genres: Tensor,
                item_content: Tensor, user_dense: Tensor, item_dense: Tensor, hist_item_idx: Tensor,
                hist_mask: Tensor, target_me: Tensor, hist_me: Tensor, me_mask: Tensor) -> Tensor:
        id_rep = self.idrec(user_idx, item_idx, user_side, item_genres, item_content, user_dense, item_dense,
                            hist_item_idx, hist_mask)
        return self._head(id_rep, self.me(target_me, hist_me, me_mask))

    def forward_catalog(self, user_idx: Tensor, item_idx: Tensor, user_side: Tensor, item_genres: Tensor,
                        item_content: Tensor, user_dense: Tensor, item_dense: Tensor, hist_item_idx: Tensor,
                        hist_mask: Tensor, me_table: Tensor, target_row: Tensor, hist_row: Tensor,
                        me_mask: Tensor) -> Tensor:
        """:meth:`forward` with the ME rows gathered from ``me_table`` f32 ``[N, me_dim]`` by ``target_row``
        int64 ``[B]`` / ``hist_row`` int64 ``[B, L']`` -> logits f32 ``[B, 2]``."""
        id_rep = self.idrec(user_idx, item_idx, user_side, item_genres, item_content, user_dense, item_dense,
                            hist_item_idx, hist_mask)
        return self._head(id_rep, self.me.forward_catalog(me_table, target_row, hist_row, me_mask))
