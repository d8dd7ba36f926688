"""Fixed-target queries: query groups whose targets are known before matching, the concept
shared by DN-DETR / DINO denoising (``denoising.py``) and Co-DETR's customised positive queries
(``positive_queries.py``); and the self-attention mask between query groups.

Layout: ``num_groups`` groups of ``group_size`` slots, group g at ``[g * group_size, (g + 1) *
group_size)``; padded slots (``valid`` False) have no loss and are masked as attention keys. The
decoder input is ``cat([fixed queries, matching queries], dim=1)``.
"""
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

__all__ = ["FixedTargetQueries", "build_query_attention_mask"]


@dataclass
class FixedTargetQueries:
    """A block of decoder queries with known targets (N = num_groups * group_size slots).

    Attributes:
        content: (B, N, D) content queries (``tgt``); zeros at padded slots.
        ref_boxes: (B, N, 4) reference boxes, normalised cxcywh (the decoder's ``ref_boxes``):
            the noised boxes passed through ``sigmoid(inverse_sigmoid(.))`` as in DINO, i.e.
            clamped to [eps, 1 - eps]; (0.5, 0.5, 0.5, 0.5) (zero logits) at padded slots.
            Not differentiable.
        labels: (B, N) int64 class targets; ``num_classes`` for negatives and padded slots.
        boxes: (B, N, 4) normalised cxcywh box targets; zeros where ``positive`` is False.
        valid: (B, N) bool, False at padded slots (which take part in no loss).
        positive: (B, N) bool, True where the slot has a box target (valid and not negative).
            Valid non-positive slots are negatives: classification loss only (target: no object).
        num_groups: number of groups (the criterion's normaliser multiplies by it, as DINO does).
        group_size: slots per group.
        query_pos: optional (B, N, D) query positions, for a decoder that takes given positions
            (a ``QueryGroup``'s ``query_pos``, Co-Deformable-DETR's positive queries): used
            unchanged at every layer. None (DN / CDN, Co-DINO): the decoder derives the
            positions from the reference boxes (``ref_point_head``).
    """

    content: Tensor
    ref_boxes: Tensor
    labels: Tensor
    boxes: Tensor
    valid: Tensor
    positive: Tensor
    num_groups: int
    group_size: int
    query_pos: Optional[Tensor] = None

    @property
    def num_queries(self) -> int:
        """N, the number of fixed-target slots per image."""
        return self.num_groups * self.group_size

    def attn_mask(self, num_matching: int) -> Tensor:
        """(B, N + num_matching, N + num_matching) bool self-attention mask, True = blocked, for
        the decoder input ``cat([fixed queries, matching queries], dim=1)``.
        See ``build_query_attention_mask``."""
        return build_query_attention_mask(self.num_groups, self.group_size, num_matching, self.valid)


def build_query_attention_mask(
    num_groups: int,
    group_size: int,
    num_matching: int,
    valid: Optional[Tensor] = None,
    device: Optional[torch.device] = None,
) -> Tensor:
    """Self-attention mask between query groups (PyTorch convention: True = may NOT attend).

    Queries are laid out as ``[fixed group 0, ..., fixed group G-1, matching queries]``.
    - matching queries cannot see any fixed-target query (no ground-truth leak);
    - a fixed group cannot see other fixed groups;
    - fixed queries can see the matching queries (DINO / DN-DETR behaviour);
    - padded fixed slots (``valid`` False) are masked as keys for every query, except that the
      diagonal stays open so that no row is fully masked (softmax would give NaN).

    Args:
        num_groups, group_size: fixed-target layout; N = num_groups * group_size.
        num_matching: number of matching (Hungarian) queries appended after the fixed ones.
        valid: optional (B, N) bool, False at padded slots.
        device: device of the result when ``valid`` is None.
    Returns:
        (L, L) bool with L = N + num_matching when ``valid`` is None, else (B, L, L).
        For ``nn.MultiheadAttention`` expand a (B, L, L) mask to (B * num_heads, L, L) with
        ``mask.repeat_interleave(num_heads, dim=0)``.
    """
    if valid is not None:
        device = valid.device
    num_fixed = num_groups * group_size
    total = num_fixed + num_matching
    mask = torch.zeros(total, total, dtype=torch.bool, device=device)
    group_id = torch.arange(num_fixed, device=device) // group_size
    mask[:num_fixed, :num_fixed] = group_id[:, None] != group_id[None, :]
    mask[num_fixed:, :num_fixed] = True
    if valid is None:
        return mask
    padded_key = torch.cat([~valid, valid.new_zeros(valid.shape[0], num_matching)], dim=1)
    mask = mask[None] | padded_key[:, None, :]
    diag = torch.arange(total, device=device)
    mask[:, diag, diag] = False
    return mask
