"""Multi-scale deformable attention (Deformable DETR, Zhu et al. 2021): the op and the module.

Public API
----------
``ms_deform_attn(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)``
    The compiled op (``codetr._C``; C++ CPU kernel, CUDA kernel when built with CUDA), registered
    with ``torch.library`` as ``codetr::ms_deform_attn`` (CPU, CUDA, Autograd and fake kernels), so
    it works under ``torch.autograd.gradcheck`` and ``torch.compile``. Falls back to the reference,
    with one warning, when the extension was not built.
``ms_deform_attn_reference(...)``
    The same computation in plain PyTorch (``grid_sample`` per level).
``MSDeformAttn``
    The attention module: value projection, sampling offsets, attention weights, output projection.

Shapes (N batch, S flattened value positions over all levels, M heads, D channels per head,
Q queries, L levels, P points per level and head):

- ``value``               (N, S, M, D)
- ``spatial_shapes``      (L, 2) int64, (H, W) of every level, with S == sum(H * W)
- ``level_start_index``   (L,) int64, start of every level in S: [0, H0*W0, H0*W0 + H1*W1, ...]
- ``sampling_locations``  (N, Q, M, L, P, 2), normalised (x, y); (0, 0) is the top-left corner of
  the top-left pixel and (1, 1) the bottom-right corner of the bottom-right pixel
- ``attention_weights``   (N, Q, M, L, P)
- returns                 (N, Q, M * D)

Sampling is bilinear with zeros outside the map, ``align_corners=False``: exactly
``F.grid_sample(..., mode="bilinear", padding_mode="zeros", align_corners=False)``.

dtypes: ``value`` may be float32, float64, float16 or bfloat16; ``sampling_locations`` and
``attention_weights`` have the dtype of ``value``, or float32 when ``value`` is a half type
(coordinates and accumulation are always computed in float32 or float64).
"""
from __future__ import annotations

import math
import warnings
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ms_deform_attn", "ms_deform_attn_reference", "MSDeformAttn", "extension_available"]

_HALF_TYPES = (torch.float16, torch.bfloat16)
_FLOAT_TYPES = (torch.float32, torch.float64) + _HALF_TYPES


# --------------------------------------------------------------------------------------------
# Input validation (user-facing boundary: every message names the offending value)
# --------------------------------------------------------------------------------------------
def _check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    named = {
        "value": value,
        "spatial_shapes": spatial_shapes,
        "level_start_index": level_start_index,
        "sampling_locations": sampling_locations,
        "attention_weights": attention_weights,
    }
    for name, t in named.items():
        if not isinstance(t, Tensor):
            raise TypeError(f"ms_deform_attn: {name} must be a torch.Tensor, got {type(t).__name__}")
    devices = {name: t.device for name, t in named.items()}
    if len(set(devices.values())) > 1:
        raise ValueError(f"ms_deform_attn: all tensors must be on one device, got {devices}")
    if value.dim() != 4:
        raise ValueError(f"ms_deform_attn: value must be (N, S, M, D), got shape {tuple(value.shape)}")
    if spatial_shapes.dim() != 2 or spatial_shapes.shape[1] != 2:
        raise ValueError(
            f"ms_deform_attn: spatial_shapes must be (L, 2) as (H, W) per level, got shape {tuple(spatial_shapes.shape)}"
        )
    if spatial_shapes.dtype not in (torch.int64, torch.int32) or level_start_index.dtype not in (torch.int64, torch.int32):
        raise ValueError(
            "ms_deform_attn: spatial_shapes and level_start_index must be integer tensors, got "
            f"{spatial_shapes.dtype} and {level_start_index.dtype}"
        )
    N, S, M, D = value.shape
    L = spatial_shapes.shape[0]
    if level_start_index.shape != (L,):
        raise ValueError(
            f"ms_deform_attn: level_start_index must be (L,) = ({L},), got shape {tuple(level_start_index.shape)}"
        )
    if sampling_locations.dim() != 6 or sampling_locations.shape[-1] != 2:
        raise ValueError(
            "ms_deform_attn: sampling_locations must be (N, Q, M, L, P, 2) with (x, y) in the last dim, got shape "
            f"{tuple(sampling_locations.shape)}"
        )
    n, Q, m, l, P, _ = sampling_locations.shape
    if (n, m, l) != (N, M, L):
        raise ValueError(
            f"ms_deform_attn: sampling_locations {tuple(sampling_locations.shape)} does not match "
            f"(N, Q, M, L, P, 2) with N={N}, M={M} from value {tuple(value.shape)} and L={L} from spatial_shapes"
        )
    if tuple(attention_weights.shape) != (N, Q, M, L, P):
        raise ValueError(
            f"ms_deform_attn: attention_weights must be (N, Q, M, L, P) = {(N, Q, M, L, P)}, got shape "
            f"{tuple(attention_weights.shape)}"
        )
    if value.dtype not in _FLOAT_TYPES:
        raise ValueError(f"ms_deform_attn: value dtype must be one of {_FLOAT_TYPES}, got {value.dtype}")
    if sampling_locations.dtype != attention_weights.dtype:
        raise ValueError(
            "ms_deform_attn: sampling_locations and attention_weights must have one dtype, got "
            f"{sampling_locations.dtype} and {attention_weights.dtype}"
        )
    allowed = (value.dtype, torch.float32) if value.dtype in _HALF_TYPES else (value.dtype,)
    if sampling_locations.dtype not in allowed:
        raise ValueError(
            f"ms_deform_attn: sampling_locations/attention_weights dtype {sampling_locations.dtype} does not agree "
            f"with value dtype {value.dtype} (expected one of {allowed})"
        )
    if torch.compiler.is_compiling():
        return  # the data-dependent checks below need real values
    shapes = spatial_shapes.tolist()
    if any(h <= 0 or w <= 0 for h, w in shapes):
        raise ValueError(f"ms_deform_attn: every level needs H > 0 and W > 0, got spatial_shapes {shapes}")
    sizes = [h * w for h, w in shapes]
    if sum(sizes) != S:
        raise ValueError(
            f"ms_deform_attn: value has S={S} positions but spatial_shapes {shapes} sum to {sum(sizes)} (sum of H*W)"
        )
    starts = [sum(sizes[:i]) for i in range(L)]
    if level_start_index.tolist() != starts:
        raise ValueError(
            f"ms_deform_attn: level_start_index {level_start_index.tolist()} does not match spatial_shapes "
            f"{shapes}; expected {starts}"
        )


# --------------------------------------------------------------------------------------------
# Reference implementation
# --------------------------------------------------------------------------------------------
def ms_deform_attn_reference(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """Plain-PyTorch multi-scale deformable attention (``grid_sample`` per level); see the module doc."""
    _check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    N, S, M, D = value.shape
    _, Q, _, L, P, _ = sampling_locations.shape
    if N == 0 or Q == 0:
        return value.new_zeros(N, Q, M * D)
    compute_dtype = sampling_locations.dtype
    shapes = [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    value_per_level = value.to(compute_dtype).split([h * w for h, w in shapes], dim=1)
    grids = 2 * sampling_locations - 1  # grid_sample wants [-1, 1]
    sampled = []
    for level, (h, w) in enumerate(shapes):
        # (N, H*W, M, D) -> (N*M, D, H, W)
        v = value_per_level[level].permute(0, 2, 3, 1).reshape(N * M, D, h, w)
        # (N, Q, M, P, 2) -> (N*M, Q, P, 2)
        g = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        sampled.append(F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False))
    # (N*M, D, Q, L*P) weighted by (N*M, 1, Q, L*P)
    sampled = torch.stack(sampled, dim=-2).flatten(-2)
    weights = attention_weights.transpose(1, 2).reshape(N * M, 1, Q, L * P)
    out = (sampled * weights).sum(-1).view(N, M * D, Q)
    return out.transpose(1, 2).contiguous().to(value.dtype)


# --------------------------------------------------------------------------------------------
# The compiled op and its torch.library registrations (autograd + fake kernels)
# --------------------------------------------------------------------------------------------
try:
    from codetr import _C  # registers codetr::ms_deform_attn{,_backward}

    _EXTENSION_ERROR: Optional[BaseException] = None
except ImportError as e:  # pragma: no cover - exercised only without a build
    _C = None
    _EXTENSION_ERROR = e

_warned_fallback = False


def extension_available() -> bool:
    """True when the compiled op ``codetr._C`` was built and imported."""
    return _EXTENSION_ERROR is None


def cuda_kernels_available() -> bool:
    """True when ``codetr._C`` was built with its CUDA kernels."""
    return extension_available() and bool(_C.built_with_cuda())


if extension_available():

    @torch.library.register_fake("codetr::ms_deform_attn")
    def _ms_deform_attn_fake(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
        N, _, M, D = value.shape
        Q = sampling_locations.shape[1]
        return value.new_empty(N, Q, M * D)

    @torch.library.register_fake("codetr::ms_deform_attn_backward")
    def _ms_deform_attn_backward_fake(
        grad_output, value, spatial_shapes, level_start_index, sampling_locations, attention_weights
    ):
        return (
            torch.empty_like(value),
            torch.empty_like(sampling_locations),
            torch.empty_like(attention_weights),
        )

    def _setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    def _backward(ctx, grad_output):
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights = ctx.saved_tensors
        grad_value, grad_loc, grad_attn = torch.ops.codetr.ms_deform_attn_backward(
            grad_output.contiguous(), value, spatial_shapes, level_start_index, sampling_locations, attention_weights
        )
        return grad_value, None, None, grad_loc, grad_attn

    torch.library.register_autograd("codetr::ms_deform_attn", _backward, setup_context=_setup_context)


def ms_deform_attn(
    value: Tensor,
    spatial_shapes: Tensor,
    level_start_index: Tensor,
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """Multi-scale deformable attention with the compiled kernels; see the module doc for shapes.

    Returns (N, Q, M * D) in the dtype of ``value``. Gradients flow to ``value``,
    ``sampling_locations`` and ``attention_weights``.
    """
    global _warned_fallback
    if not extension_available():
        if not _warned_fallback:
            warnings.warn(
                f"codetr._C is not built ({_EXTENSION_ERROR}); ms_deform_attn falls back to the slower "
                "ms_deform_attn_reference. Run `make` targets or `pip install -e .` to build it.",
                RuntimeWarning,
                stacklevel=2,
            )
            _warned_fallback = True
        return ms_deform_attn_reference(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    _check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    if value.is_cuda and not cuda_kernels_available():
        raise RuntimeError(
            "ms_deform_attn: value is on CUDA but codetr._C was built without CUDA kernels; rebuild with a GPU "
            "visible or FORCE_CUDA=1"
        )
    # Coordinates and weights are computed in the accumulation type (float32 for half types).
    acc_dtype = torch.float64 if value.dtype == torch.float64 else torch.float32
    return torch.ops.codetr.ms_deform_attn(
        value.contiguous(),
        spatial_shapes.to(torch.int64).contiguous(),
        level_start_index.to(torch.int64).contiguous(),
        sampling_locations.to(acc_dtype).contiguous(),
        attention_weights.to(acc_dtype).contiguous(),
    )


# --------------------------------------------------------------------------------------------
# The module
# --------------------------------------------------------------------------------------------
class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention module (Deformable DETR, section 4.1).

    Args:
        embed_dim: channels C of queries and values; must be divisible by ``num_heads``.
        num_heads: M.
        num_levels: L.
        num_points: P sampling points per head and level.
        use_reference_op: run ``ms_deform_attn_reference`` instead of the compiled op (for
            benchmarks and debugging).
    """

    def __init__(
        self,
        embed_dim: int = 256,
        num_heads: int = 8,
        num_levels: int = 4,
        num_points: int = 4,
        use_reference_op: bool = False,
    ):
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"MSDeformAttn: embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.num_levels = num_levels
        self.num_points = num_points
        self.use_reference_op = use_reference_op
        self.sampling_offsets = nn.Linear(embed_dim, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(embed_dim, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(embed_dim, embed_dim)
        self.output_proj = nn.Linear(embed_dim, embed_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable DETR's initialisation: head h's offsets start on a ray at angle 2*pi*h/M,
        point p at distance p + 1 (in pixels of its level); uniform attention; Xavier projections."""
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.num_heads, dtype=torch.float32) * (2.0 * math.pi / self.num_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], dim=-1)  # (M, 2)
        grid = grid / grid.abs().max(dim=-1, keepdim=True).values
        grid = grid.view(self.num_heads, 1, 1, 2).repeat(1, self.num_levels, self.num_points, 1)
        grid = grid * torch.arange(1, self.num_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(
        self,
        query: Tensor,
        reference_points: Tensor,
        value: Tensor,
        spatial_shapes: Tensor,
        level_start_index: Tensor,
        key_padding_mask: Optional[Tensor] = None,
    ) -> Tensor:
        """
        Args:
            query: (N, Q, C), positional embedding already added by the caller.
            reference_points: (N, Q, L, 2) normalised (x, y) points, or (N, Q, L, 4) normalised
                (cx, cy, w, h) boxes; with boxes the offsets are scaled by 0.5 * box size / P.
            value: (N, S, C) flattened multi-level features.
            spatial_shapes: (L, 2) int64 (H, W) per level.
            level_start_index: (L,) int64.
            key_padding_mask: optional (N, S) bool, True at padded positions (they contribute 0).

        Returns:
            (N, Q, C)
        """
        N, Q, C = query.shape
        S = value.shape[1]
        M, L, P = self.num_heads, self.num_levels, self.num_points
        if C != self.embed_dim or value.shape[-1] != self.embed_dim:
            raise ValueError(
                f"MSDeformAttn: expected {self.embed_dim} channels, got query {tuple(query.shape)} and value "
                f"{tuple(value.shape)}"
            )
        if spatial_shapes.shape[0] != L:
            raise ValueError(f"MSDeformAttn: built for {L} levels, spatial_shapes has {spatial_shapes.shape[0]}")
        if reference_points.dim() != 4 or reference_points.shape[:3] != (N, Q, L) or reference_points.shape[-1] not in (2, 4):
            raise ValueError(
                f"MSDeformAttn: reference_points must be (N, Q, L, 2) or (N, Q, L, 4) = ({N}, {Q}, {L}, 2|4), got "
                f"{tuple(reference_points.shape)}"
            )

        value = self.value_proj(value)
        if key_padding_mask is not None:
            value = value.masked_fill(key_padding_mask[..., None], 0.0)
        value = value.view(N, S, M, C // M)

        offsets = self.sampling_offsets(query).view(N, Q, M, L, P, 2)
        weights = self.attention_weights(query).view(N, Q, M, L * P).softmax(-1).view(N, Q, M, L, P)
        if reference_points.shape[-1] == 2:
            # offsets are in pixels of each level: divide by (W, H)
            normalizer = torch.stack([spatial_shapes[:, 1], spatial_shapes[:, 0]], dim=-1).to(offsets.dtype)
            locations = reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        else:
            locations = (
                reference_points[:, :, None, :, None, :2]
                + offsets / P * reference_points[:, :, None, :, None, 2:] * 0.5
            )
        # Under autocast the projections may come out in a half type: sampling geometry and
        # weights are kept in float32 (float64 for double values), as the op expects.
        coord_dtype = torch.float64 if value.dtype == torch.float64 else torch.float32
        attend = ms_deform_attn_reference if self.use_reference_op else ms_deform_attn
        out = attend(
            value, spatial_shapes, level_start_index, locations.to(coord_dtype), weights.to(coord_dtype)
        )
        return self.output_proj(out)
