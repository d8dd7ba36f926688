"""AdaMixer-layer refiners: the decoders of AdaMixer (6 unshared stages), DEQDet (g + a fixed
point of f) and RNNDet (g + f unrolled).

``AdaMixerRefiner`` owns the layers and their heads and defines one step (a layer, its class and
box heads, the xyzr refinement); a loop decides the order of steps and which are supervised:
``SequentialRefinement`` (layer i at step i, every layer supervised: AdaMixer / FFNDet),
``FixedPointRefinement`` (DEQDet) or ``UnrolledRefinement`` (RNNDet) from
``codetr.modeling.decoders.fixed_point`` (step index 0 = g = ``layers[0]``, 1 = f = ``layers[1]``).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .adamixer import AdaMixerDecoderLayer, AdaMixerHead, XYZRSinePosition
from .fixed_point import QueryState, check_step_count
from .xyzr import refine_xyzr, xyzr_to_cxcywh

__all__ = ["AdaMixerRefiner", "SequentialRefinement", "adamixer_layers"]


def adamixer_layers(num_layers: int, **layer_kwargs) -> List[AdaMixerDecoderLayer]:
    """``num_layers`` independent ``AdaMixerDecoderLayer(**layer_kwargs)`` (configs: DEQDet /
    RNNDet 2 = [g, f], AdaMixer 6)."""
    num_layers = check_step_count("adamixer_layers", "num_layers", num_layers, 1)
    return [AdaMixerDecoderLayer(**layer_kwargs) for _ in range(num_layers)]


class SequentialRefinement(nn.Module):
    """Layer i at step i for i < ``num_layers``, every output supervised ("layer{i}"); inference
    returns the last. The AdaMixer baseline's loop (unshared stages)."""

    def __init__(self, num_layers: int = 6):
        super().__init__()
        self.num_layers = check_step_count("SequentialRefinement", "num_layers", num_layers, 1)

    def forward(self, step, state: QueryState, num_steps: Optional[int] = None):
        outputs = []
        for i in range(self.num_layers):
            state, pred = step(i, state)
            outputs.append((f"layer{i}", pred))
        return outputs if self.training else outputs[-1:]


class AdaMixerRefiner(nn.Module):
    """Layers, their heads and a loop.

    Args:
        layers: AdaMixer layers (``[g, f]`` for DEQDet / RNNDet; 6 for AdaMixer).
        num_classes: K.
        loop: ``SequentialRefinement`` / ``FixedPointRefinement`` / ``UnrolledRefinement``.
        num_cls_fcs, num_reg_fcs: Linear + LayerNorm + ReLU blocks of each head (1, 1).
    Heads: ``class_heads[i]`` / ``box_heads[i]`` (``AdaMixerHead``) read layer i's output.
    ``ref_point_head``: ``XYZRSinePosition`` (no parameters), the query positions every step
    derives from the state's xyzr (queries need no given positions: Co-DETR's check).

    forward(content (N, Q, C), xyzr (N, Q, 4) pixels, enc, image_wh (N, 2), attn_mask=None,
    num_steps=None) -> list of (name, {"logits": (N, Q, K), "boxes": (N, Q, 4) normalised cxcywh
    of each unpadded image, "xyzr": (N, Q, 4) pixels}) (training: every supervised output; inference:
    the last).
    """

    def __init__(
        self,
        layers: Sequence[AdaMixerDecoderLayer],
        num_classes: int,
        loop: nn.Module,
        num_cls_fcs: int = 1,
        num_reg_fcs: int = 1,
    ):
        super().__init__()
        self.layers = layers if isinstance(layers, nn.ModuleList) else nn.ModuleList(layers)
        dim = self.layers[0].embed_dim
        self.class_heads = nn.ModuleList(
            AdaMixerHead(dim, num_classes, num_cls_fcs, prior_prob=0.01) for _ in self.layers
        )
        self.box_heads = nn.ModuleList(AdaMixerHead(dim, 4, num_reg_fcs, zero_last=True) for _ in self.layers)
        self.loop = loop
        self.ref_point_head = XYZRSinePosition(dim)

    def step(self, i: int, state: QueryState, enc, image_wh: Tensor, attn_mask: Optional[Tensor] = None
             ) -> Tuple[QueryState, Dict[str, Tensor]]:
        """Layer i on ``state``: the next state and the prediction of its heads."""
        xyzr = state.xyzr.detach()
        content = self.layers[i](state.content, self.ref_point_head(xyzr), xyzr, enc, attn_mask)
        new_xyzr = refine_xyzr(xyzr, self.box_heads[i](content).to(xyzr.dtype))
        wh = image_wh.to(new_xyzr.dtype)[:, None]
        boxes = xyzr_to_cxcywh(new_xyzr) / torch.cat([wh, wh], -1)
        return QueryState(content, new_xyzr), {"logits": self.class_heads[i](content), "boxes": boxes,
                                               "xyzr": new_xyzr}

    def forward(self, content: Tensor, xyzr: Tensor, enc, image_wh: Tensor, attn_mask: Optional[Tensor] = None,
                num_steps: Optional[int] = None) -> List[Tuple[str, Any]]:
        return self.loop(lambda i, s: self.step(i, s, enc, image_wh, attn_mask), QueryState(content, xyzr),
                         num_steps)
