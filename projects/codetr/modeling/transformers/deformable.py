"""The deformable transformer: deformable encoder, two-stage query selection and a deformable
decoder (DINO, DN-Deformable-DETR, Deformable-DETR++). It holds the parameters; the query-detector
meta-architecture drives it: ``encode`` -> ``EncoderOutput``, ``select_queries`` -> the matching
``QueryGroup`` and the encoder predictions, ``decoder(groups, enc, attn_mask)``.

Deformable-DETR++ (Co-Deformable-DETR's ``CoDeformableDetrTransformer``, mmdet's
``DeformableDetrTransformer`` with ``mixed_selection``): a decoder without ``ref_point_head``
and ``post_norm=False``; the matching queries then take fixed positions from their proposal
boxes (``pos_trans``), ``select_by="first_class"``, ``enc_outputs="all"``.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Tuple

import torch
from torch import Tensor, nn

from codetr.layers import MSDeformAttn
from codetr.layers.mlp import MLP
from codetr.layers.position_encoding import get_sine_pos_embed
from codetr.modeling.decoders import DeformableDecoder, init_heads
from codetr.modeling.encoders import DeformableEncoder, EncoderOutput
from codetr.modeling.queries import QueryGroup
from codetr.modeling.queries.two_stage import gen_encoder_output_proposals

__all__ = ["DeformableTransformer"]

SELECT_BY = ("max", "first_class")
ENC_OUTPUTS = ("topk", "all")


class DeformableTransformer(nn.Module):
    """Deformable encoder + two-stage mixed query selection + deformable decoder.

    Args:
        encoder: a ``DeformableEncoder``.
        decoder: a ``DeformableDecoder`` (a ``QueryDecoder``; owns the decoder class/box heads).
            Without a ``ref_point_head`` (Deformable-DETR++ with mixed selection), the matching
            queries take fixed positions computed once from their proposal boxes,
            ``pos_trans_norm(pos_trans(sine(box)))[..., :C]`` with ``pos_trans`` a Linear
            2C -> 2C and ``pos_trans_norm`` a LayerNorm(2C) (the second half is discarded, as in
            the official code); with one (DINO), the decoder derives them at every layer.
        num_feature_levels: L.
        num_queries: number of matching queries (top-k encoder proposals / learned contents).
        embed_dim: C.
        num_classes: K of the encoder class head.
        select_by: score of an encoder position for the top-k selection: "max" over the classes
            (DINO) or "first_class", the logit of class 0 (Deformable-DETR, whose encoder head
            is trained with binary labels: see ``DETRCriterion(binary_enc_loss=True)``).
        enc_outputs: which encoder predictions ``select_queries`` returns for the encoder loss:
            "topk" (DINO: the selected positions) or "all" (Deformable-DETR: every position).
    """

    def __init__(
        self,
        encoder: DeformableEncoder,
        decoder: DeformableDecoder,
        num_feature_levels: int = 4,
        num_queries: int = 900,
        embed_dim: int = 256,
        num_classes: int = 80,
        select_by: str = "max",
        enc_outputs: str = "topk",
    ):
        super().__init__()
        for name, value, allowed in (("select_by", select_by, SELECT_BY), ("enc_outputs", enc_outputs, ENC_OUTPUTS)):
            if value not in allowed:
                raise ValueError(f"DeformableTransformer: {name}={value!r}; expected one of {allowed}")
        self.select_by = select_by
        self.enc_outputs = enc_outputs
        self.encoder = encoder
        self.decoder = decoder
        self.num_feature_levels = num_feature_levels
        self.num_queries = num_queries
        self.embed_dim = embed_dim
        self.level_embeds = nn.Parameter(torch.empty(num_feature_levels, embed_dim))
        self.enc_output = nn.Linear(embed_dim, embed_dim)
        self.enc_output_norm = nn.LayerNorm(embed_dim)
        self.tgt_embed = nn.Embedding(num_queries, embed_dim)
        self.enc_class_embed = nn.Linear(embed_dim, num_classes)
        self.enc_bbox_embed = MLP(embed_dim, embed_dim, 4, 3)
        self.proposal_positions = decoder.ref_point_head is None
        if self.proposal_positions:
            self.pos_trans = nn.Linear(2 * embed_dim, 2 * embed_dim)
            self.pos_trans_norm = nn.LayerNorm(2 * embed_dim)
        self.init_weights()

    def init_weights(self) -> None:
        """Xavier for every matrix except the prediction heads, Deformable-DETR init for the
        deformable attentions, N(0, 1) level embeddings, focal prior / zero box deltas for heads."""
        for name, p in self.named_parameters():
            if p.dim() > 1 and "class_embed" not in name and "bbox_embed" not in name:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m.reset_parameters()
        nn.init.normal_(self.level_embeds)
        init_heads([self.enc_class_embed], [self.enc_bbox_embed])

    def encode(self, features: List[Tensor], masks: List[Tensor], pos_embeds: List[Tensor]) -> EncoderOutput:
        """Run the encoder.

        Args:
            features: L maps (N, C, H_l, W_l), finest first.
            masks: L (N, H_l, W_l) bool, True at padding.
            pos_embeds: L (N, C, H_l, W_l) position embeddings (without level embedding).
        """
        if len(features) != self.num_feature_levels:
            raise ValueError(f"DeformableTransformer: built for {self.num_feature_levels} levels, got {len(features)}")
        pos_embeds = [p + e.view(1, -1, 1, 1) for p, e in zip(pos_embeds, self.level_embeds)]
        levels = EncoderOutput.from_levels(features, masks, pos_embeds)
        memory = self.encoder(levels.memory, levels.memory_pos, levels.shapes, levels.spatial_shapes,
                              levels.level_start_index, levels.valid_ratios, levels.memory_mask)
        return dataclasses.replace(levels, memory=memory)

    def select_queries(self, enc: EncoderOutput) -> Tuple[QueryGroup, Dict[str, Tensor]]:
        """Two-stage mixed query selection.

        Returns:
            the matching ``QueryGroup``: learned contents (N, num_queries, C), detached top-k
            encoder boxes as references (normalised cxcywh), and, without a decoder
            ``ref_point_head``, their proposal positions ``proposal_query_pos``;
            the encoder predictions for the encoder loss (gradients flow), a criterion dict
            {"pred_logits" (N, M, K), "pred_boxes" (N, M, 4)}: of the M = num_queries top-k
            positions (``enc_outputs="topk"``) or of all M = S positions (``"all"``; boxes of
            invalid positions are 1, their proposal logits being +inf, as in the official code).
        """
        memory = enc.memory
        if memory.shape[1] < self.num_queries:
            raise ValueError(
                f"DeformableTransformer: num_queries ({self.num_queries}) exceeds the {memory.shape[1]} encoder "
                f"positions of feature maps {enc.shapes}; use fewer queries or larger images"
            )
        output_memory, proposals, valid = gen_encoder_output_proposals(memory, enc.memory_mask, enc.shapes)
        output_memory = self.enc_output_norm(self.enc_output(output_memory))
        logits = self.enc_class_embed(output_memory)
        coords_unact = self.enc_bbox_embed(output_memory) + proposals
        scores = logits.max(-1).values if self.select_by == "max" else logits[..., 0]
        scores = scores.masked_fill(~valid, float("-inf"))
        topk = scores.topk(self.num_queries, dim=1).indices
        topk_coords = coords_unact.gather(1, topk[..., None].expand(-1, -1, 4)).sigmoid()
        ref_boxes = topk_coords.detach()
        query_pos = self.proposal_query_pos(ref_boxes) if self.proposal_positions else None
        group = QueryGroup(self.tgt_embed.weight[None].expand(memory.shape[0], -1, -1), ref_boxes, query_pos)
        if self.enc_outputs == "topk":
            enc_logits = logits.gather(1, topk[..., None].expand(-1, -1, logits.shape[-1]))
            enc_boxes = topk_coords
        else:
            enc_logits, enc_boxes = logits, coords_unact.sigmoid()
        return group, {"pred_logits": enc_logits, "pred_boxes": enc_boxes}

    def proposal_query_pos(self, boxes: Tensor) -> Tensor:
        """Deformable-DETR++'s query position of proposal boxes (N, Q, 4) normalised cxcywh:
        ``pos_trans_norm(pos_trans(sine(boxes)))[..., :C]`` (N, Q, C); ``sine`` embeds cx, cy,
        w, h in that order with C / 2 channels each (temperature 10000, scale 2 pi)."""
        embed = get_sine_pos_embed(boxes, self.embed_dim // 2, exchange_xy=False).to(self.pos_trans.weight.dtype)
        return self.pos_trans_norm(self.pos_trans(embed))[..., : self.embed_dim]
