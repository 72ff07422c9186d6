"""Shared building blocks for PPM, IDRec, MMoE and URM.

Everything here is ONNX-exportable (no data-dependent control flow, no boolean indexing, no
``torch.bucketize``) because the URM graph that is served through onnxruntime is built from these blocks.

Sources:
    * masked softmax attention pooling: scaled dot-product attention (Vaswani et al., NeurIPS'17) with the
      masking convention used throughout this package (see :func:`masked_softmax`);
    * :class:`DINAttention`: Deep Interest Network, Zhou et al., KDD'18 (local activation unit over
      ``[q, k, q - k, q * k]``);
    * :class:`CrossNetV2`: DCN-V2, Wang et al., WWW'21 ("DCN V2: Improved Deep & Cross Network"), full-rank
      cross layer ``x_{l+1} = x_0 * (W x_l + b) + x_l``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

#: Added to the scores of masked positions before the softmax. A large finite number (not ``-inf``) so an
#: all-masked row gives a uniform softmax instead of NaN; the result is then zeroed by the mask anyway.
MASK_FILL = 1e9
#: Guards the renormalisation of an all-masked row (sum of weights 0) against 0/0.
MASK_EPS = 1e-9


def masked_softmax(scores: Tensor, mask: Tensor) -> Tensor:
    """Softmax over the last axis that ignores masked positions and is NaN-free on all-masked rows.

    ``w = softmax(scores + (mask - 1) * 1e9) * mask; w / (sum(w) + 1e-9)``. A row whose mask is all zero
    gets all-zero weights (so a pooled vector over it is the zero vector).

    Args:
        scores: float32 ``[..., L]`` attention logits.
        mask: float32 ``[..., L]``, 1 = valid position, 0 = padding (same shape as ``scores``).

    Returns:
        float32 ``[..., L]`` weights; each row sums to 1 over its valid positions, or is all zero.
    """
    mask = mask.to(scores.dtype)
    w = torch.softmax(scores + (mask - 1.0) * MASK_FILL, dim=-1) * mask
    return w / (w.sum(dim=-1, keepdim=True) + MASK_EPS)


def attention_pool(weights: Tensor, values: Tensor) -> Tensor:
    """Weighted sum of ``values`` along the sequence axis.

    Args:
        weights: float32 ``[B, L]`` (e.g. from :func:`masked_softmax`).
        values: float32 ``[B, L, D]``.

    Returns:
        float32 ``[B, D]``.
    """
    # a batched matmul rather than (w[..., None] * v).sum(1): one MatMul node in ONNX, same numbers
    return torch.bmm(weights.unsqueeze(1), values).squeeze(1)


class MLP(nn.Module):
    """Stack of ``Linear -> ReLU -> Dropout`` layers.

    Args:
        in_dim: input width.
        dims: output width of each layer (may be empty: identity).
        dropout: dropout after each hidden activation.
        final_activation: if False, the last layer is a plain ``Linear`` (for logits / projections).

    Shapes:
        forward(x: float32 ``[..., in_dim]``) -> float32 ``[..., out_dim]`` with ``out_dim = dims[-1]``
        (or ``in_dim`` when ``dims`` is empty).
    """

    def __init__(self, in_dim: int, dims: Sequence[int], dropout: float = 0.0, final_activation: bool = True):
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_dim
        for i, h in enumerate(dims):
            layers.append(nn.Linear(prev, h))
            last = i == len(dims) - 1
            if not last or final_activation:
                layers.append(nn.ReLU())
                if dropout > 0:
                    layers.append(nn.Dropout(dropout))
            prev = h
        self.net = nn.Sequential(*layers)
        self.in_dim = in_dim
        self.out_dim = prev

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class DotAttentionPooling(nn.Module):
    """Target-aware scaled dot-product attention pooling (one head).

    ``q = W_q query``, ``k = W_k keys``, ``w = masked_softmax(q.k / sqrt(d))``, ``pooled = sum_l w_l values_l``.
    Values are the raw ``values`` (no value projection) so the pooled vector stays in the value space
    (PPM readout, DESIGN.md §4).

    Shapes:
        forward(query f32 ``[B, Dq]``, keys f32 ``[B, L, Dk]``, values f32 ``[B, L, Dv]``, mask f32 ``[B, L]``)
        -> (pooled f32 ``[B, Dv]``, weights f32 ``[B, L]``).
    """

    def __init__(self, query_dim: int, key_dim: int, attn_dim: int):
        super().__init__()
        self.w_q = nn.Linear(query_dim, attn_dim)
        self.w_k = nn.Linear(key_dim, attn_dim)
        self.scale = 1.0 / math.sqrt(attn_dim)

    def forward(self, query: Tensor, keys: Tensor, values: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        q = self.w_q(query).unsqueeze(-1)                       # [B, A, 1]
        k = self.w_k(keys)                                      # [B, L, A]
        scores = torch.bmm(k, q).squeeze(-1) * self.scale       # [B, L]
        w = masked_softmax(scores, mask)
        return attention_pool(w, values), w


class DINAttention(nn.Module):
    """DIN local activation unit (Zhou et al., "Deep Interest Network for Click-Through Rate Prediction",
    KDD'18): an MLP scores each behaviour against the target from ``[q, k, q - k, q * k]``.

    Deviation from the paper: by default the scores are normalised with :func:`masked_softmax` (DIN keeps
    raw, unnormalised weights to preserve "interest intensity"); normalising keeps the pooled vector's
    scale independent of the history length, which the short, zero-padded MovieLens histories need.
    ``normalize=False`` gives DIN's original ``sum_l score_l * mask_l * k_l``.

    Shapes:
        forward(query f32 ``[B, E]``, keys f32 ``[B, L, E]``, mask f32 ``[B, L]``) -> pooled f32 ``[B, E]``.
        An all-masked row pools to the zero vector.
    """

    def __init__(self, emb_dim: int, hidden: Sequence[int] = (32,), dropout: float = 0.0, normalize: bool = True):
        super().__init__()
        self.mlp = MLP(4 * emb_dim, [*hidden, 1], dropout=dropout, final_activation=False)
        self.normalize = normalize

    def forward(self, query: Tensor, keys: Tensor, mask: Tensor) -> Tensor:
        q = query.unsqueeze(1).expand_as(keys)                  # [B, L, E]
        feats = torch.cat([q, keys, q - keys, q * keys], dim=-1)
        scores = self.mlp(feats).squeeze(-1)                    # [B, L]
        if self.normalize:
            w = masked_softmax(scores, mask)
        else:
            w = scores * mask.to(scores.dtype)
        return attention_pool(w, keys)


class CrossNetV2(nn.Module):
    """DCN-V2 cross network (Wang et al., "DCN V2: Improved Deep & Cross Network and Practical Lessons for
    Web-scale Learning to Rank Systems", WWW'21), full-rank variant:
    ``x_{l+1} = x_0 * (W_l x_l + b_l) + x_l``.

    Shapes:
        forward(x0 f32 ``[B, D]``) -> f32 ``[B, D]``.
    """

    def __init__(self, in_dim: int, n_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(in_dim, in_dim) for _ in range(n_layers))
        self.out_dim = in_dim

    def forward(self, x0: Tensor) -> Tensor:
        x = x0
        for lin in self.layers:
            x = x0 * lin(x) + x
        return x
