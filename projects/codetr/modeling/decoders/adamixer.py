"""AdaMixer's decoder layer (Gao et al., CVPR 2022), the layer of DEQDet's g and f (ICCV 2023).

A query is a content vector (N, Q, C) and a position, its box as (x, y, z, r) in pixels of the
network input (``codetr.modeling.coders``). One layer:

1. self-attention over the queries of an image: query = key = value = ``content + pe`` where
   ``pe`` is the sine embedding of (x / 1000, y / 1000, z, r) (C / 4 channels per coordinate,
   ``xyzr_position_embedding``); the residual adds the attention output to ``content + pe``
   (mmcv's MultiheadAttention, as the official layer uses it); a per-head bias
   ``tau_h * log(IoF(box_i, box_j) + 1e-7)`` on the attention logits (``iof_attention_bias``,
   ``tau`` learnable, initialised U(0, 4)); LayerNorm;
2. adaptive 3-d sampling of the feature pyramid around each box
   (``codetr.layers.adaptive_sampling``) and adaptive mixing with a residual
   (``codetr.layers.adaptive_mixing``); LayerNorm;
3. FFN with a residual; LayerNorm.

The class and box heads (``AdaMixerHead``: Linear + LayerNorm + ReLU blocks, then a Linear) read
the layer's output; the box head gives (dx, dy, dz, dr), applied with
``codetr.modeling.coders.refine_xyzr``.

Layer interface (the ``QueryDecoder`` one): ``forward(content, query_pos, reference, enc,
attn_mask) -> content`` with ``reference`` (N, Q, 4) xyzr in pixels (detached inside the layer:
no gradient flows through positions, as in the official layers), ``query_pos`` (N, Q, C) the
position embedding (``XYZRSinePosition`` of the reference) or None to compute it here,
``enc`` the ``EncoderOutput`` whose memory is sampled (its pyramid view ``enc.memory_maps()``, L
maps (N, C, H_l, W_l) with the layer's ``strides``; AdaMixer has no encoder:
``EncoderOutput.from_levels`` of the neck's maps; padded positions should hold zeros,
``codetr.layers.adaptive_sampling.zero_padding``, for batched inference to equal single-image
inference), ``attn_mask`` None or bool (Q, Q) / (N * heads, Q, Q), True =
blocked.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from codetr.layers.adaptive_mixing import AdaptiveMixing
from codetr.layers.adaptive_sampling import AdaptiveSampling3D
from codetr.layers.transformer_blocks import FFN
from codetr.modeling.coders import xyzr_to_xyxy

__all__ = [
    "AdaMixerDecoderLayer",
    "AdaMixerHead",
    "XYZRSinePosition",
    "iof_attention_bias",
    "xyzr_position_embedding",
]


def xyzr_position_embedding(xyzr: Tensor, embed_dim: int = 256, temperature: float = 10000.0) -> Tensor:
    """(..., 4) xyzr in pixels -> (..., embed_dim) fp32 sine embedding.

    Coordinates (x / 1000, y / 1000, z, r), each embedded with ``embed_dim / 4`` channels
    ``v / T^(2 floor(i / 2) / F)``, sine at even and cosine at odd channels; concatenated in the
    order x, y, z, r.
    """
    if embed_dim % 8:
        raise ValueError(f"xyzr_position_embedding: embed_dim must be a multiple of 8, got {embed_dim}")
    feats = embed_dim // 4
    coords = xyzr.float() / xyzr.new_tensor([1000.0, 1000.0, 1.0, 1.0], dtype=torch.float32)
    i = torch.arange(feats, dtype=torch.float32, device=xyzr.device)
    freq = temperature ** (2 * torch.div(i, 2, rounding_mode="floor") / feats)
    angles = coords[..., None] / freq  # (..., 4, F)
    embed = torch.stack([angles[..., 0::2].sin(), angles[..., 1::2].cos()], -1).flatten(-2)
    return embed.flatten(-2)


class XYZRSinePosition(nn.Module):
    """Parameter-free query-position module: ``xyzr_position_embedding`` of the reference (the
    ``ref_point_head`` of an AdaMixer decoder). forward: (N, Q, 4) xyzr -> (N, Q, embed_dim)."""

    def __init__(self, embed_dim: int = 256):
        super().__init__()
        self.embed_dim = embed_dim

    def forward(self, xyzr: Tensor) -> Tensor:
        return xyzr_position_embedding(xyzr, self.embed_dim)


def iof_attention_bias(boxes: Tensor, tau: Tensor, eps: float = 1e-7) -> Tensor:
    """Per-head attention-logit bias ``tau_h * log(IoF(i, j) + eps)``.

    IoF(i, j) = area(box_i & box_j) / area(box_i) (intersection over the *query* box i; the area
    clamped below at 1e-6 as mmdet's ``bbox_overlaps(mode="iof")``).

    Args:
        boxes: (N, Q, 4) xyxy. tau: (H,).
    Returns:
        (N, H, Q, Q), entry [n, h, i, j] the bias of query i attending to key j.
    """
    lt = torch.maximum(boxes[:, :, None, :2], boxes[:, None, :, :2])
    rb = torch.minimum(boxes[:, :, None, 2:], boxes[:, None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)  # (N, Q, Q)
    area = (boxes[..., 2:] - boxes[..., :2]).prod(-1).clamp(min=1e-6)
    iof = inter / area[:, :, None]
    return (iof + eps).log()[:, None] * tau.view(1, -1, 1, 1)


def _xavier_linear(module: nn.Module) -> None:
    """Every nn.Linear below ``module``: PyTorch's default reset, then a Xavier-uniform weight
    (AdaMixer's initialisation of all its linear layers; biases keep the default reset)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            m.reset_parameters()
            nn.init.xavier_uniform_(m.weight)


class AdaMixerHead(nn.Module):
    """``num_fcs`` x (Linear C -> C, LayerNorm, ReLU), then Linear C -> ``out_dim``.

    ``fcs`` (the blocks, a Sequential) and ``fc`` (the last linear). Initialisation: Xavier-uniform
    weights; ``prior_prob`` given: the last bias at the focal prior ``-log((1 - p) / p)`` (class
    head); ``zero_last``: the last layer zero (box head: the first prediction is the query's box).
    """

    def __init__(self, embed_dim: int, out_dim: int, num_fcs: int = 1, prior_prob: Optional[float] = None,
                 zero_last: bool = False):
        super().__init__()
        blocks = []
        for _ in range(num_fcs):
            blocks += [nn.Linear(embed_dim, embed_dim), nn.LayerNorm(embed_dim), nn.ReLU(inplace=True)]
        self.fcs = nn.Sequential(*blocks)
        self.fc = nn.Linear(embed_dim, out_dim)
        _xavier_linear(self)
        if prior_prob is not None:
            nn.init.constant_(self.fc.bias, -math.log((1 - prior_prob) / prior_prob))
        if zero_last:
            nn.init.zeros_(self.fc.weight)
            nn.init.zeros_(self.fc.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.fcs(x))


class AdaMixerDecoderLayer(nn.Module):
    """One AdaMixer layer (see the module docstring).

    Args:
        embed_dim: C, the query content channels.
        num_heads: self-attention heads.
        ffn_dim: FFN hidden channels.
        feat_channels: channels of the feature maps (``embed_dim`` by default).
        num_groups: G, channel groups of sampling and mixing.
        in_points: P_in, points sampled per group (AdaMixer 32, DEQDet 64).
        out_points: P_out of the spatial mixing (128).
        strides: strides of the sampled levels (``enc.memory_maps()``).
        tau: level-weight temperature of the 3-d sampling (2).
        dropout: attention and FFN dropout (0 in both papers).
        sampling_impl: "ms_deform_attn" or "grid_sample" (``adaptive_sampling_3d``).
    """

    def __init__(
        self,
        embed_dim: int = 256,
        num_heads: int = 8,
        ffn_dim: int = 2048,
        feat_channels: Optional[int] = None,
        num_groups: int = 4,
        in_points: int = 32,
        out_points: int = 128,
        strides: Sequence[float] = (4, 8, 16, 32),
        tau: float = 2.0,
        dropout: float = 0.0,
        sampling_impl: str = "ms_deform_attn",
    ):
        super().__init__()
        feat_channels = embed_dim if feat_channels is None else feat_channels
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.self_attn = nn.MultiheadAttention(embed_dim, num_heads, dropout=dropout, batch_first=True)
        self.iof_tau = nn.Parameter(torch.empty(num_heads))
        self.norm1 = nn.LayerNorm(embed_dim)
        self.sampling = AdaptiveSampling3D(embed_dim, num_groups, in_points, strides, tau, sampling_impl)
        self.mixing = AdaptiveMixing(feat_channels, embed_dim, num_groups, in_points, out_points)
        self.norm2 = nn.LayerNorm(embed_dim)
        self.ffn = FFN(embed_dim, ffn_dim, dropout)
        self.norm3 = nn.LayerNorm(embed_dim)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The official initialisation: Xavier-uniform weights of every linear layer (biases at
        PyTorch's default reset, the attention's input-projection bias 0), then the sampling
        offsets' grid / -1 biases and the mixing generator's zero weight, ``iof_tau`` U(0, 4)."""
        nn.init.xavier_uniform_(self.self_attn.in_proj_weight)
        nn.init.zeros_(self.self_attn.in_proj_bias)
        _xavier_linear(self)
        self.sampling.reset_parameters()
        nn.init.zeros_(self.mixing.parameter_generator.weight)
        nn.init.uniform_(self.iof_tau, 0.0, 4.0)

    def attention_bias(self, reference: Tensor, attn_mask: Optional[Tensor]) -> Tensor:
        """(N * heads, Q, Q) float logit bias: the IoF bias of the reference boxes, -inf where
        ``attn_mask`` (bool (Q, Q) or (N * heads, Q, Q), True = blocked) blocks."""
        n, q = reference.shape[:2]
        with torch.no_grad():
            log_iof = iof_attention_bias(xyzr_to_xyxy(reference), reference.new_ones(self.num_heads))
        bias = (log_iof * self.iof_tau.view(1, -1, 1, 1)).flatten(0, 1)  # (N * H, Q, Q)
        if attn_mask is not None:
            bias = bias.masked_fill(attn_mask, float("-inf"))
        return bias

    def forward(
        self,
        content: Tensor,
        query_pos: Optional[Tensor],
        reference: Tensor,
        enc,
        attn_mask: Optional[Tensor] = None,
    ) -> Tensor:
        """content (N, Q, C); query_pos (N, Q, C) or None; reference (N, Q, 4) xyzr pixels;
        ``enc.memory`` (N, S, C_feat) over L levels. Returns the new content (N, Q, C)."""
        reference = reference.detach()
        if query_pos is None:
            query_pos = xyzr_position_embedding(reference, self.embed_dim)
        q = content + query_pos.to(content.dtype)
        bias = self.attention_bias(reference, attn_mask).to(q.dtype)
        attn = self.self_attn(q, q, q, attn_mask=bias, need_weights=False)[0]
        content = self.norm1(q + attn)
        sampled = self.sampling(enc.memory_maps(), content, reference, enc.memory)
        content = self.norm2(self.mixing(sampled, content))
        return self.norm3(self.ffn(content))
