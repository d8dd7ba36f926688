"""DINO decoder: self-attention over all query groups (with a group mask), deformable
cross-attention on 4-d reference boxes, FFN; iterative box refinement with look-forward-twice.

The same module, with ``query_pos="given", post_norm=False``, is Co-Deformable-DETR's decoder
(official ``CoDeformableDetrTransformerDecoder``, Deformable-DETR++): query positions fixed by
the caller for every layer, and the heads applied to the raw layer outputs.
"""
from __future__ import annotations

import math
from typing import Dict, Optional

import torch
from torch import Tensor, nn

from codetr.layers import MSDeformAttn
from codetr.layers.mlp import MLP
from codetr.layers.position_encoding import get_sine_pos_embed

from .utils import FFN, clones, inverse_sigmoid

__all__ = ["DINODecoderLayer", "DINODecoder"]

QUERY_POS_SOURCES = ("ref_point_head", "given")


class DINODecoderLayer(nn.Module):
    """self-attn -> add & norm -> deformable cross-attn -> add & norm -> FFN -> add & norm."""

    def __init__(
        self,
        embed_dim: int = 256,
        num_heads: int = 8,
        num_levels: int = 4,
        num_points: int = 4,
        ffn_dim: int = 2048,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.num_heads = num_heads
        self.self_attn = nn.MultiheadAttention(embed_dim, num_heads, dropout=dropout, batch_first=True)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(embed_dim)
        self.cross_attn = MSDeformAttn(embed_dim, num_heads, num_levels, num_points)
        self.dropout2 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(embed_dim)
        self.ffn = FFN(embed_dim, ffn_dim, dropout)
        self.norm3 = nn.LayerNorm(embed_dim)

    def forward(self, tgt, query_pos, ref_boxes, memory, spatial_shapes, level_start_index, memory_mask, attn_mask):
        """tgt, query_pos: (N, Q, C); ref_boxes (N, Q, L, 4) in each level's padded frame;
        attn_mask: None, or bool (N * heads, Q, Q), True = may not attend."""
        q = tgt + query_pos
        attn = self.self_attn(q, q, tgt, attn_mask=attn_mask, need_weights=False)[0]
        tgt = self.norm1(tgt + self.dropout1(attn))
        attn = self.cross_attn(tgt + query_pos, ref_boxes, memory, spatial_shapes, level_start_index, memory_mask)
        tgt = self.norm2(tgt + self.dropout2(attn))
        return self.norm3(self.ffn(tgt))


class DINODecoder(nn.Module):
    """``num_layers`` DINO decoder layers with per-layer (unshared) class and box heads.

    Box refinement (look-forward-twice, DINO section 3.5): with ``r_0`` the initial reference,
    layer i refines ``r_{i+1} = sigmoid(bbox_embed_i(o_i) + logit(r_i.detach()))`` (o_i its
    un-normalised output) and the next layer starts from ``r_{i+1}.detach()``. Layer i predicts
    ``b_i = sigmoid(bbox_embed_i(norm(o_i)) + logit(r_i))`` with ``r_i`` *not* detached, so layer
    i's loss also trains layer i-1's box head. ``look_forward_twice=False`` detaches ``r_i``
    (Deformable DETR's box refinement).

    Query positions:
    - ``query_pos="ref_point_head"`` (DINO, Co-DINO): recomputed at every layer from the current
      reference box, ``ref_point_head(sine(r_i))`` (an MLP 2C -> C -> C);
    - ``query_pos="given"`` (Deformable-DETR++, Co-Deformable-DETR): the caller passes one
      ``query_pos`` (N, Q, C) used unchanged by every layer; there is no ``ref_point_head``.

    Args:
        num_layers: decoder layers.
        embed_dim, num_heads, num_levels, num_points, ffn_dim, dropout: layer settings.
        num_classes: K, the class heads' outputs (sigmoid focal classification).
        look_forward_twice: see above.
        query_pos: "ref_point_head" or "given", see above.
        post_norm: apply a final LayerNorm (``norm``, shared by the layers) to every layer's
            output before the class / box heads (DINO); False: the heads read the raw layer
            outputs and the module has no ``norm`` (Deformable-DETR, Co-Deformable-DETR).
    """

    def __init__(
        self,
        num_layers: int = 6,
        embed_dim: int = 256,
        num_heads: int = 8,
        num_levels: int = 4,
        num_points: int = 4,
        ffn_dim: int = 2048,
        dropout: float = 0.0,
        num_classes: int = 80,
        look_forward_twice: bool = True,
        query_pos: str = "ref_point_head",
        post_norm: bool = True,
    ):
        super().__init__()
        if query_pos not in QUERY_POS_SOURCES:
            raise ValueError(f"DINODecoder: query_pos={query_pos!r}; expected one of {QUERY_POS_SOURCES}")
        layer = DINODecoderLayer(embed_dim, num_heads, num_levels, num_points, ffn_dim, dropout)
        self.layers = clones(layer, num_layers)
        self.num_layers = num_layers
        self.embed_dim = embed_dim
        self.look_forward_twice = look_forward_twice
        self.query_pos = query_pos
        self.ref_point_head = MLP(2 * embed_dim, embed_dim, embed_dim, 2) if query_pos == "ref_point_head" else None
        self.norm = nn.LayerNorm(embed_dim) if post_norm else None
        self.class_embed = clones(nn.Linear(embed_dim, num_classes), num_layers)
        self.bbox_embed = clones(MLP(embed_dim, embed_dim, 4, 3), num_layers)
        init_heads(self.class_embed, self.bbox_embed)

    def forward(
        self,
        tgt: Tensor,
        ref_boxes: Tensor,
        memory: Tensor,
        spatial_shapes: Tensor,
        level_start_index: Tensor,
        valid_ratios: Tensor,
        memory_mask: Optional[Tensor] = None,
        attn_mask: Optional[Tensor] = None,
        query_pos: Optional[Tensor] = None,
    ) -> Dict[str, Tensor]:
        """
        Args:
            tgt: (N, Q, C) content queries.
            ref_boxes: (N, Q, 4) initial reference boxes, normalised cxcywh of the unpadded
                image (detached by the caller when they come from the encoder).
            memory: (N, S, C) encoder output; memory_mask (N, S) True at padding.
            spatial_shapes, level_start_index, valid_ratios (N, L, 2): see DINOTransformer.encode.
            attn_mask: None, (Q, Q) or (N, Q, Q) bool, True = query i may not attend to key j.
                A query may always attend to itself (fully blocked rows would give NaN).
            query_pos: (N, Q, C) query positions, required with ``query_pos="given"`` (the same
                tensor for every layer), None with ``"ref_point_head"``.

        Returns:
            dict with "logits" (num_layers, N, Q, K), "boxes" (num_layers, N, Q, 4) normalised
            cxcywh, and "hidden" (num_layers, N, Q, C) decoder states (after ``norm`` if
            ``post_norm``): what the heads read.
        """
        if (query_pos is None) != (self.ref_point_head is not None):
            raise ValueError(
                f"DINODecoder (query_pos={self.query_pos!r}): "
                + ("a query_pos (N, Q, C) is required" if query_pos is None else "got a query_pos it does not use")
            )
        attn_mask = self._expand_attn_mask(attn_mask, tgt.shape[0])
        scale = torch.cat([valid_ratios, valid_ratios], -1)[:, None]  # (N, 1, L, 4)
        out, ref, prev_ref = tgt, ref_boxes, ref_boxes
        hidden, logits, boxes = [], [], []
        for i, layer in enumerate(self.layers):
            if self.ref_point_head is not None:
                # Query position from the box in the unpadded image's frame (detrex embeds the
                # valid-ratio-scaled box instead, which would make it depend on batch padding).
                pos = self.ref_point_head(get_sine_pos_embed(ref, self.embed_dim // 2).to(out.dtype))
            else:
                pos = query_pos
            out = layer(out, pos, ref[:, :, None] * scale, memory, spatial_shapes, level_start_index,
                        memory_mask, attn_mask)
            delta = self.bbox_embed[i](out)
            if self.norm is not None:
                hs = self.norm(out)
                hs_delta = self.bbox_embed[i](hs)
            else:
                hs, hs_delta = out, delta
            hidden.append(hs)
            logits.append(self.class_embed[i](hs))
            boxes.append((hs_delta + inverse_sigmoid(prev_ref)).sigmoid())
            new_ref = (delta + inverse_sigmoid(ref)).sigmoid()
            ref = new_ref.detach()
            prev_ref = new_ref if self.look_forward_twice else ref
        return {"logits": torch.stack(logits), "boxes": torch.stack(boxes), "hidden": torch.stack(hidden)}

    def _expand_attn_mask(self, attn_mask: Optional[Tensor], batch: int) -> Optional[Tensor]:
        """(Q, Q) or (N, Q, Q) bool -> (Q, Q) or (N * heads, Q, Q), diagonal always open."""
        if attn_mask is None:
            return None
        q = attn_mask.shape[-1]
        attn_mask = attn_mask & ~torch.eye(q, dtype=torch.bool, device=attn_mask.device)
        if attn_mask.dim() == 3:
            heads = self.layers[0].num_heads
            attn_mask = attn_mask.repeat_interleave(heads, dim=0)
        return attn_mask


def init_heads(class_embeds, bbox_embeds, prior_prob: float = 0.01) -> None:
    """Focal-loss prior on the class biases; zero last box layer (the first prediction is the
    reference box itself)."""
    bias = -math.log((1 - prior_prob) / prior_prob)
    for cls in class_embeds:
        nn.init.constant_(cls.bias, bias)
    for box in bbox_embeds:
        nn.init.zeros_(box.layers[-1].weight)
        nn.init.zeros_(box.layers[-1].bias)
