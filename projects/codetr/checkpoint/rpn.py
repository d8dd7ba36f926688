"""RPN anchor order: mmdet is ratio-major, Detectron2 size-major.

At every feature-map position, mmdet's ``AnchorGenerator`` lists the A = R * S anchors as
``for ratio in ratios: for scale in scales`` (``ws = (w * w_ratios[:, None] * scales[None, :]).view(-1)``),
while Detectron2's ``DefaultAnchorGenerator.generate_cell_anchors`` lists them as
``for size in sizes: for aspect_ratio in aspect_ratios``. Both RPN heads predict anchor ``a``'s
objectness in channel ``a`` and its deltas in channels ``4a .. 4a+3`` (and both flatten to
(H, W, A) order), so converting a head means permuting those output channels: Detectron2
anchor ``j = s * R + r`` is mmdet anchor ``r * S + s``. Box sizes agree (w = size / sqrt(ratio),
h = size * sqrt(ratio), ratio = h / w, centres at ``stride * (x, y)`` with offset 0 in both).
"""
from __future__ import annotations

from typing import List

from torch import Tensor

from .core import KeyMapper, ShapeMismatchError

__all__ = ["mmdet_to_d2_anchor_order", "permute_anchor_channels", "map_mmdet_rpn_head"]


def mmdet_to_d2_anchor_order(num_sizes: int, num_ratios: int) -> List[int]:
    """``perm[j]`` = mmdet's index of Detectron2's ``j``-th cell anchor."""
    return [r * num_sizes + s for s in range(num_sizes) for r in range(num_ratios)]


def permute_anchor_channels(
    value: Tensor, num_sizes: int, num_ratios: int, per_anchor: int = 1, key: str = "<tensor>"
) -> Tensor:
    """Reorder dim 0 of a conv weight (A * per_anchor, C, kh, kw) or bias (A * per_anchor,) from
    mmdet's anchor order to Detectron2's. ``per_anchor``: 1 for objectness, 4 for deltas."""
    a = num_sizes * num_ratios
    if value.shape[0] != a * per_anchor:
        raise ShapeMismatchError(
            f"{key!r}: {value.shape[0]} output channels, expected {a} anchors x {per_anchor} = {a * per_anchor}",
            [key],
        )
    perm = mmdet_to_d2_anchor_order(num_sizes, num_ratios)
    channels = [i * per_anchor + k for i in perm for k in range(per_anchor)]
    return value[channels].clone()


def map_mmdet_rpn_head(m: KeyMapper, src_prefix: str, dst_prefix: str, num_sizes: int, num_ratios: int) -> None:
    """mmdet ``RPNHead`` (``rpn_conv``, ``rpn_cls`` (sigmoid, A channels), ``rpn_reg``) ->
    Detectron2 ``StandardRPNHead`` (``conv``, ``objectness_logits``, ``anchor_deltas``)."""
    for p in ("weight", "bias"):
        m.move(f"{src_prefix}rpn_conv.{p}", f"{dst_prefix}conv.{p}")
        k = f"{src_prefix}rpn_cls.{p}"
        m.put(f"{dst_prefix}objectness_logits.{p}", permute_anchor_channels(m.take(k), num_sizes, num_ratios, 1, k))
        k = f"{src_prefix}rpn_reg.{p}"
        m.put(f"{dst_prefix}anchor_deltas.{p}", permute_anchor_channels(m.take(k), num_sizes, num_ratios, 4, k))
