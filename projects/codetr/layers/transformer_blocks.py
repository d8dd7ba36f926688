"""Small transformer building blocks shared by encoders and decoders."""
from __future__ import annotations

import copy
from typing import Optional

from torch import Tensor, nn

__all__ = ["FFN", "clones", "xavier_uniform_matrices"]


def clones(module: nn.Module, n: int) -> nn.ModuleList:
    """n independent deep copies of module."""
    return nn.ModuleList(copy.deepcopy(module) for _ in range(n))


def xavier_uniform_matrices(*modules: Optional[nn.Module]) -> None:
    """Xavier-uniform on every parameter of at least 2 dimensions of ``modules`` (None skipped), in
    their ``parameters()`` order: the official DETR-family ``_reset_parameters`` / ``init_weights``."""
    for module in modules:
        if module is None:
            continue
        for p in module.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)


class FFN(nn.Module):
    """Linear-ReLU-Dropout-Linear-Dropout with a residual connection (no norm)."""

    def __init__(self, embed_dim: int = 256, ffn_dim: int = 2048, dropout: float = 0.0):
        super().__init__()
        self.linear1 = nn.Linear(embed_dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, embed_dim)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.dropout2(self.linear2(self.dropout1(self.linear1(x).relu())))
