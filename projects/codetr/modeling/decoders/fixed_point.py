"""Weight-tied refinement loops over one decoder layer: DEQDet (ICCV 2023) and RNNDet.

Both iterate an initial layer ``g`` and a refinement layer ``f`` on a query state
(``QueryState``: content (N, Q, C) and reference: xyzr (N, Q, 4) pixels). They do not call layers
themselves: the decoder driver (``QueryDecoder``) passes ``step(layer_index, state) -> (next_state, prediction)`` with
``layer_index`` 0 for ``g`` and 1 for ``f`` (one layer application plus its heads; ``prediction``
is whatever the criterion reads, e.g. logits and boxes). Both return the supervised predictions
as ``(name, prediction)`` pairs in order; each is supervised like a decoder layer's output.

DEQDet (``FixedPointRefinement``), training:
1. ``z = g(z_0)`` with gradient, supervised ("init"); then ``f`` twice more from it with
   gradient, each supervised ("init^1", "init^2");
2. from ``z`` detached, ``refinement_steps`` (20) applications of ``f`` without gradient, each
   preceded by the refinement-aware perturbation (``perturb_state``; training only);
3. after step i in ``supervision_positions`` (1, 3, 6, 9, 12, 20): ``grad_steps`` (2) applications
   of ``f`` with gradient from the (detached) state ``z_i``, supervised ("iter{i}"): the
   refinement-aware gradient (a 2-step unrolled estimate of the fixed point's gradient).
Inference: ``g`` then ``f`` ``inference_steps`` times (20 + 1 by default; configurable per call),
no perturbation; the last prediction.

RNNDet (``UnrolledRefinement``): ``g`` then ``f`` ``num_steps`` times, all with gradient
(backpropagation through every step), each step supervised (or those in
``supervision_positions``).

Differences from the official DEQDet code, all deliberate: the position noise is added to the
box decoded from the state's xyzr (the official adds it to the box the previous layer returned,
the same box) and re-encoded; the noised box's corners are not kept (the official IoF bias reads
the noised, possibly inverted, xyxy box; here every layer reads its box from xyzr). The official
memory-saving path (a backward pass at every supervision position, feature gradients stashed on
detached leaf copies) is not implemented: one backward after all losses, as any detector.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import torch
from torch import nn

from codetr.modeling.coders import xyxy_to_xyzr, xyzr_to_xyxy

from .driver import QueryState, Step, check_step_count

__all__ = ["FixedPointRefinement", "QueryState", "UnrolledRefinement", "check_step_count", "perturb_state"]


Outputs = List[Tuple[str, Any]]


def perturb_state(
    state: QueryState,
    content_prob: float = 0.2,
    position_prob: float = 0.2,
    content_intensity: float = 0.1,
    position_intensity: float = 25.0,
) -> QueryState:
    """DEQDet's refinement-aware perturbation of a state (for the whole batch at once).

    With probability ``content_prob``: ``content <- (1 - a) content + a ||content|| eps``, a =
    ``content_intensity``, ||.|| the L2 norm of each query's content, eps ~ N(0, 1) per channel.
    Then, with probability ``position_prob``: the state's xyxy box (pixels) plus ``position_intensity``
    x N(0, 1) per coordinate, re-encoded as xyzr (|w|, |h|). Draws: ``torch.rand(1)`` for each
    decision, ``torch.randn_like`` for the noise, in that order (the default generator).
    """
    content, xyzr = state.content, state.reference
    if bool(torch.rand(1) < content_prob):
        noise = torch.randn_like(content)
        content = (1 - content_intensity) * content + content.norm(dim=-1, keepdim=True) * noise * content_intensity
    if bool(torch.rand(1) < position_prob):
        boxes = xyzr_to_xyxy(xyzr)
        xyzr = xyxy_to_xyzr(boxes + torch.randn_like(boxes) * position_intensity)
    return QueryState(content, xyzr)


def _check_positions(name: str, positions: Sequence[int], steps: int) -> Tuple[int, ...]:
    positions = tuple(int(p) for p in positions)
    bad = [p for p in positions if not 1 <= p <= steps]
    if bad or len(set(positions)) != len(positions):
        raise ValueError(
            f"{name}: supervision_positions {list(positions)} must be distinct steps in 1..{steps}"
        )
    return positions


class FixedPointRefinement(nn.Module):
    """DEQDet's training and inference loop (see the module docstring). No parameters.

    Args:
        refinement_steps: no-gradient applications of ``f`` in training (20).
        supervision_positions: steps after which the refinement-aware gradient is taken.
        grad_steps: applications of ``f`` with gradient at each supervision position (2).
        init_supervisions: extra applications of ``f`` with gradient after ``g`` (2).
        perturb_content_prob, perturb_position_prob, content_intensity, position_intensity:
            ``perturb_state`` (0.2, 0.2, 0.1, 25 pixels).
        inference_steps: applications of ``f`` after ``g`` at inference (default
            ``refinement_steps + 1``).
    """

    def __init__(
        self,
        refinement_steps: int = 20,
        supervision_positions: Sequence[int] = (1, 3, 6, 9, 12, 20),
        grad_steps: int = 2,
        init_supervisions: int = 2,
        perturb_content_prob: float = 0.2,
        perturb_position_prob: float = 0.2,
        content_intensity: float = 0.1,
        position_intensity: float = 25.0,
        inference_steps: Optional[int] = None,
    ):
        super().__init__()
        owner = "FixedPointRefinement"
        self.refinement_steps = check_step_count(owner, "refinement_steps", refinement_steps, 1)
        self.supervision_positions = _check_positions(owner, supervision_positions, refinement_steps)
        self.grad_steps = check_step_count(owner, "grad_steps", grad_steps, 1)
        self.init_supervisions = check_step_count(owner, "init_supervisions", init_supervisions, 0)
        inference_steps = check_step_count(owner, "inference_steps", inference_steps, 0, allow_none=True)
        self.perturb = dict(content_prob=perturb_content_prob, position_prob=perturb_position_prob,
                            content_intensity=content_intensity, position_intensity=position_intensity)
        self.inference_steps = refinement_steps + 1 if inference_steps is None else inference_steps

    def forward(self, step: Step, state: QueryState, num_steps: Optional[int] = None) -> Outputs:
        """Training: the supervised predictions ("init", "init^1", ..., "iter{i}", ...).
        Inference: ``[("step{k}", prediction)]`` after ``num_steps`` (default
        ``inference_steps``) applications of ``f``."""
        if not self.training:
            return self.infer(step, state, num_steps)
        outputs: Outputs = []
        state, pred = step(0, state)
        outputs.append(("init", pred))
        sup = state
        for k in range(self.init_supervisions):
            sup, pred = step(1, sup)
            outputs.append((f"init^{k + 1}", pred))
        state = state.detach()
        for i in range(1, self.refinement_steps + 1):
            with torch.no_grad():
                state, _ = step(1, perturb_state(state, **self.perturb))
            if i in self.supervision_positions:
                sup = state
                for _ in range(self.grad_steps):
                    sup, pred = step(1, sup)
                outputs.append((f"iter{i}", pred))
        return outputs

    def infer(self, step: Step, state: QueryState, num_steps: Optional[int] = None,
              trajectory: bool = False) -> Outputs:
        """``g`` then ``f`` ``num_steps`` times; the last prediction, or with ``trajectory`` every
        step's (``"step0"`` is ``g``'s), for convergence studies."""
        num_steps = check_step_count("FixedPointRefinement", "inference_steps" if num_steps is None else "num_steps",
                                     self.inference_steps if num_steps is None else num_steps, 0)
        state, pred = step(0, state)
        outputs: Outputs = [("step0", pred)]
        for k in range(1, num_steps + 1):
            state, pred = step(1, state)
            outputs.append((f"step{k}", pred))
        return outputs if trajectory else outputs[-1:]


class UnrolledRefinement(nn.Module):
    """RNNDet: ``g`` then ``f`` ``num_steps`` times with gradient through every step.

    Args:
        num_steps: applications of ``f``.
        supervision_positions: steps whose prediction is supervised (default: every step);
            ``g``'s prediction ("init") always is.
        inference_steps: applications of ``f`` at inference (default ``num_steps``).
    Returns ``[("init", ...), ("step{i}", ...), ...]`` in training, the last prediction in
    inference.
    """

    def __init__(self, num_steps: int = 6, supervision_positions: Optional[Sequence[int]] = None,
                 inference_steps: Optional[int] = None):
        super().__init__()
        self.num_steps = check_step_count("UnrolledRefinement", "num_steps", num_steps, 1)
        positions = range(1, num_steps + 1) if supervision_positions is None else supervision_positions
        self.supervision_positions = _check_positions("UnrolledRefinement", positions, num_steps)
        inference_steps = check_step_count("UnrolledRefinement", "inference_steps", inference_steps, 0, allow_none=True)
        self.inference_steps = num_steps if inference_steps is None else inference_steps

    def forward(self, step: Step, state: QueryState, num_steps: Optional[int] = None) -> Outputs:
        if self.training:
            steps = self.num_steps
        else:
            steps = check_step_count("UnrolledRefinement", "inference_steps" if num_steps is None else "num_steps",
                                     self.inference_steps if num_steps is None else num_steps, 0)
        state, pred = step(0, state)
        outputs: Outputs = [("init", pred)]
        for i in range(1, steps + 1):
            state, pred = step(1, state)
            if not self.training or i in self.supervision_positions:
                outputs.append((f"step{i}", pred))
        return outputs if self.training else outputs[-1:]
