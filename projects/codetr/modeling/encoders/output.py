"""The one encoder output type: what an encoder hands to decoders and to Co-DETR's heads."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import torch
from torch import Tensor

__all__ = ["EncoderOutput", "flatten_levels", "get_valid_ratios"]


def get_valid_ratios(masks: Sequence[Tensor]) -> Tensor:
    """Per level, the fraction of the map covered by the image.

    masks: L tensors (N, H_l, W_l) bool, True at padding. Returns (N, L, 2) as (w, h) ratios.
    """
    ratios = []
    for m in masks:
        valid_h = (~m[:, :, 0]).sum(1).float() / m.shape[1]
        valid_w = (~m[:, 0, :]).sum(1).float() / m.shape[2]
        ratios.append(torch.stack([valid_w, valid_h], -1))
    return torch.stack(ratios, 1)


def flatten_levels(maps: Sequence[Tensor]) -> Tuple[Tensor, Tensor, Tensor, List[Tuple[int, int]]]:
    """Flatten L maps (N, C, H_l, W_l) (or masks (N, H_l, W_l)) into (N, S, C) (or (N, S)).

    Returns (flat, spatial_shapes (L, 2) int64 (H, W), level_start_index (L,) int64, shapes list).
    """
    shapes = [tuple(m.shape[-2:]) for m in maps]
    if maps[0].dim() == 4:
        flat = torch.cat([m.flatten(2).transpose(1, 2) for m in maps], 1)
    else:
        flat = torch.cat([m.flatten(1) for m in maps], 1)
    device = maps[0].device
    # torch.tensor, not torch.as_tensor: under torch.export with dynamic sizes, as_tensor bakes the
    # example's sizes into a constant while torch.tensor traces them from the maps' shapes.
    spatial_shapes = torch.tensor(shapes, dtype=torch.long, device=device)
    sizes = spatial_shapes.prod(1)
    level_start_index = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    return flat, spatial_shapes, level_start_index, shapes


@dataclass(frozen=True)
class EncoderOutput:
    """An encoder's output over L feature levels (finest first); immutable.

    Attributes:
        memory: (N, S, C) encoded positions of all levels, S = sum_l H_l * W_l.
        memory_mask: (N, S) bool, True at padding.
        memory_pos: (N, S, C) the positional embedding of the memory positions (with the level
            embedding, if the encoder has one): what a standard cross-attention adds to its keys.
        spatial_shapes: (L, 2) int64 (H_l, W_l).
        level_start_index: (L,) int64 offset of each level in S.
        valid_ratios: (N, L, 2) (w, h) fraction of each level covered by the image.
        features: L encoder inputs (N, C, H_l, W_l) (the neck's maps).
        masks: L (N, H_l, W_l) bool padding masks, True at padding.
    """

    memory: Tensor
    memory_mask: Tensor
    memory_pos: Tensor
    spatial_shapes: Tensor
    level_start_index: Tensor
    valid_ratios: Tensor
    features: Tuple[Tensor, ...]
    masks: Tuple[Tensor, ...]

    @classmethod
    def from_levels(cls, features: Sequence[Tensor], masks: Sequence[Tensor], pos_embeds: Sequence[Tensor]):
        """The output of an identity encoder: L maps (N, C, H_l, W_l), their padding masks
        (N, H_l, W_l) and position embeddings (N, C, H_l, W_l) flattened into memory,
        memory_mask and memory_pos (cast to the maps' dtype). An encoder runs on these and
        replaces ``memory`` (``dataclasses.replace``); a detector without encoder (AdaMixer)
        uses them as they are."""
        memory, spatial_shapes, level_start_index, _ = flatten_levels(features)
        return cls(
            memory=memory,
            memory_mask=flatten_levels(masks)[0],
            memory_pos=flatten_levels(pos_embeds)[0].to(memory.dtype),
            spatial_shapes=spatial_shapes,
            level_start_index=level_start_index,
            valid_ratios=get_valid_ratios(masks),
            features=tuple(features),
            masks=tuple(masks),
        )

    @property
    def shapes(self) -> List[Tuple[int, int]]:
        """L (H_l, W_l) as Python ints."""
        return [tuple(m.shape[-2:]) for m in self.masks]

    @property
    def has_padding(self) -> bool:
        return bool(self.memory_mask.any())

    def memory_maps(self) -> List[Tensor]:
        """The memory back as L maps (N, C, H_l, W_l), finest first: the pyramid view that
        Co-DETR's auxiliary heads read."""
        sizes = [h * w for h, w in self.shapes]
        n, _, c = self.memory.shape
        return [
            m.transpose(1, 2).reshape(n, c, h, w)
            for m, (h, w) in zip(self.memory.split(sizes, 1), self.shapes)
        ]
