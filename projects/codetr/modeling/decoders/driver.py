"""The decoder driver: runs query groups through a stack of decoder layers and owns the loop.

What differs between papers is plugged in:
- the layer: any module ``layer(content, query_pos, reference, enc, attn_mask) -> content`` with
  content, query_pos (N, Q, C) (query_pos may be None for a layer that derives its own), the
  current reference (N, Q, R) in the box coder's parametrisation (normalised in the unpadded
  image), ``enc`` the ``EncoderOutput`` (memory, masks, positional embedding, levels: a deformable
  layer samples the memory, a standard cross-attention layer attends to memory + memory_pos, an
  AdaMixer layer samples ``enc.features``), attn_mask None or bool (Q, Q) / (N * heads, Q, Q),
  True = blocked; and an attribute ``num_heads``;
- the box coder (``box_coders``): 4-d boxes, 2-d points, ...;
- whether references are refined layer by layer (and look-forward-twice);
- the class / box heads: one per layer (a ModuleList) or one shared module;
- the query-position module (``ref_point_head``), used for the groups that bring no positions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from codetr.modeling.encoders.output import EncoderOutput
from codetr.modeling.queries.group import QueryGroup

from .box_coders import BoxCoder

__all__ = ["DecoderOutput", "QueryDecoder"]

Heads = Union[nn.Module, Sequence[nn.Module]]


@dataclass
class DecoderOutput:
    """Per-layer predictions over the concatenated query groups.

    logits (num_layers, N, Q, K); boxes (num_layers, N, Q, 4) normalised cxcywh; hidden
    (num_layers, N, Q, C): what the heads read."""

    logits: Tensor
    boxes: Tensor
    hidden: Tensor


class QueryDecoder(nn.Module):
    """Decoder driver.

    Layer i, on the current reference ``r_i`` (``r_0`` given by the groups):
    ``o_i = layer_i(o_{i-1}, pos_i, r_i, enc, mask)``; ``h_i = norm(o_i)`` (or ``o_i``);
    logits ``class_embed_i(h_i)``; box ``coder.decode(bbox_embed_i(h_i), p_i)``. With
    ``refine``: ``r'_{i+1} = coder.refine(bbox_embed_i(o_i), r_i)``, ``r_{i+1} = r'_{i+1}.detach()``
    and ``p_{i+1} = r'_{i+1}`` (look-forward-twice: layer i+1's loss also trains layer i's box
    head, DINO section 3.5) or ``r_{i+1}`` (Deformable DETR); ``p_0 = r_0``. Without ``refine``
    every layer keeps ``r_0`` (Conditional DETR).

    Positions: a group's ``query_pos`` if it has one, else ``ref_point_head(r_i)`` recomputed at
    every layer.

    Args:
        layers: the decoder layers (see the module docstring for their interface).
        class_embed, bbox_embed: per-layer heads (a sequence of ``len(layers)`` modules) or one
            shared module each; ``bbox_embed`` outputs (..., 4).
        box_coder: ``BoxCoder`` (default) or ``PointCoder``.
        ref_point_head: the query-position module for groups without positions, or None.
        norm: applied to every layer's output before the heads, or None.
        refine: refine the reference layer by layer.
        look_forward_twice: see above (only with ``refine``).
    """

    def __init__(
        self,
        layers: Sequence[nn.Module],
        class_embed: Heads,
        bbox_embed: Heads,
        box_coder=None,
        ref_point_head: Optional[nn.Module] = None,
        norm: Optional[nn.Module] = None,
        refine: bool = True,
        look_forward_twice: bool = True,
    ):
        super().__init__()
        self.layers = layers if isinstance(layers, nn.ModuleList) else nn.ModuleList(layers)
        self.num_layers = len(self.layers)
        for name, heads in (("class_embed", class_embed), ("bbox_embed", bbox_embed)):
            if not isinstance(heads, nn.Module):
                heads = nn.ModuleList(heads)
            if isinstance(heads, nn.ModuleList) and len(heads) != self.num_layers:
                raise ValueError(f"QueryDecoder: {len(heads)} {name} modules for {self.num_layers} layers")
            setattr(self, name, heads)
        self.box_coder = box_coder if box_coder is not None else BoxCoder()
        self.ref_point_head = ref_point_head
        self.norm = norm
        self.refine = refine
        self.look_forward_twice = look_forward_twice

    def _head(self, heads: nn.Module, i: int) -> nn.Module:
        return heads[i] if isinstance(heads, nn.ModuleList) else heads

    def forward(
        self, groups: Sequence[QueryGroup], enc: EncoderOutput, attn_mask: Optional[Tensor] = None
    ) -> DecoderOutput:
        """Decode the concatenation of ``groups`` (along the query axis, in order).

        Args:
            groups: query groups (content (N, Q_g, C), reference (N, Q_g, R), query_pos or None).
            enc: the encoder output.
            attn_mask: None, (Q, Q) or (N, Q, Q) bool over all Q = sum Q_g queries, True = query
                i may not attend to key j. A query may always attend to itself.
        """
        for i, g in enumerate(groups):
            if g.query_pos is None and self.ref_point_head is None:
                raise ValueError(
                    f"QueryDecoder: query group {i} has no query_pos and the decoder has no ref_point_head "
                    "to derive positions from its reference"
                )
            if g.reference.shape[-1] != self.box_coder.ref_dim:
                raise ValueError(
                    f"QueryDecoder: query group {i} has references of {g.reference.shape[-1]} coordinates; "
                    f"the box coder expects {self.box_coder.ref_dim}"
                )
        out = _cat([g.content for g in groups])
        ref = _cat([g.reference for g in groups])
        given = None
        if all(g.query_pos is not None for g in groups):
            given = _cat([g.query_pos for g in groups])
        attn_mask = self._expand_attn_mask(attn_mask, out.shape[0])
        prev_ref = ref
        hidden, logits, boxes = [], [], []
        for i in range(self.num_layers):
            pos = given if given is not None else self._positions(groups, ref)
            out, hs, lg, bx, ref, prev_ref = self.layer_step(i, out, pos, ref, prev_ref, enc, attn_mask)
            hidden.append(hs)
            logits.append(lg)
            boxes.append(bx)
        return DecoderOutput(torch.stack(logits), torch.stack(boxes), torch.stack(hidden))

    def layer_step(
        self,
        i: int,
        content: Tensor,
        query_pos: Optional[Tensor],
        reference: Tensor,
        prev_reference: Tensor,
        enc: EncoderOutput,
        attn_mask: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """One layer and its heads (the unit a fixed-point driver iterates).

        Args:
            i: layer (and head) index.
            content, query_pos: (N, Q, C); reference (N, Q, R) the layer's reference;
            prev_reference: what the box prediction is decoded from (``reference`` itself, or its
                undetached version with look-forward-twice).
            attn_mask: already expanded (see ``forward``).
        Returns:
            (content, hidden, logits, boxes, next reference, next prev_reference).
        """
        out = self.layers[i](content, query_pos, reference, enc, attn_mask)
        bbox_embed = self._head(self.bbox_embed, i)
        hs = out if self.norm is None else self.norm(out)
        logits = self._head(self.class_embed, i)(hs)
        if not self.refine:
            return out, hs, logits, self.box_coder.decode(bbox_embed(hs), reference), reference, reference
        delta = bbox_embed(out)
        hs_delta = delta if self.norm is None else bbox_embed(hs)
        boxes = self.box_coder.decode(hs_delta, prev_reference)
        new_ref = self.box_coder.refine(delta, reference)
        ref = new_ref.detach()
        return out, hs, logits, boxes, ref, (new_ref if self.look_forward_twice else ref)

    def _positions(self, groups: Sequence[QueryGroup], ref: Tensor) -> Tensor:
        """(N, Q, C) positions: the groups' own, or ``ref_point_head`` of the current reference."""
        if all(g.query_pos is None for g in groups):
            return self.ref_point_head(ref)
        parts, start = [], 0
        for g in groups:
            stop = start + g.num_queries
            parts.append(g.query_pos if g.query_pos is not None else self.ref_point_head(ref[:, start:stop]))
            start = stop
        return _cat(parts)

    def _expand_attn_mask(self, attn_mask: Optional[Tensor], batch: int) -> Optional[Tensor]:
        """(Q, Q) or (N, Q, Q) bool -> (Q, Q) or (N * heads, Q, Q), diagonal always open."""
        if attn_mask is None:
            return None
        q = attn_mask.shape[-1]
        attn_mask = attn_mask & ~torch.eye(q, dtype=torch.bool, device=attn_mask.device)
        if attn_mask.dim() == 3:
            attn_mask = attn_mask.repeat_interleave(self.layers[0].num_heads, dim=0)
        return attn_mask


def _cat(parts: Sequence[Tensor]) -> Tensor:
    """Concatenate along the query axis (a single part is returned as is)."""
    return parts[0] if len(parts) == 1 else torch.cat(parts, 1)
