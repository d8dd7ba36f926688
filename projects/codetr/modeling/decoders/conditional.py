"""Conditional cross-attention decoder (Conditional DETR; DAB-DETR and DN-DETR on top of it).

A layer (``ConditionalDecoderLayer``), post-norm:

1. self-attention with separate content / position projections:
   ``q = sa_qcontent_proj(x) + sa_qpos_proj(P)``, ``k = sa_kcontent_proj(x) + sa_kpos_proj(P)``,
   ``v = sa_v_proj(x)``; 8 heads of C / 8; add, ``norm1``.
2. conditional cross-attention on the memory ``m`` with positions ``p_m``:
   ``qc = ca_qcontent_proj(x)``, ``kc = ca_kcontent_proj(m)``, ``kp = ca_kpos_proj(p_m)``,
   ``v = ca_v_proj(m)``; first layer only: ``qc += ca_qpos_proj(P)`` and ``kc += kp``.
   Per head h the query is ``[qc_h | qs_h]`` and the key ``[kc_h | kp_h]`` with
   ``qs = ca_qpos_sine_proj(p_q)`` (p_q the conditional spatial query), so the logit is
   ``(qc_h . kc_h + qs_h . kp_h) / sqrt(2 C / M)``: content and spatial terms decoupled
   (C = 256, M = 8: query/key head dim 64, value head dim 32). add, ``norm2``.
3. FFN ``linear2(drop(act(linear1(x))))``, add, ``norm3``.

P is the positional query (N, Q, C): Conditional DETR's learned query embedding, DAB-DETR's
``ref_point_head(sine(anchor))``. The conditional spatial query ``p_q`` (N, Q, C) comes from a
``ConditionalSpatialQuery`` shared by the layers of a decoder (official key names
``query_scale``, ``ref_anchor_head``)::

    p_q = lambda * sine(reference centre)      lambda = 1 in the first layer, else query_scale(x)

with ``sine`` = [PE(y) | PE(x)] (C / 2 channels each, temperature 10000, scale 2 pi, the
``gen_sineembed_for_position`` layout) and, for DAB-DETR's 4-d anchors (x, y, w, h), the
width/height modulation ``p_q[C/2:] *= w_ref / w`` (the PE(x) half), ``p_q[:C/2] *= h_ref / h``
with ``(w_ref, h_ref) = sigmoid(ref_anchor_head(x))`` (also in the first layer).

Attribute names follow the official releases (``sa_qcontent_proj``, ``cross_attn.out_proj``,
``ca_qpos_sine_proj``, ``norm3``, ...), so a converter only renames prefixes.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from codetr.layers.mlp import MLP
from codetr.layers.position_encoding import get_sine_pos_embed
from codetr.layers.transformer_blocks import xavier_uniform_matrices
from codetr.modeling.coders import BoxCoder, PointCoder
from codetr.modeling.encoders.detr import make_activation
from codetr.modeling.encoders.output import EncoderOutput
from codetr.modeling.queries.positions import BoxSineQueryPosition

from .deformable import init_heads
from .driver import QueryDecoder

__all__ = [
    "ConditionalDecoder",
    "ConditionalDecoderLayer",
    "ConditionalSpatialQuery",
    "HeadAttention",
    "multi_head_attention",
]


def multi_head_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    num_heads: int,
    attn_mask: Optional[Tensor] = None,
    key_padding_mask: Optional[Tensor] = None,
    dropout: Optional[nn.Module] = None,
) -> Tensor:
    """Scaled dot-product attention over already projected q, k, v (no in-projections).

    Args:
        q: (N, Q, M * dq); k: (N, S, M * dq); v: (N, S, M * dv); M = num_heads; head h owns the
            channels ``h * d : (h + 1) * d``; logits are scaled by 1 / sqrt(dq).
        attn_mask: None, (Q, S) or (N * M, Q, S) bool, True = blocked.
        key_padding_mask: None or (N, S) bool, True at padding.
        dropout: applied to the attention weights.
    Returns:
        (N, Q, M * dv). The softmax runs in fp32.
    """
    n, nq, _ = q.shape
    m = num_heads
    q = q.view(n, nq, m, -1)
    k = k.view(n, k.shape[1], m, -1)
    v = v.view(n, v.shape[1], m, -1)
    logits = torch.einsum("nqmd,nsmd->nmqs", q, k).float() / math.sqrt(q.shape[-1])
    if attn_mask is not None:
        mask = attn_mask if attn_mask.dim() == 2 else attn_mask.view(n, m, nq, -1)
        logits = logits.masked_fill(mask, float("-inf"))
    if key_padding_mask is not None:
        logits = logits.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
    weights = logits.softmax(-1).to(v.dtype)
    if dropout is not None:
        weights = dropout(weights)
    return torch.einsum("nmqs,nsmd->nqmd", weights, v).reshape(n, nq, -1)


class HeadAttention(nn.Module):
    """``multi_head_attention`` followed by the output projection (``out_proj`` C -> C, bias 0):
    the official custom MultiheadAttention without in-projections (value dim C)."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        self.dropout = nn.Dropout(dropout)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, q, k, v, attn_mask=None, key_padding_mask=None) -> Tensor:
        return self.out_proj(multi_head_attention(q, k, v, self.num_heads, attn_mask, key_padding_mask, self.dropout))


class ConditionalSpatialQuery(nn.Module):
    """The conditional spatial query p_q of every layer of a decoder (see the module docstring).

    Args:
        embed_dim: C.
        modulate_hw: DAB-DETR's width/height modulation (needs 4-d references).
        temperature: of the sine embedding (10000 in both official releases).
    forward(content (N, Q, C) the layer input, reference (N, Q, R) normalised, R = 2 (x, y) or
    4 (x, y, w, h), first: bool) -> (N, Q, C).
    """

    def __init__(self, embed_dim: int = 256, modulate_hw: bool = False, temperature: float = 10000):
        super().__init__()
        self.embed_dim = embed_dim
        self.temperature = temperature
        self.query_scale = MLP(embed_dim, embed_dim, embed_dim, 2)
        self.ref_anchor_head = MLP(embed_dim, embed_dim, 2, 2) if modulate_hw else None

    def forward(self, content: Tensor, reference: Tensor, first: bool) -> Tensor:
        half = self.embed_dim // 2
        sine = get_sine_pos_embed(reference[..., :2], half, self.temperature).to(content.dtype)  # [PE(y) | PE(x)]
        if not first:
            sine = sine * self.query_scale(content)
        if self.ref_anchor_head is None:
            return sine
        if reference.shape[-1] != 4:
            raise ValueError(f"ConditionalSpatialQuery: modulate_hw needs 4-d references, got {reference.shape[-1]}")
        ref_wh = self.ref_anchor_head(content).sigmoid()
        scale_x = (ref_wh[..., 0] / reference[..., 2])[..., None]
        scale_y = (ref_wh[..., 1] / reference[..., 3])[..., None]
        return torch.cat([sine[..., :half] * scale_y, sine[..., half:] * scale_x], -1)


class ConditionalDecoderLayer(nn.Module):
    """One conditional decoder layer (see the module docstring).

    Args:
        embed_dim, num_heads, ffn_dim, dropout, activation: 256, 8, 2048 and 0.1 / 'relu'
            (Conditional DETR) or 0.0 / 'prelu' (DAB-DETR, DN-DETR).
        is_first: the first layer adds the positional query to the cross-attention's content
            query and the key positions to its content keys; only it owns ``ca_qpos_proj``.

    The ``QueryDecoder`` interface, ``forward(content, query_pos, reference, enc, attn_mask)``,
    takes p_q from the ``ConditionalSpatialQuery`` set with ``use_spatial_query`` (shared by all
    layers of a decoder, owned and registered by the decoder); ``attend`` is the layer with p_q
    and the memory given explicitly.
    """

    def __init__(
        self,
        embed_dim: int = 256,
        num_heads: int = 8,
        ffn_dim: int = 2048,
        dropout: float = 0.1,
        activation: str = "relu",
        is_first: bool = False,
    ):
        super().__init__()
        self.num_heads = num_heads
        self.is_first = is_first
        linear = lambda: nn.Linear(embed_dim, embed_dim)  # noqa: E731
        self.sa_qcontent_proj, self.sa_qpos_proj = linear(), linear()
        self.sa_kcontent_proj, self.sa_kpos_proj = linear(), linear()
        self.sa_v_proj = linear()
        self.self_attn = HeadAttention(embed_dim, num_heads, dropout)
        self.ca_qcontent_proj = linear()
        self.ca_qpos_proj = linear() if is_first else None
        self.ca_kcontent_proj, self.ca_kpos_proj = linear(), linear()
        self.ca_v_proj = linear()
        self.ca_qpos_sine_proj = linear()
        self.cross_attn = HeadAttention(embed_dim, num_heads, dropout)
        self.linear1 = nn.Linear(embed_dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, embed_dim)
        self.activation = make_activation(activation)
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(embed_dim) for _ in range(3))
        self.dropout, self.dropout1, self.dropout2, self.dropout3 = (nn.Dropout(dropout) for _ in range(4))
        self._spatial_query = []  # a borrowed (unregistered) module, see use_spatial_query

    def use_spatial_query(self, module: ConditionalSpatialQuery) -> None:
        """Compute p_q with ``module`` (registered by its owner, not by this layer)."""
        self._spatial_query = [module]

    def forward(
        self, content: Tensor, query_pos: Tensor, reference: Tensor, enc: EncoderOutput, attn_mask=None
    ) -> Tensor:
        """content, query_pos (N, Q, C); reference (N, Q, R) normalised in the unpadded image;
        attn_mask None or bool (Q, Q) / (N * heads, Q, Q), True = blocked. Returns (N, Q, C)."""
        if not self._spatial_query:
            raise RuntimeError("ConditionalDecoderLayer: no spatial query module; call use_spatial_query first")
        query_sine = self._spatial_query[0](content, reference, self.is_first)
        return self.attend(content, query_pos, query_sine, enc.memory, enc.memory_pos, enc.memory_mask, attn_mask)

    def attend(
        self,
        content: Tensor,
        query_pos: Tensor,
        query_sine: Tensor,
        memory: Tensor,
        memory_pos: Tensor,
        memory_mask: Optional[Tensor] = None,
        attn_mask: Optional[Tensor] = None,
    ) -> Tensor:
        """The layer with everything explicit.

        Args:
            content, query_pos: (N, Q, C) the layer input and the positional query P.
            query_sine: (N, Q, C) the conditional spatial query p_q (before ``ca_qpos_sine_proj``).
            memory, memory_pos: (N, S, C) encoder memory and its positional embedding.
            memory_mask: (N, S) bool, True at padding.
            attn_mask: self-attention mask, None or (Q, Q) / (N * heads, Q, Q) bool, True = blocked.
        """
        m = self.num_heads
        q = self.sa_qcontent_proj(content) + self.sa_qpos_proj(query_pos)
        k = self.sa_kcontent_proj(content) + self.sa_kpos_proj(query_pos)
        attn = self.self_attn(q, k, self.sa_v_proj(content), attn_mask=attn_mask)
        x = self.norm1(content + self.dropout1(attn))

        q_content = self.ca_qcontent_proj(x)
        k_content = self.ca_kcontent_proj(memory)
        k_pos = self.ca_kpos_proj(memory_pos)
        if self.is_first:
            q_content = q_content + self.ca_qpos_proj(query_pos)
            k_content = k_content + k_pos
        q_spatial = self.ca_qpos_sine_proj(query_sine)
        q = _concat_heads(q_content, q_spatial, m)
        k = _concat_heads(k_content, k_pos, m)
        attn = self.cross_attn(q, k, self.ca_v_proj(memory), key_padding_mask=memory_mask)
        x = self.norm2(x + self.dropout2(attn))

        ffn = self.linear2(self.dropout(self.activation(self.linear1(x))))
        return self.norm3(x + self.dropout3(ffn))


def _concat_heads(a: Tensor, b: Tensor, num_heads: int) -> Tensor:
    """(N, L, C), (N, L, C) -> (N, L, 2C) with head h holding [a_h | b_h]."""
    n, length, _ = a.shape
    return torch.cat([a.view(n, length, num_heads, -1), b.view(n, length, num_heads, -1)], -1).view(n, length, -1)


class ConditionalDecoder(QueryDecoder):
    """``num_layers`` conditional decoder layers with shared heads and a shared final LayerNorm.

    - Conditional DETR: ``ref_dim=2`` (``PointCoder``), no refinement (every layer keeps the
      reference point), positions given by the matching group (the learned query embedding);
      ``ref_point_head=True`` adds ``MLP(sine(point))`` (C -> C -> C) for groups without
      positions (denoising groups on 2-d points).
    - DAB-DETR / DN-DETR: ``ref_dim=4`` (``BoxCoder``), ``refine=True`` (look-forward-twice:
      layer l's box is decoded from the undetached anchor A_l, the next layer gets it detached),
      ``ref_point_head=True`` (MLP 2C -> C -> C of sine(anchor), every layer), ``modulate_hw=True``.

    Args:
        num_layers, embed_dim, num_heads, ffn_dim, dropout, activation: layer settings.
        num_classes: K of the (shared) class head.
        ref_dim: 2 (points) or 4 (boxes).
        refine: refine references layer by layer.
        ref_point_head: see above.
        modulate_hw: DAB-DETR's width/height-modulated spatial query.
        temperature: of the spatial query's sine embedding.
    """

    def __init__(
        self,
        num_layers: int = 6,
        embed_dim: int = 256,
        num_heads: int = 8,
        ffn_dim: int = 2048,
        dropout: float = 0.1,
        activation: str = "relu",
        num_classes: int = 80,
        ref_dim: int = 2,
        refine: bool = False,
        ref_point_head: bool = False,
        modulate_hw: bool = False,
        temperature: float = 10000,
    ):
        if ref_dim not in (2, 4):
            raise ValueError(f"ConditionalDecoder: ref_dim must be 2 (points) or 4 (boxes), got {ref_dim}")
        if modulate_hw and ref_dim != 4:
            raise ValueError("ConditionalDecoder: modulate_hw needs 4-d references (ref_dim=4)")
        layers = [
            ConditionalDecoderLayer(embed_dim, num_heads, ffn_dim, dropout, activation, is_first=(i == 0))
            for i in range(num_layers)
        ]
        position = BoxSineQueryPosition(embed_dim, ref_dim) if ref_point_head else None
        super().__init__(
            layers,
            nn.Linear(embed_dim, num_classes),
            MLP(embed_dim, embed_dim, 4, 3),
            box_coder=BoxCoder() if ref_dim == 4 else PointCoder(),
            ref_point_head=position,
            norm=nn.LayerNorm(embed_dim),
            refine=refine,
            look_forward_twice=True,
        )
        self.spatial_query = ConditionalSpatialQuery(embed_dim, modulate_hw, temperature)
        for layer in self.layers:
            layer.use_spatial_query(self.spatial_query)
        self.embed_dim = embed_dim
        self.init_weights()

    def init_weights(self) -> None:
        """The official initialisation: xavier-uniform on every matrix of the layers, the spatial
        query's MLPs and the position head (attention output biases 0); focal prior on the class
        bias and a zero last box layer (the first prediction is the reference itself)."""
        xavier_uniform_matrices(self.layers, self.spatial_query, self.ref_point_head)
        for layer in self.layers:
            nn.init.zeros_(layer.self_attn.out_proj.bias)
            nn.init.zeros_(layer.cross_attn.out_proj.bias)
        init_heads([self.class_embed], [self.bbox_embed])
