"""IDRec: the ID-based CTR model that PPM plugs into (the paper's "Base").

Embeddings for user id, item id (shared with the clicked-item history), user side features and the item's
genre multi-hot; DIN attention (Zhou et al., KDD'18) of the target item over the clicked-item ID sequence;
the standardized point-in-time counters of the user and the item (``user_stats`` / ``item_stats``: what every
production ranker reads, and what cold entities are scored by); a DCN-V2 cross network (Wang et al.,
WWW'21) over the concatenation, then a DNN (stacked DCN-V2).

Cold entities: the out-of-vocabulary row of each id table is trained (minimum-count vocabulary and ID
dropout, :func:`ppm_platform.training.urm_train.id_dropout`), and an item without content features
(``item_content = 0``) gets a learned no-content genre vector instead of an empty multi-hot (trained by
content dropout; DropoutNet, Volkovs et al., NeurIPS'17).

Semantic ids (optional, ``sid_cardinalities``): one trainable embedding per residual level of the item's
semantic-id codes (:mod:`ppm_platform.features.semantic_ids`), concatenated into ``x0``; items that share codes
share those rows, so a cold item's codes carry what warm items with similar content taught them (QARM,
Kuaishou CIKM'25). An item without content features reads the OOV row of each level (content dropout trains it).
"""

from __future__ import annotations

import torch
from pydantic import model_validator
from torch import Tensor, nn

from ppm_platform.config import IDRecHyperParams
from ppm_platform.models.layers import MLP, CrossNetV2, DINAttention

#: Reserved indices of every categorical vocabulary.
PAD_IDX = 0
OOV_IDX = 1


def safe_index(idx: Tensor, vocab_size: int) -> Tensor:
    """Map indices outside ``[0, vocab_size)`` to :data:`OOV_IDX` (int64, same shape).

    A stale vocabulary at serving time would otherwise make the embedding Gather fail (torch) or read out
    of bounds (onnxruntime); ``torch.where`` keeps it a branch-free, exportable op.
    """
    return torch.where((idx < 0) | (idx >= vocab_size), torch.full_like(idx, OOV_IDX), idx)


class IDRecConfig(IDRecHyperParams):
    """IDRec's config: the hyper-parameters of :class:`~ppm_platform.config.IDRecHyperParams` (``emb_dim``,
    ``cross_layers``, ``dnn_hidden``, ``dropout``; set under ``urm`` in the settings) plus the input widths the
    data gives.

    Attributes:
        n_users, n_items: vocabulary sizes INCLUDING the 2 reserved indices (0 = padding, 1 = OOV).
        user_side_cardinalities: vocabulary size (incl. the 2 reserved) of each categorical user side feature.
        n_genres: width ``G`` of the item genre multi-hot.
        n_user_dense, n_item_dense: widths ``Du`` / ``Di`` of the dense counter inputs (0 = none).
        max_len: length ``L`` of the clicked-item ID sequence.
        sid_cardinalities: vocabulary size (incl. the 2 reserved) of each semantic-id level; () = no semantic ids.

    Raises:
        pydantic.ValidationError (a ValueError): a vocabulary size below 2.
    """

    n_users: int
    n_items: int
    user_side_cardinalities: tuple[int, ...]
    n_genres: int
    n_user_dense: int = 0
    n_item_dense: int = 0
    max_len: int = 20
    sid_cardinalities: tuple[int, ...] = ()

    @model_validator(mode="after")
    def _reserved_indices(self) -> "IDRecConfig":
        if (self.n_users < 2 or self.n_items < 2 or any(c < 2 for c in self.user_side_cardinalities)
                or any(c < 2 for c in self.sid_cardinalities)):
            raise ValueError("vocabulary sizes include the 2 reserved indices (0 pad, 1 OOV): each must be >= 2")
        return self


class IDRec(nn.Module):
    """ID-based ranking backbone (Base model).

    ``x0 = [user, item, side_1..side_S, genres, din(item, history), user_dense, item_dense]`` (embeddings of
    ``emb_dim``; padding index 0 embeds to zero; ``genres`` is the no-content vector where
    ``item_content == 0``; with semantic ids, one embedding per level appended), then ``DNN(CrossNetV2(x0))``.

    Shapes (forward):
        user_idx int64 ``[B]``, item_idx int64 ``[B]``, user_side int64 ``[B, S]``, item_genres f32 ``[B, G]``,
        item_content f32 ``[B]`` (1 = content features present), user_dense f32 ``[B, Du]``, item_dense f32
        ``[B, Di]`` (``Du = cfg.n_user_dense``, ``Di = cfg.n_item_dense``, may be 0), hist_item_idx int64
        ``[B, L]``, hist_mask f32 ``[B, L]``, item_sid int64 ``[B, Ls]`` (``Ls = len(cfg.sid_cardinalities)``;
        required when > 0, ignored otherwise) -> rep f32 ``[B, out_dim]`` (``out_dim = dnn_hidden[-1]``, or the
        cross width when ``dnn_hidden`` is empty).
        Indices: 0 = padding, 1 = out-of-vocabulary, >= 2 known; indices outside the vocabulary are mapped to 1.
    """

    def __init__(self, cfg: IDRecConfig):
        super().__init__()
        e = cfg.emb_dim
        self.n_users, self.n_items = cfg.n_users, cfg.n_items
        self.side_cards = tuple(cfg.user_side_cardinalities)
        self.user_emb = nn.Embedding(cfg.n_users, e, padding_idx=PAD_IDX)
        # one item table for the target and the history, so clicks on an item train its target embedding too
        self.item_emb = nn.Embedding(cfg.n_items, e, padding_idx=PAD_IDX)
        self.side_embs = nn.ModuleList(nn.Embedding(c, e, padding_idx=PAD_IDX) for c in self.side_cards)
        self.genre_proj = nn.Linear(cfg.n_genres, e, bias=False)
        #: the genre vector of an item without content features (learned; zero at init)
        self.no_content = nn.Parameter(torch.zeros(e))
        self.din = DINAttention(e, hidden=(2 * e,), dropout=0.0)
        self.sid_cards = tuple(cfg.sid_cardinalities)
        self.sid_embs = nn.ModuleList(nn.Embedding(c, e, padding_idx=PAD_IDX) for c in self.sid_cards)
        x0_dim = e * (4 + len(self.side_cards) + len(self.sid_cards)) + cfg.n_user_dense + cfg.n_item_dense
        self.cross = CrossNetV2(x0_dim, cfg.cross_layers)
        self.dnn = MLP(x0_dim, list(cfg.dnn_hidden), dropout=cfg.dropout)
        self.out_dim = self.dnn.out_dim

    def forward(self, user_idx: Tensor, item_idx: Tensor, user_side: Tensor, item_genres: Tensor,
                item_content: Tensor, user_dense: Tensor, item_dense: Tensor, hist_item_idx: Tensor,
                hist_mask: Tensor, item_sid: Tensor | None = None) -> Tensor:
        u = self.user_emb(safe_index(user_idx, self.n_users))
        it = self.item_emb(safe_index(item_idx, self.n_items))
        hist = self.item_emb(safe_index(hist_item_idx, self.n_items))            # [B, L, e]
        sides = [emb(safe_index(user_side[:, j], c)) for j, (emb, c) in enumerate(zip(self.side_embs, self.side_cards))]
        has = item_content.to(u.dtype).unsqueeze(-1)
        g = has * self.genre_proj(item_genres.to(u.dtype)) + (1.0 - has) * self.no_content
        interest = self.din(it, hist, hist_mask)
        sids = []
        if self.sid_embs:
            if item_sid is None:
                raise ValueError("this IDRec embeds semantic ids: item_sid is required")
            # no content features, no codes: the OOV row (what an item without a semantic-id row gets)
            sid = torch.where(item_content.unsqueeze(-1) > 0, item_sid, torch.full_like(item_sid, OOV_IDX))
            sids = [emb(safe_index(sid[:, j], c)) for j, (emb, c) in enumerate(zip(self.sid_embs, self.sid_cards))]
        x0 = torch.cat([u, it, *sides, g, interest, user_dense.to(u.dtype), item_dense.to(u.dtype), *sids], dim=-1)
        return self.dnn(self.cross(x0))
