"""The decoder driver: runs query groups through decoder layers under a loop.

What differs between papers is plugged in:
- the layer: any module ``layer(content, query_pos, reference, enc, attn_mask) -> content`` with
  content, query_pos (N, Q, C) (query_pos may be None for a layer that derives its own), the
  current reference (N, Q, R) in the box coder's parametrisation, ``enc`` the ``EncoderOutput``
  (memory, masks, positional embedding, levels: a deformable layer samples the memory, a standard
  cross-attention layer attends to memory + memory_pos, an AdaMixer layer samples
  ``enc.features``), attn_mask None or bool (Q, Q) / (N * heads, Q, Q), True = blocked; and an
  attribute ``num_heads``;
- the box coder (``codetr.modeling.coders``): 4-d boxes, 2-d points, AdaMixer's xyzr pixels;
- whether references are refined layer by layer (and look-forward-twice);
- the class / box heads: one per layer (a ModuleList) or one shared module;
- the query-position module (``ref_point_head``), used for the groups that bring no positions;
- the loop: which layer runs at each step and which steps are supervised. ``SequentialRefinement``
  (the default: layer i at step i, every layer supervised: the DETR family, AdaMixer),
  ``FixedPointRefinement`` (DEQDet) and ``UnrolledRefinement`` (RNNDet) in ``fixed_point.py``. A
  loop is called as ``loop(step, state, num_steps)`` with ``step(i, state) -> (state, prediction)``
  (``layer_step``: layer i and its heads) and returns ``[(name, prediction), ...]``.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from codetr.modeling.coders import BoxCoder
from codetr.modeling.encoders.output import EncoderOutput
from codetr.modeling.queries.group import QueryGroup

__all__ = ["DecoderOutput", "QueryDecoder", "QueryState", "SequentialRefinement", "check_step_count"]

Heads = Union[nn.Module, Sequence[nn.Module]]
Step = Callable[[int, "QueryState"], Tuple["QueryState", Dict[str, Tensor]]]


@dataclass
class QueryState:
    """What a decoder step reads and writes: content (N, Q, C); reference (N, Q, R) in the box
    coder's parametrisation (the layer's input, detached after the first layer); prev_reference
    (N, Q, R), what the next box prediction is decoded from: the undetached reference with
    look-forward-twice, else None (= ``reference``)."""

    content: Tensor
    reference: Tensor
    prev_reference: Optional[Tensor] = None

    @property
    def decode_reference(self) -> Tensor:
        return self.reference if self.prev_reference is None else self.prev_reference

    def detach(self) -> "QueryState":
        return QueryState(self.content.detach(), self.reference.detach())


def check_step_count(owner: str, name: str, value, minimum: int, allow_none: bool = False) -> Optional[int]:
    """``value`` as an int, if it is an integer >= ``minimum`` (or ``None`` with ``allow_none``);
    else a ``ValueError`` naming ``owner``, ``name``, the value and what was expected. The loops
    check every step count at construction (a negative count would silently run no step)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(
            f"{owner}: {name}={value!r}; expected an integer >= {minimum}" + (" or None" if allow_none else "")
        )
    return int(value)


class SequentialRefinement(nn.Module):
    """Layer i at step i for i < ``num_layers`` (the decoder's number of layers), every
    output supervised ("layer{i}"), in training and inference alike. The DETR family's 6-layer
    sequence and the AdaMixer baseline's unshared stages."""

    def __init__(self, num_layers: int = 6):
        super().__init__()
        self.num_layers = check_step_count("SequentialRefinement", "num_layers", num_layers, 1)

    def forward(self, step: Step, state: QueryState, num_steps: Optional[int] = None):
        outputs = []
        for i in range(self.num_layers):
            state, pred = step(i, state)
            outputs.append((f"layer{i}", pred))
        return outputs


@dataclass
class DecoderOutput:
    """Per-layer predictions over the concatenated query groups.

    logits (L, N, Q, K); boxes (L, N, Q, 4) normalised cxcywh; hidden (L, N, Q, C): what the
    heads read; names: the L outputs' names given by the loop ("layer0", ..., DEQDet's "init",
    "iter1", ...). L: every layer for the sequence, the supervised steps of a refinement loop in
    training and its last step at inference."""

    logits: Tensor
    boxes: Tensor
    hidden: Tensor
    names: Tuple[str, ...] = ()


class QueryDecoder(nn.Module):
    """Decoder driver.

    Layer i, on the current reference ``r_i`` (``r_0`` given by the groups):
    ``o_i = layer_i(o_{i-1}, pos_i, r_i, enc, mask)``; ``h_i = norm(o_i)`` (or ``o_i``);
    logits ``class_embed_i(h_i)``; box ``coder.decode(bbox_embed_i(h_i), p_i)``. With
    ``refine``: ``r'_{i+1} = coder.refine(bbox_embed_i(o_i), r_i)``, ``r_{i+1} = r'_{i+1}.detach()``
    and ``p_{i+1} = r'_{i+1}`` (look-forward-twice: layer i+1's loss also trains layer i's box
    head, DINO section 3.5) or ``r_{i+1}`` (Deformable DETR, AdaMixer); ``p_0 = r_0``. Without
    ``refine`` every layer keeps ``r_0`` (Conditional DETR). The loop decides the order of the
    layers (DEQDet's fixed point applies layer 1 again and again) and which outputs are returned.

    Positions: a group's ``query_pos`` if it has one, else ``ref_point_head(r_i)`` recomputed at
    every step.

    Args:
        layers: the decoder layers (see the module docstring for their interface).
        class_embed, bbox_embed: per-layer heads (a sequence of ``len(layers)`` modules) or one
            shared module each; ``bbox_embed`` outputs (..., 4).
        box_coder: ``BoxCoder`` (default), ``PointCoder`` or ``XYZRCoder``.
        ref_point_head: the query-position module for groups without positions, or None.
        norm: applied to every layer's output before the heads, or None.
        refine: refine the reference layer by layer.
        look_forward_twice: see above (only with ``refine``).
        loop: ``SequentialRefinement(len(layers))`` (default), ``FixedPointRefinement``, ...
        given_positions: whether groups may bring their own ``query_pos`` (False: every position
            comes from ``ref_point_head``, as AdaMixer's layers embed each query's xyzr).
    Attributes ``head_names``: the state-dict names of the class and box heads.
    """

    head_names = ("class_embed", "bbox_embed")

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
        loop: Optional[nn.Module] = None,
        given_positions: bool = True,
    ):
        super().__init__()
        name = type(self).__name__
        self.layers = layers if isinstance(layers, nn.ModuleList) else nn.ModuleList(layers)
        self.num_layers = len(self.layers)
        for attr, heads in zip(self.head_names, (class_embed, bbox_embed)):
            if not isinstance(heads, nn.Module):
                heads = nn.ModuleList(heads)
            if isinstance(heads, nn.ModuleList) and len(heads) != self.num_layers:
                raise ValueError(f"{name}: {len(heads)} {attr} modules for {self.num_layers} layers")
            setattr(self, attr, heads)
        self.box_coder = box_coder if box_coder is not None else BoxCoder()
        self.ref_point_head = ref_point_head
        self.norm = norm
        self.refine = refine
        self.look_forward_twice = look_forward_twice
        if loop is None:
            loop = SequentialRefinement(self.num_layers)
        if isinstance(loop, SequentialRefinement) and loop.num_layers != self.num_layers:
            raise ValueError(f"{name}: SequentialRefinement over {loop.num_layers} layers but the decoder has "
                             f"{self.num_layers}")
        self.loop = loop
        self.given_positions = given_positions

    def _head(self, kind: int, i: int) -> nn.Module:
        heads = getattr(self, self.head_names[kind])
        return heads[i] if isinstance(heads, nn.ModuleList) else heads

    def forward(
        self, groups: Sequence[QueryGroup], enc: EncoderOutput, attn_mask: Optional[Tensor] = None,
        num_steps: Optional[int] = None,
    ) -> DecoderOutput:
        """Decode the concatenation of ``groups`` (along the query axis, in order).

        Args:
            groups: query groups (content (N, Q_g, C), reference (N, Q_g, R), query_pos or None).
            enc: the encoder output.
            attn_mask: None, (Q, Q) or (N, Q, Q) bool over all Q = sum Q_g queries, True = query
                i may not attend to key j. A query may always attend to itself.
            num_steps: passed to the loop (inference steps of DEQDet / RNNDet; None: the loop's).
        Returns the stacked predictions of the outputs the loop returns (every layer for the
        sequence; the supervised steps, or the last one at inference, for the refinement loops).
        """
        step, state = self.stepper(groups, enc, attn_mask)
        names, preds = zip(*self.loop(step, state, num_steps))
        stacked = (torch.stack([p[k] for p in preds]) for k in ("logits", "boxes", "hidden"))
        return DecoderOutput(*stacked, names=names)

    def stepper(self, groups: Sequence[QueryGroup], enc: EncoderOutput, attn_mask: Optional[Tensor] = None
                ) -> Tuple[Step, QueryState]:
        """The loop's ``step(i, state) -> (state, {"logits", "boxes", "hidden"})`` on ``groups``
        (layer i and its heads, ``layer_step``) and the initial state (tools that drive steps
        themselves, e.g. convergence studies, use it)."""
        name = type(self).__name__
        if not groups:
            raise ValueError(f"{name}: decoding needs at least one query group")
        for i, g in enumerate(groups):
            if g.query_pos is not None and not self.given_positions:
                raise ValueError(
                    f"{name}: query group {i} brings query_pos, but this decoder derives every position from the "
                    "reference (AdaMixer layers embed each query's xyzr; use PositiveQueries(style='co_dino'))"
                )
            if g.query_pos is None and self.ref_point_head is None:
                raise ValueError(
                    f"{name}: query group {i} has no query_pos and the decoder has no ref_point_head "
                    "to derive positions from its reference"
                )
            if g.reference.shape[-1] != self.box_coder.ref_dim:
                raise ValueError(
                    f"{name}: query group {i} has references of {g.reference.shape[-1]} coordinates; "
                    f"the box coder expects {self.box_coder.ref_dim}"
                )
        content = _cat([g.content for g in groups])
        given = None
        if all(g.query_pos is not None for g in groups):
            given = _cat([g.query_pos for g in groups])
        attn_mask = self._expand_attn_mask(attn_mask, content.shape[0], content.shape[1])
        coder = self.box_coder.for_images(getattr(enc, "image_wh", None))

        def step(i: int, state: QueryState) -> Tuple[QueryState, Dict[str, Tensor]]:
            pos = given if given is not None else self._positions(groups, state.reference)
            return self.layer_step(i, state, pos, enc, attn_mask, coder)

        return step, QueryState(content, _cat([g.reference for g in groups]))

    def layer_step(
        self,
        i: int,
        state: QueryState,
        query_pos: Optional[Tensor],
        enc: EncoderOutput,
        attn_mask: Optional[Tensor] = None,
        coder=None,
    ) -> Tuple[QueryState, Dict[str, Tensor]]:
        """One layer and its heads: the unit every loop iterates.

        Args:
            i: layer (and head) index.
            state: the layer's input (content (N, Q, C), reference (N, Q, R) and what the box
                prediction is decoded from).
            query_pos: (N, Q, C) or None (the layer derives its own).
            attn_mask: already expanded (see ``forward``).
            coder: the box coder for these images (default ``box_coder.for_images(enc.image_wh)``).
        Returns:
            (the next state, {"logits" (N, Q, K), "boxes" (N, Q, 4) normalised cxcywh,
            "hidden" (N, Q, C) what the heads read}).
        """
        coder = self.box_coder.for_images(getattr(enc, "image_wh", None)) if coder is None else coder
        reference = state.reference
        out = self.layers[i](state.content, query_pos, reference, enc, attn_mask)
        bbox_embed = self._head(1, i)
        hs = out if self.norm is None else self.norm(out)
        logits = self._head(0, i)(hs)
        if not self.refine:
            pred = {"logits": logits, "boxes": coder.decode(bbox_embed(hs), reference), "hidden": hs}
            return QueryState(out, reference), pred
        delta = bbox_embed(out)
        hs_delta = delta if self.norm is None else bbox_embed(hs)
        boxes = coder.decode(hs_delta, state.decode_reference)
        new_ref = coder.refine(delta, reference)
        ref = new_ref.detach()
        return QueryState(out, ref, new_ref if self.look_forward_twice else None), {
            "logits": logits, "boxes": boxes, "hidden": hs}

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

    def _expand_attn_mask(self, attn_mask: Optional[Tensor], batch: int, num_queries: int) -> Optional[Tensor]:
        """(Q, Q) or (N, Q, Q) bool -> (Q, Q) or (N * heads, Q, Q), diagonal always open."""
        if attn_mask is None:
            return None
        if attn_mask.dtype != torch.bool or attn_mask.dim() not in (2, 3) or attn_mask.shape[-2:] != (
                num_queries, num_queries) or (attn_mask.dim() == 3 and attn_mask.shape[0] != batch):
            raise ValueError(
                f"{type(self).__name__}: the attention mask must be bool ({num_queries}, {num_queries}) or "
                f"({batch}, {num_queries}, {num_queries}) over the concatenated queries, got {attn_mask.dtype} "
                f"{tuple(attn_mask.shape)}"
            )
        attn_mask = attn_mask & ~torch.eye(num_queries, dtype=torch.bool, device=attn_mask.device)
        if attn_mask.dim() == 3:
            attn_mask = attn_mask.repeat_interleave(self.layers[0].num_heads, dim=0)
        return attn_mask


def _cat(parts: Sequence[Tensor]) -> Tensor:
    """Concatenate along the query axis (a single part is returned as is)."""
    return parts[0] if len(parts) == 1 else torch.cat(parts, 1)
