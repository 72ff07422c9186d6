"""PPM: the ID-free, pre-trained plug-in CTR model (Gao et al., "PPM: A Pre-trained Plug-in Model for
Click-through Rate Prediction", WWW'24 companion, arXiv 2403.10049).

PPM scores a (user, target item) pair from multi-modal (ME) item features only: the frozen text + image
encoder outputs of the target and of the user's last ``L`` clicked items. It is pre-trained on clicks, then
*plugged into* the ID-based model (URM, :mod:`ppm_platform.models.urm`).

Caching split (paper §"plug-in" / DESIGN.md §4): the heavy lower layers are frozen after pre-training and
their outputs are cached as feature views, so serving runs no Transformer:

=========================== ============================== ======================================
module                      status in URM                  cached as
=========================== ============================== ======================================
:class:`PPMItemTower`       frozen                         ``ppm_item_cache`` (item, ``[d]``)
:class:`PPMSequenceEncoder` frozen                         ``ppm_user_cache`` (user, ts, ``[L*d]``)
:class:`PPMReadout`         trainable ("PPM's light top")  -- (runs inside the URM graph)
``head``                    not used by URM                --
=========================== ============================== ======================================
"""

from __future__ import annotations

import math
from typing import Any

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from ppm_platform.config import EncoderSettings, PPMHyperParams, Settings
from ppm_platform.models.layers import MLP, DotAttentionPooling

#: Hidden width of the item tower MLP (me_dim -> 128 -> d).
ITEM_TOWER_HIDDEN = 128
#: Longest time interval the time buckets resolve (about 10 years, in seconds); older ages share the last bucket.
MAX_AGE_S = 10 * 365.25 * 86400.0


class PPMConfig(PPMHyperParams):
    """PPM's config: the hyper-parameters of :class:`~ppm_platform.config.PPMHyperParams` (``d_model``,
    ``n_layers``, ``n_heads``, ``ff_dim``, ``n_time_buckets``, ``readout_hidden``, ``dropout``; set under
    ``ppm`` in the settings) plus the widths the data gives. Build it from settings with :meth:`from_settings`.

    Attributes:
        me_dim: width of the multi-modal (ME) item feature (default: the default encoders',
            :attr:`~ppm_platform.config.EncoderSettings.me_dim`).
        max_len: longest behaviour sequence ``L`` (size of the position embedding).

    Raises:
        pydantic.ValidationError (a ValueError): ``d_model`` not divisible by ``n_heads``, or
        ``n_time_buckets < 2``.
    """

    me_dim: int = Field(default_factory=lambda: EncoderSettings().me_dim)
    max_len: int = 20

    @model_validator(mode="after")
    def _check_shapes(self) -> "PPMConfig":
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        if self.n_time_buckets < 2:
            raise ValueError(f"n_time_buckets={self.n_time_buckets} must be >= 2")
        return self

    @classmethod
    def from_settings(cls, settings: Settings, me_dim: int) -> "PPMConfig":
        """The PPM config of ``settings`` (``settings.ppm``'s hyper-parameters, ``settings.sequence.max_len``)
        for ME features of width ``me_dim`` (the ME table's columns). The one place a PPM config is built
        from settings."""
        hyper = settings.ppm.model_dump(include=set(PPMHyperParams.model_fields))
        return cls(**hyper, me_dim=me_dim, max_len=settings.sequence.max_len)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples as lists); :meth:`from_dict` inverts it."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PPMConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ``TypeError`` (a config from another version)."""
        extra = set(d) - set(cls.model_fields)
        if extra:
            raise TypeError(f"unknown PPMConfig field(s) {sorted(extra)}")
        return cls.model_validate(d)


def time_bucket_boundaries(n_buckets: int, max_age_s: float = MAX_AGE_S) -> Tensor:
    """Geometric bucket boundaries for behaviour ages: ``n_buckets - 1`` values from 1 s to ``max_age_s``.

    Bucket 0 holds ages < 1 s (and padding), bucket ``n_buckets - 1`` ages >= ``max_age_s``. Geometric
    boundaries on the age = uniform boundaries on log(age), i.e. the "bucketised log age" of the design.

    Returns:
        float32 ``[n_buckets - 1]``, increasing.
    """
    return torch.logspace(0.0, math.log10(max_age_s), n_buckets - 1, dtype=torch.float64).to(torch.float32)


class PPMItemTower(nn.Module):
    """Item tower: projects an item's ME feature to a ``d``-dim item vector.
    LayerNorm(me_dim) -> MLP(me_dim -> 128 -> d) -> LayerNorm. The input LayerNorm puts the text part
    (unit-norm MiniLM, ~0.05 per dim) and the image part (EfficientNet pooled activations, O(1) per dim) on
    one scale, so neither modality dominates the first layer.

    FROZEN after pre-training; its output is cached per item as the ``ppm_item_cache`` feature view.

    Shapes:
        forward(me f32 ``[..., me_dim]``) -> f32 ``[..., d]``.
    """

    def __init__(self, cfg: PPMConfig):
        super().__init__()
        self.in_norm = nn.LayerNorm(cfg.me_dim)
        self.mlp = MLP(cfg.me_dim, [ITEM_TOWER_HIDDEN, cfg.d_model], dropout=cfg.dropout, final_activation=False)
        self.norm = nn.LayerNorm(cfg.d_model)

    def forward(self, me: Tensor) -> Tensor:
        return self.norm(self.mlp(self.in_norm(me)))


class PPMSequenceEncoder(nn.Module):
    """Bidirectional Transformer over the user's clicked-item sequence (PPM paper: multi-layer bidirectional
    Transformer with position and time-interval encodings).

    Tokens = item vector + learned position embedding (position 0 = most recent behaviour; sequences are
    most-recent-first, left-aligned, zero padded) + embedding of the bucketised behaviour age. No causal
    mask: every behaviour attends to every other valid one.

    FROZEN after pre-training; its output is cached per (user, as-of time), flattened to ``L*d``, as the
    ``ppm_user_cache`` feature view. Ages are measured against the cache row's own as-of time.

    Shapes:
        forward(hist_item_vec f32 ``[B, L, d]``, hist_age_s f32 ``[B, L]`` (seconds), hist_mask f32 ``[B, L]``
        (1 = valid)) -> f32 ``[B, L, d]``, exactly zero at masked positions (deterministic caches). A row with
        no valid position gives all zeros, never NaN. ``L <= max_len``.
    """

    def __init__(self, cfg: PPMConfig):
        super().__init__()
        self.cfg = cfg
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.d_model)
        self.time_emb = nn.Embedding(cfg.n_time_buckets, cfg.d_model)
        # a buffer so the boundaries travel with the weights (and with the model_version hash)
        self.time_boundaries: Tensor
        self.register_buffer("time_boundaries", time_bucket_boundaries(cfg.n_time_buckets))
        layer = nn.TransformerEncoderLayer(
            d_model=cfg.d_model, nhead=cfg.n_heads, dim_feedforward=cfg.ff_dim, dropout=cfg.dropout,
            batch_first=True, norm_first=True,
        )
        # norm_first needs a final LayerNorm; nested tensors are off so padded outputs are dense and plain
        self.encoder = nn.TransformerEncoder(layer, num_layers=cfg.n_layers, norm=nn.LayerNorm(cfg.d_model),
                                             enable_nested_tensor=False)

    def time_buckets(self, hist_age_s: Tensor) -> Tensor:
        """int64 ``[B, L]`` bucket index in ``[0, n_time_buckets)`` of each age (seconds; negative/NaN -> 0).

        A comparison-count instead of ``torch.bucketize`` so the same code exports to ONNX if ever needed.
        """
        age = hist_age_s.to(torch.float32).unsqueeze(-1)
        return (age >= self.time_boundaries).sum(dim=-1)

    def forward(self, hist_item_vec: Tensor, hist_age_s: Tensor, hist_mask: Tensor) -> Tensor:
        L = hist_item_vec.shape[1]
        pos = torch.arange(L, device=hist_item_vec.device)
        tokens = hist_item_vec + self.pos_emb(pos).unsqueeze(0) + self.time_emb(self.time_buckets(hist_age_s))
        pad = hist_mask <= 0                                    # True = ignore
        # a row with no valid behaviour would make every attention row -inf -> NaN: unmask it entirely
        # (its outputs are zeroed below and the readout masks them anyway)
        pad = pad & ~pad.all(dim=-1, keepdim=True)
        out = self.encoder(tokens, src_key_padding_mask=pad)
        return out * hist_mask.unsqueeze(-1).to(out.dtype)


class PPMReadout(nn.Module):
    """Target-aware readout (PPM's light top, trained inside URM).

    ``pooled = sum_l softmax_l((W_q item) . (W_k seq_l) / sqrt(d)) seq_l`` over valid positions, then
    ``rep = MLP([pooled, item, pooled * item]) `` (``3d -> readout_hidden``, ReLU).

    Shapes:
        forward(item_vec f32 ``[B, d]``, seq f32 ``[B, L, d]``, seq_mask f32 ``[B, L]``) -> f32 ``[B, R]``,
        ``R = out_dim = readout_hidden``. An all-masked row pools to zero and stays finite.
    """

    def __init__(self, cfg: PPMConfig):
        super().__init__()
        d = cfg.d_model
        self.attn = DotAttentionPooling(d, d, d)
        self.mlp = MLP(3 * d, [cfg.readout_hidden], dropout=cfg.dropout)
        self.out_dim = cfg.readout_hidden

    def forward(self, item_vec: Tensor, seq: Tensor, seq_mask: Tensor) -> Tensor:
        pooled, _ = self.attn(item_vec, seq, seq, seq_mask)
        return self.mlp(torch.cat([pooled, item_vec, pooled * item_vec], dim=-1))


class PPM(nn.Module):
    """The ID-free CTR model pre-trained on click (PPM paper), organised for the plug-in caching split.

    Submodules: ``item_tower`` (:class:`PPMItemTower`), ``seq_encoder`` (:class:`PPMSequenceEncoder`),
    ``readout`` (:class:`PPMReadout`), ``head`` (``Linear(R, 1)``).

    Caching split (paper §"plug-in": heavy lower layers frozen and cached, light top trained with IDRec):
    after pre-training, :meth:`frozen_modules` (item tower + sequence encoder) are frozen and their outputs
    precomputed: :meth:`encode_items` per item -> ``ppm_item_cache``; :meth:`encode_sequence` over the
    encoded history per (user, as-of time) -> ``ppm_user_cache``. :meth:`top_modules` (readout + head) are
    the light top: URM copies the readout (``URM.load_ppm_top``) and trains it jointly with IDRec, reading
    only the cached vectors. ``forward(...) == logit_from_cache(encode_items(target_me),
    encode_sequence(encode_items(hist_me), hist_age_s, hist_mask), hist_mask)``.
    """

    def __init__(self, cfg: PPMConfig):
        super().__init__()
        self.cfg = cfg
        self.item_tower = PPMItemTower(cfg)
        self.seq_encoder = PPMSequenceEncoder(cfg)
        self.readout = PPMReadout(cfg)
        self.head = nn.Linear(self.readout.out_dim, 1)

    def encode_items(self, me: Tensor) -> Tensor:
        """Item vectors (cached as ``ppm_item_cache``). me f32 ``[..., me_dim]`` -> f32 ``[..., d]``."""
        return self.item_tower(me)

    def encode_sequence(self, hist_item_vec: Tensor, hist_age_s: Tensor, hist_mask: Tensor) -> Tensor:
        """Sequence encoding (cached as ``ppm_user_cache``). ``[B, L, d]``, ``[B, L]``, ``[B, L]`` -> f32 ``[B, L, d]``."""
        return self.seq_encoder(hist_item_vec, hist_age_s, hist_mask)

    def logit_from_cache(self, item_vec: Tensor, seq: Tensor, seq_mask: Tensor) -> Tensor:
        """Click logit from cached vectors. item_vec f32 ``[B, d]``, seq f32 ``[B, L, d]``, seq_mask f32 ``[B, L]``
        -> f32 ``[B]``."""
        return self.head(self.readout(item_vec, seq, seq_mask)).squeeze(-1)

    def forward(self, target_me: Tensor, hist_me: Tensor, hist_age_s: Tensor, hist_mask: Tensor) -> Tensor:
        """Full ID-free path. target_me f32 ``[B, me_dim]``, hist_me f32 ``[B, L, me_dim]``, hist_age_s f32
        ``[B, L]``, hist_mask f32 ``[B, L]`` -> click logit f32 ``[B]``."""
        item_vec = self.encode_items(target_me)
        seq = self.encode_sequence(self.encode_items(hist_me), hist_age_s, hist_mask)
        return self.logit_from_cache(item_vec, seq, hist_mask)

    def frozen_modules(self) -> list[nn.Module]:
        """The cached part: ``[item_tower, seq_encoder]`` (frozen after pre-training)."""
        return [self.item_tower, self.seq_encoder]

    def top_modules(self) -> list[nn.Module]:
        """The light top: ``[readout, head]`` (the readout is what URM trains)."""
        return [self.readout, self.head]
