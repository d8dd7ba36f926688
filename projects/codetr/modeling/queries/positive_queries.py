"""Co-DETR's customized positive queries: an auxiliary head's assignment as fixed-target queries.

Each auxiliary head (Faster R-CNN, ATSS, T-Head) hands over an ``AssignedSamples`` (positives with their
assigned ground truth, and negatives). Per head, Co-DETR turns them into one group of decoder
queries whose targets are known, a ``FixedTargetQueries`` that goes through the shared decoder
(``QueryDetector.decode_fixed(enc, fixed)``) and the criterion's fixed-target loss, exactly as
denoising groups do:

- per image ``n = clamp(max_b P_b, min_queries, max_queries)`` slots (P_b: positives of image b);
  an image with more positives keeps a random subset of ``n``, one with fewer is padded with
  randomly chosen negatives of the same head (classification-only "no object" targets); if the
  head has too few negatives the remaining slots are padding (no loss, masked as keys);
- reference box = the sample's box (anchor / proposal) as normalised cxcywh of the image
  (``sigmoid(inverse_sigmoid(.))``: clamped into (0, 1) as DINO's references);
- box target = the assigned ground-truth box, normalised cxcywh (zeros for non-positives);
- queries, ``style="co_dino"``: content = ``LayerNorm_k(Linear_k(sine(reference)))`` (2D -> D,
  Co-DINO's ``aux_pos_trans``); no query position, the decoder derives it from the reference box
  at every layer (``ref_point_head``);
- queries, ``style="co_deformable"``: ``LayerNorm_k(Linear_k(sine(reference)))`` (2D -> 2D) split
  into ``(query_pos, content)``, the first and the second D channels (Co-Deformable-DETR's
  ``forward_aux``); the query position is used unchanged by every decoder layer
  (a decoder without ``ref_point_head``) and gets the head's ``head_pos_embed`` added (below);
- in both styles ``LayerNorm_k(Linear_k(feature))`` of the sample's gathered feature is added to
  the content when ``feat_dim`` is set (Co-Deformable-DETR's ``with_coord_feat``).

``head_pos_embed="scalar"`` reproduces a bug the Co-DETR authors keep for their ResNet-50
results: ``nn.Embedding(num_co_heads, 1, 1, embed_dims)``, i.e. ``num_embeddings=K``,
``embedding_dim=1``, ``padding_idx=1``, ``max_norm=256``, meant as ``nn.Embedding(K, D)``. Its
``weight[k]`` (shape (1,)) is added to head k's query positions, broadcast over the D channels: one
learnable scalar per head. As the official code indexes ``weight`` directly (no ``forward`` call)
and its ``init_weights`` re-initialises every >= 2-d transformer parameter with Xavier, neither
``padding_idx`` nor ``max_norm`` has any effect there: row 1 starts non-zero and is trained like
row 0. We do the same (Xavier-uniform init of the (K, 1) weight, direct indexing).
``head_pos_embed="vector"`` is the intended ``nn.Embedding(K, D)``; ``"none"`` adds nothing.

Official reference: ``get_aux_targets`` / ``forward_aux`` of Co-DETR's ``CoDeformDETRHead`` and
``CoDeformableDetrTransformer`` / ``CoDinoTransformer``.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from codetr.layers.box_ops import box_xyxy_to_cxcywh, inverse_sigmoid
from codetr.layers.position_encoding import get_sine_pos_embed
from codetr.layers.transformer_blocks import xavier_uniform_matrices
from codetr.modeling.heads.base import AssignedSamples
from codetr.modeling.queries.fixed_target import FixedTargetQueries

__all__ = ["select_positive_queries", "PositiveQueries"]


def select_positive_queries(
    samples: AssignedSamples,
    image_sizes: Sequence[Tuple[int, int]],
    num_classes: int,
    max_queries: int = 300,
    min_queries: int = 9,
    generator: Optional[torch.Generator] = None,
) -> Dict[str, Tensor]:
    """Choose the slots of one head's positive-query group (no learnable part).

    Args:
        samples: the head's per-image samples (absolute xyxy boxes).
        image_sizes: per image (h, w) that normalises the boxes (the unpadded image, or the
            padded one when the padding counts as image).
        num_classes: label of "no object".
        max_queries, min_queries: bounds of the per-image slot count ``n``.
        generator: optional RNG for the random subsets (tests).

    Returns dict of (B, n, ...) tensors: "ref_boxes" normalised cxcywh in (0, 1), "labels"
    int64 (``num_classes`` for negatives and padding), "boxes" normalised cxcywh targets (zeros
    where not positive), "valid" / "positive" bool, and "feats" (B, n, C) when the samples carry
    features (zeros at padding), else absent.
    """
    batch = len(samples.pos_boxes)
    most = max((p.shape[0] for p in samples.pos_boxes), default=0)
    n = max(min_queries, min(max_queries, most))
    ref = samples.pos_boxes[0].new_zeros(batch, n, 4) if batch else torch.zeros(0, n, 4)
    device = ref.device
    labels = torch.full((batch, n), num_classes, dtype=torch.int64, device=device)
    boxes = torch.zeros(batch, n, 4, device=device)
    valid = torch.zeros(batch, n, dtype=torch.bool, device=device)
    positive = torch.zeros_like(valid)
    pos_feats, neg_feats = samples.pos_feats, samples.neg_feats
    feats = None
    if pos_feats is not None:
        feats = pos_feats[0].new_zeros(batch, n, pos_feats[0].shape[-1])
    ref = ref.float()
    for b in range(batch):
        h, w = image_sizes[b]
        scale = torch.tensor([w, h, w, h], dtype=torch.float32, device=device)
        num_pos = samples.pos_boxes[b].shape[0]
        keep = torch.randperm(num_pos, generator=generator)[:n].to(device) if num_pos > n else None
        pos_idx = keep if keep is not None else torch.arange(num_pos, device=device)
        p = pos_idx.numel()
        num_neg = min(n - p, samples.neg_boxes[b].shape[0])
        neg_idx = torch.randperm(samples.neg_boxes[b].shape[0], generator=generator)[:num_neg].to(device)
        slot_boxes = torch.cat([samples.pos_boxes[b][pos_idx], samples.neg_boxes[b][neg_idx]]).float()
        m = slot_boxes.shape[0]
        ref[b, :m] = box_xyxy_to_cxcywh(slot_boxes / scale)
        labels[b, :p] = samples.pos_labels[b][pos_idx].long()
        boxes[b, :p] = box_xyxy_to_cxcywh(samples.pos_targets[b][pos_idx].float() / scale)
        valid[b, :m] = True
        positive[b, :p] = True
        if feats is not None:
            feats[b, :p] = pos_feats[b][pos_idx]
            feats[b, p:m] = neg_feats[b][neg_idx]
    # DINO's reference convention: logit round trip (clamped into (0, 1)); padding -> 0.5
    ref = (inverse_sigmoid(ref) * valid[..., None]).sigmoid()
    out = {"ref_boxes": ref, "labels": labels, "boxes": boxes, "valid": valid, "positive": positive}
    if feats is not None:
        out["feats"] = feats
    return out


STYLES = ("co_dino", "co_deformable")
HEAD_POS_EMBEDS = ("none", "scalar", "vector")


class PositiveQueries(nn.Module):
    """Per auxiliary head k, builds its group of positive queries (``FixedTargetQueries``).

    Args:
        num_heads: number of auxiliary heads K (one projection per head).
        embed_dim: decoder width D; the box sine embedding has 2 * D channels (4 coordinates x
            D / 2, temperature 10000, scale 2 pi, order cx, cy, w, h as Co-DETR's
            ``get_proposal_pos_embed``).
        num_classes: label of "no object".
        max_queries, min_queries: see ``select_positive_queries`` (Co-DETR: 300 and 9).
        feat_dim: None (Co-DINO), or the width of the samples' features, which are then added
            to the content queries through ``LayerNorm(Linear(feat_dim -> D))`` per head
            (Co-Deformable-DETR).
        style: "co_dino" (``pos_trans.k`` Linear 2D -> D + LayerNorm(D): content only) or
            "co_deformable" (``pos_trans.k`` Linear 2D -> 2D + LayerNorm(2D): query position and
            content; the queries carry ``query_pos``). See the module docstring.
        head_pos_embed: "co_deformable" only: "scalar" (the official kept bug, a (K, 1)
            ``head_pos_embed.weight``), "vector" (the intended (K, D) embedding) or "none".
    """

    def __init__(
        self,
        num_heads: int,
        embed_dim: int = 256,
        num_classes: int = 80,
        max_queries: int = 300,
        min_queries: int = 9,
        feat_dim: Optional[int] = None,
        style: str = "co_dino",
        head_pos_embed: str = "none",
    ):
        super().__init__()
        if not 1 <= min_queries <= max_queries:
            raise ValueError(f"PositiveQueries: need 1 <= min_queries <= max_queries, got {min_queries}, {max_queries}")
        if style not in STYLES:
            raise ValueError(f"PositiveQueries: style={style!r}; expected one of {STYLES}")
        if head_pos_embed not in HEAD_POS_EMBEDS:
            raise ValueError(f"PositiveQueries: head_pos_embed={head_pos_embed!r}; expected one of {HEAD_POS_EMBEDS}")
        if style == "co_dino" and head_pos_embed != "none":
            raise ValueError("PositiveQueries: head_pos_embed is part of the co_deformable style (Co-DINO has none)")
        self.num_heads = num_heads
        self.embed_dim = embed_dim
        self.num_classes = num_classes
        self.max_queries = max_queries
        self.min_queries = min_queries
        self.feat_dim = feat_dim
        self.style = style
        width = embed_dim if style == "co_dino" else 2 * embed_dim
        self.pos_trans = nn.ModuleList(nn.Linear(2 * embed_dim, width) for _ in range(num_heads))
        self.pos_trans_norm = nn.ModuleList(nn.LayerNorm(width) for _ in range(num_heads))
        if feat_dim is not None:
            self.feat_trans = nn.ModuleList(nn.Linear(feat_dim, embed_dim) for _ in range(num_heads))
            self.feat_trans_norm = nn.ModuleList(nn.LayerNorm(embed_dim) for _ in range(num_heads))
        self.head_pos_embed = None
        if head_pos_embed == "scalar":
            # the official nn.Embedding(num_co_heads, 1, 1, embed_dims) (see the module docstring)
            padding_idx = 1 if num_heads >= 2 else None  # the official construction needs K >= 2
            self.head_pos_embed = nn.Embedding(num_heads, 1, padding_idx=padding_idx, max_norm=embed_dim)
        elif head_pos_embed == "vector":
            self.head_pos_embed = nn.Embedding(num_heads, embed_dim)
        if style == "co_dino":
            for lin in self.pos_trans:
                nn.init.xavier_uniform_(lin.weight)
                nn.init.zeros_(lin.bias)
        else:  # the official CoDeformableDetrTransformer.init_weights: Xavier for every >= 2-d parameter
            xavier_uniform_matrices(self)

    def forward(
        self,
        samples: AssignedSamples,
        head_index: int,
        image_sizes: Sequence[Tuple[int, int]],
        generator: Optional[torch.Generator] = None,
    ) -> FixedTargetQueries:
        """The positive-query group of head ``head_index`` (one group, ``n`` slots per image):
        content (B, n, D) and, in the co_deformable style, query_pos (B, n, D); both zero at
        padded slots."""
        sel = select_positive_queries(
            samples, image_sizes, self.num_classes, self.max_queries, self.min_queries, generator
        )
        k = head_index
        dtype = self.pos_trans[k].weight.dtype
        embed = get_sine_pos_embed(sel["ref_boxes"], self.embed_dim // 2, exchange_xy=False).to(dtype)
        content = self.pos_trans_norm[k](self.pos_trans[k](embed))
        query_pos = None
        if self.style == "co_deformable":
            query_pos, content = content[..., : self.embed_dim], content[..., self.embed_dim :]
            if self.head_pos_embed is not None:
                query_pos = query_pos + self.head_pos_embed.weight[k]  # (1,) or (D,): broadcast
            query_pos = query_pos * sel["valid"][..., None].to(query_pos.dtype)
        if self.feat_dim is not None:
            if "feats" not in sel:
                raise ValueError(
                    f"PositiveQueries: feat_dim={self.feat_dim} but head {k}'s samples carry no features "
                    "(build the head with return_features=True)"
                )
            content = content + self.feat_trans_norm[k](self.feat_trans[k](sel["feats"].to(dtype)))
        content = content * sel["valid"][..., None].to(content.dtype)
        return FixedTargetQueries(
            content=content,
            ref_boxes=sel["ref_boxes"],
            labels=sel["labels"],
            boxes=sel["boxes"],
            valid=sel["valid"],
            positive=sel["positive"],
            num_groups=1,
            group_size=sel["labels"].shape[1],
            query_pos=query_pos,
        )
