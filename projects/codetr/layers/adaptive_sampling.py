"""AdaMixer's adaptive 3-d feature sampling (Gao et al., CVPR 2022; used by DEQDet).

Every query samples P points per channel group from a feature pyramid, in a 3-d space of
(x, y, scale): the points' (x, y) are offsets scaled by the query's box around its centre, their
scale z (log2 pixels) is the box's ``z`` plus an offset, and a point reads every level l with the
weight ``softmax_l(-(z - log2 stride_l)^2 / tau)``.

Coordinates: pixels of the network input (top-left origin; the padded batch's frame). A level of
stride s with a (H_l, W_l) map covers ``W_l * s`` x ``H_l * s`` pixels; its pixel (i, j) centre is at
``((j + 0.5) s, (i + 0.5) s)``. Sampling is bilinear with zeros outside the map, i.e.
``F.grid_sample(..., align_corners=False, padding_mode="zeros")`` at ``(x / (W_l s), y / (H_l s))``
(the normalised convention of ``ms_deform_attn``), exactly as the official implementation samples.
A point therefore reads the same value whatever the map's padded extent, provided padded
positions hold zeros (``zero_padding``): that makes batched and single-image results equal.

Shapes: N images, Q queries, G channel groups, P points per group, C channels (C % G == 0),
L levels.

- ``sampling_points_3d(xyzr (N, Q, 4), offsets (N, Q, G, P, 3)) -> (N, Q, G, P, 3)``
- ``level_weights(z (...), strides, tau) -> (..., L)``
- ``adaptive_sampling_3d(features, strides, points, tau, impl) -> (N, Q, G, P, C // G)``
- ``AdaptiveSampling3D``: the offset generator (a linear layer of the query content) + the above.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .ms_deform_attn import ms_deform_attn

__all__ = [
    "AdaptiveSampling3D",
    "adaptive_sampling_3d",
    "level_weights",
    "sampling_points_3d",
    "zero_padding",
]

IMPLS = ("grid_sample", "ms_deform_attn")


def sampling_points_3d(xyzr: Tensor, offsets: Tensor) -> Tensor:
    """Sampling points of every query.

    Args:
        xyzr: (N, Q, 4) query boxes as (x, y, z, r) in pixels (see
            ``codetr.modeling.coders``): w = 2^(z - r/2), h = 2^(z + r/2).
        offsets: (N, Q, G, P, 3) (dx, dy, dz): dx, dy in units of the box's w, h; dz in log2 units.
    Returns:
        (N, Q, G, P, 3): ``(x + dx w, y + dy h, z + dz)``.
    """
    z, r = xyzr[..., 2:3], xyzr[..., 3:4]
    wh = torch.exp2(torch.cat([z - 0.5 * r, z + 0.5 * r], -1))[:, :, None, None]  # (N, Q, 1, 1, 2)
    xy = xyzr[:, :, None, None, :2] + offsets[..., :2] * wh
    return torch.cat([xy, z[:, :, None, None] + offsets[..., 2:3]], -1)


def level_weights(z: Tensor, strides: Sequence[float], tau: float = 2.0) -> Tensor:
    """(...,) scales (log2 pixels) -> (..., L) ``softmax_l(-(z - log2 stride_l)^2 / tau)``."""
    log_strides = torch.tensor([math.log2(s) for s in strides], dtype=z.dtype, device=z.device)
    return torch.softmax(-(z[..., None] - log_strides).square() / tau, dim=-1)


def zero_padding(features: Sequence[Tensor], masks: Sequence[Tensor]) -> list:
    """Zero every level's padded positions: L maps (N, C, H_l, W_l), masks (N, H_l, W_l) bool
    (True at padding). Samples that fall on padding then read what a lone, unpadded image reads."""
    return [f.masked_fill(m[:, None], 0.0) for f, m in zip(features, masks)]


def _check(features: Sequence[Tensor], strides: Sequence[float], points: Tensor) -> None:
    if len(features) != len(strides) or len(features) == 0:
        raise ValueError(
            f"adaptive_sampling_3d: {len(features)} feature levels for {len(strides)} strides {list(strides)}; "
            "expected one stride per level (and at least one level)"
        )
    if points.dim() != 5 or points.shape[-1] != 3:
        raise ValueError(
            f"adaptive_sampling_3d: points must be (N, Q, G, P, 3) (x, y, z), got shape {tuple(points.shape)}"
        )
    n, _, g = points.shape[:3]
    for lvl, f in enumerate(features):
        if f.dim() != 4 or f.shape[0] != n or f.shape[1] % g != 0 or f.shape[1] != features[0].shape[1]:
            raise ValueError(
                f"adaptive_sampling_3d: level {lvl} features {tuple(f.shape)}; expected (N={n}, C, H, W) with the "
                f"same C on every level and C divisible by the G={g} groups of points {tuple(points.shape)}"
            )


def adaptive_sampling_3d(
    features: Sequence[Tensor],
    strides: Sequence[float],
    points: Tensor,
    tau: float = 2.0,
    impl: str = "grid_sample",
    flat: Optional[Tensor] = None,
) -> Tensor:
    """Sample every point bilinearly on every level, weighted by the level weights.

    Args:
        features: L maps (N, C, H_l, W_l); group g reads channels [g C/G, (g+1) C/G).
        strides: L strides in pixels.
        points: (N, Q, G, P, 3) (x, y, z) in pixels / log2 pixels (``sampling_points_3d``).
        tau: level-weight temperature.
        impl: "grid_sample" (``F.grid_sample`` per level) or "ms_deform_attn" (the compiled
            deformable-attention op, every point a query of its own and the level weights as its
            attention weights). Same result (see ``tests/layers/test_adaptive_sampling.py``).
        flat: optional (N, S, C), the same maps flattened level after level (S = sum H_l W_l, e.g.
            ``EncoderOutput.memory``): the "ms_deform_attn" path reads it instead of flattening
            ``features`` again (the caller guarantees they hold the same values).
    Returns:
        (N, Q, G, P, C // G) in the features' dtype.
    """
    _check(features, strides, points)
    if impl == "grid_sample":
        return _sample_grid_sample(features, strides, points, tau)
    if impl == "ms_deform_attn":
        return _sample_ms_deform_attn(features, strides, points, tau, flat)
    raise ValueError(f"adaptive_sampling_3d: impl must be one of {IMPLS}, got {impl!r}")


def _sample_grid_sample(features, strides, points, tau):
    n, q, g, p, _ = points.shape
    c = features[0].shape[1]
    dtype = features[0].dtype
    weights = level_weights(points[..., 2], strides, tau).to(dtype)  # (N, Q, G, P, L)
    out = None
    for lvl, (f, s) in enumerate(zip(features, strides)):
        h, w = f.shape[-2:]
        extent = points.new_tensor([w * s, h * s])
        # grid (N * G, Q, P, 2) in [-1, 1] (align_corners=False)
        grid = (points[..., :2] / extent * 2 - 1).permute(0, 2, 1, 3, 4).reshape(n * g, q, p, 2).to(dtype)
        sampled = F.grid_sample(f.reshape(n * g, c // g, h, w), grid, mode="bilinear", padding_mode="zeros",
                                align_corners=False)  # (N * G, C/G, Q, P)
        sampled = sampled.view(n, g, c // g, q, p).permute(0, 3, 1, 4, 2) * weights[..., lvl, None]
        out = sampled if out is None else out + sampled
    return out


def _sample_ms_deform_attn(features, strides, points, tau, flat=None):
    n, q, g, p, _ = points.shape
    c = features[0].shape[1]
    if flat is None:
        flat = torch.cat([f.flatten(2) for f in features], 2).transpose(1, 2)
    elif flat.shape != (n, sum(f.shape[-2] * f.shape[-1] for f in features), c):
        raise ValueError(
            f"adaptive_sampling_3d: flat {tuple(flat.shape)} is not the (N, S, C) flattening of features "
            f"{[tuple(f.shape) for f in features]}"
        )
    value = flat.reshape(n, -1, g, c // g)
    shapes = torch.tensor([tuple(f.shape[-2:]) for f in features], dtype=torch.long, device=value.device)
    start = torch.cat([shapes.new_zeros(1), shapes.prod(1).cumsum(0)[:-1]])
    acc = torch.float64 if value.dtype == torch.float64 else torch.float32
    pts = points.to(acc).permute(0, 1, 3, 2, 4).reshape(n, q * p, g, 3)  # every point a query
    extent = torch.stack([shapes[:, 1], shapes[:, 0]], -1).to(acc) * pts.new_tensor(list(strides))[:, None]
    locations = (pts[:, :, :, None, :2] / extent)[:, :, :, :, None]  # (N, QP, G, L, 1, 2)
    weights = level_weights(pts[..., 2], strides, tau)[..., None]  # (N, QP, G, L, 1)
    out = ms_deform_attn(value, shapes, start, locations, weights)  # (N, QP, G * C/G)
    return out.view(n, q, p, g, c // g).transpose(2, 3)


class AdaptiveSampling3D(nn.Module):
    """Per query, a linear layer of its content gives (dx, dy, dz) for P points in each of G
    groups; the points are placed around the query's box (``sampling_points_3d``) and sampled
    (``adaptive_sampling_3d``).

    Initialisation (AdaMixer's): weight 0; (dx, dy) biases on a regular sqrt(P) x sqrt(P) grid of
    cell centres over [-0.5, 0.5]^2 when P is a square (point i * sqrt(P) + j at
    (c_i, c_j)), else uniform in [-0.5, 0.5]; dz bias -1 (one octave finer than the box).

    Args:
        content_dim: query content channels.
        num_groups: G. num_points: P. strides: the levels' strides. tau: level temperature.
        impl: see ``adaptive_sampling_3d``; the compiled op by default (with the pyramid passed
            pre-flattened, forward + backward 2.5-3.9x faster on the CPU,
            ``benchmarks/adamixer_sampling.md``).
    forward(features, content (N, Q, content_dim), xyzr (N, Q, 4)) -> (N, Q, G, P, C // G).
    """

    def __init__(
        self,
        content_dim: int = 256,
        num_groups: int = 4,
        num_points: int = 32,
        strides: Sequence[float] = (4, 8, 16, 32),
        tau: float = 2.0,
        impl: str = "ms_deform_attn",
    ):
        super().__init__()
        if impl not in IMPLS:
            raise ValueError(f"AdaptiveSampling3D: impl must be one of {IMPLS}, got {impl!r}")
        self.num_groups = num_groups
        self.num_points = num_points
        self.strides = tuple(strides)
        self.tau = tau
        self.impl = impl
        self.offsets = nn.Linear(content_dim, num_groups * num_points * 3)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        nn.init.zeros_(self.offsets.weight)
        bias = self.offsets.bias.view(self.num_groups, self.num_points, 3)
        side = math.isqrt(self.num_points)
        if side * side == self.num_points:
            centres = torch.linspace(-0.5, 0.5, side + 1)[:-1] + 0.5 / side
            bias[..., 0] = centres.repeat_interleave(side)
            bias[..., 1] = centres.repeat(side)
        else:
            nn.init.uniform_(bias[..., :2], -0.5, 0.5)
        bias[..., 2] = -1.0

    def forward(self, features: Sequence[Tensor], content: Tensor, xyzr: Tensor, flat: Optional[Tensor] = None
                ) -> Tensor:
        """features: L maps (N, C, H_l, W_l); content (N, Q, content_dim); xyzr (N, Q, 4) pixels;
        flat: optionally the maps flattened (see ``adaptive_sampling_3d``)."""
        n, q = content.shape[:2]
        offsets = self.offsets(content).view(n, q, self.num_groups, self.num_points, 3)
        acc = torch.float64 if xyzr.dtype == torch.float64 else torch.float32  # pixels need fp32 under AMP
        points = sampling_points_3d(xyzr.to(acc), offsets.to(acc))
        return adaptive_sampling_3d(features, self.strides, points, self.tau, self.impl, flat)
