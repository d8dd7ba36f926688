"""AdaMixer's adaptive mixing (Gao et al., CVPR 2022; used by DEQDet): each query generates, from
its content, the matrices that mix the features it sampled, over channels then over points.

Per query and channel group g (G groups), with x_g (P_in, C_in) the sampled features:
``M_g`` (C_in, C_out) and ``S_g`` (P_out, P_in) come from one linear layer of the query content;
``y_g = relu(LN(x_g M_g))`` (channel mixing), ``z_g = relu(LN(S_g y_g))`` (spatial mixing), where LN
normalises over the whole (points, channels) matrix without affine parameters; the G matrices
(P_out, C_out) are flattened (group, point, channel order) and projected to the query dimension;
the result is added to the query (residual).

Dims: C_in = feature channels / G; C_out = out_dim / G (out_dim = feature channels by default).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["AdaptiveMixing"]


class AdaptiveMixing(nn.Module):
    """Args:
        in_dim: channels of the sampled features (all groups together).
        query_dim: query content channels.
        num_groups: G.
        in_points: P_in, points sampled per group.
        out_points: P_out.
        out_dim: mixed channels (all groups together); ``in_dim`` by default.

    Parameters: ``parameter_generator`` Linear(query_dim -> G (C_in C_out + P_in P_out)), weight
    initialised to zero (bias left at PyTorch's default: every query starts with the same
    matrices), and ``out_proj`` Linear(G P_out C_out -> query_dim).

    forward(x (N, Q, G, P_in, C_in), query (N, Q, query_dim)) -> (N, Q, query_dim): query + mixed.
    """

    def __init__(
        self,
        in_dim: int = 256,
        query_dim: int = 256,
        num_groups: int = 4,
        in_points: int = 32,
        out_points: int = 128,
        out_dim: Optional[int] = None,
    ):
        super().__init__()
        out_dim = in_dim if out_dim is None else out_dim
        if in_dim % num_groups or out_dim % num_groups:
            raise ValueError(
                f"AdaptiveMixing: in_dim={in_dim} and out_dim={out_dim} must be divisible by num_groups={num_groups}"
            )
        self.num_groups = num_groups
        self.in_points = in_points
        self.out_points = out_points
        self.group_in_dim = in_dim // num_groups
        self.group_out_dim = out_dim // num_groups
        self.channel_params = self.group_in_dim * self.group_out_dim
        self.spatial_params = in_points * out_points
        self.parameter_generator = nn.Linear(query_dim, num_groups * (self.channel_params + self.spatial_params))
        self.out_proj = nn.Linear(num_groups * out_points * self.group_out_dim, query_dim)
        nn.init.zeros_(self.parameter_generator.weight)

    def mixing_matrices(self, query: Tensor):
        """query (N, Q, query_dim) -> M (N, Q, G, C_in, C_out), S (N, Q, G, P_out, P_in)."""
        n, q = query.shape[:2]
        params = self.parameter_generator(query).view(n, q, self.num_groups, -1)
        m, s = params.split([self.channel_params, self.spatial_params], -1)
        return (m.reshape(n, q, self.num_groups, self.group_in_dim, self.group_out_dim),
                s.reshape(n, q, self.num_groups, self.out_points, self.in_points))

    def forward(self, x: Tensor, query: Tensor) -> Tensor:
        n, q, g, p, c = x.shape
        if (g, p, c) != (self.num_groups, self.in_points, self.group_in_dim):
            raise ValueError(
                f"AdaptiveMixing: sampled features {tuple(x.shape)}; expected (N, Q, G={self.num_groups}, "
                f"P_in={self.in_points}, C_in={self.group_in_dim})"
            )
        m, s = self.mixing_matrices(query)
        out = torch.matmul(x, m)
        out = F.relu(F.layer_norm(out, out.shape[-2:]))
        out = torch.matmul(s, out)
        out = F.relu(F.layer_norm(out, out.shape[-2:]))
        return query + self.out_proj(out.reshape(n, q, -1))
