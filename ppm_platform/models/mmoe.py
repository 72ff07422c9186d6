"""Multi-gate Mixture-of-Experts (Ma et al., "Modeling Task Relationships in Multi-task Learning with
Multi-gate Mixture-of-Experts", KDD'18): shared experts, one softmax gate per task."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ppm_platform.config import MMoEHyperParams
from ppm_platform.models.layers import MLP


class MMoEConfig(MMoEHyperParams):
    """MMoE's config: the hyper-parameters of :class:`~ppm_platform.config.MMoEHyperParams` (``n_experts``,
    ``expert_hidden``, ``dropout``) plus the number of tasks.

    Attributes:
        n_tasks: number of tasks (one gate each).
    """

    n_tasks: int = 2


class MMoE(nn.Module):
    """MMoE layer.

    Args:
        in_dim: input width.
        cfg: ``n_experts`` shared experts (each ``MLP(in_dim -> expert_hidden)``, ReLU, ``dropout`` after),
            ``expert_hidden`` (= width of each task's output), ``n_tasks`` gates.

    Shapes:
        forward(x f32 ``[B, in_dim]``) -> list of ``n_tasks`` tensors f32 ``[B, expert_hidden]``, task ``t`` =
        ``sum_k softmax(G_t x)_k * expert_k(x)``.
    """

    def __init__(self, in_dim: int, cfg: MMoEConfig):
        super().__init__()
        self.experts = nn.ModuleList(MLP(in_dim, [cfg.expert_hidden], dropout=cfg.dropout)
                                     for _ in range(cfg.n_experts))
        self.gates = nn.ModuleList(nn.Linear(in_dim, cfg.n_experts) for _ in range(cfg.n_tasks))
        self.n_tasks = cfg.n_tasks
        self.out_dim = cfg.expert_hidden

    def forward(self, x: Tensor) -> list[Tensor]:
        experts = torch.stack([e(x) for e in self.experts], dim=1)          # [B, K, H]
        outs = []
        for gate in self.gates:
            w = torch.softmax(gate(x), dim=-1).unsqueeze(1)                  # [B, 1, K]
            outs.append(torch.bmm(w, experts).squeeze(1))                   # [B, H]
        return outs
