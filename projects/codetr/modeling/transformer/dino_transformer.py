"""DINO transformer: deformable encoder, two-stage proposals with mixed query selection, and
the DINO decoder. The stages are separate methods so that a composition (Co-DETR) can reuse the
encoder memory and run extra query groups through the shared decoder.

Options turn it into Deformable-DETR++ (Co-Deformable-DETR's ``CoDeformableDetrTransformer``,
mmdet's ``DeformableDetrTransformer`` with ``mixed_selection``): a decoder built with
``query_pos="given", post_norm=False`` (the transformer then computes the query positions with
``pos_trans``), ``select_by="first_class"``, ``enc_outputs="all"``.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from codetr.layers import MSDeformAttn
from codetr.layers.mlp import MLP
from codetr.layers.position_encoding import get_sine_pos_embed

from .decoder import DINODecoder, init_heads
from .encoder import DeformableEncoder
from .utils import flatten_levels, get_valid_ratios

__all__ = ["DINOTransformer", "gen_encoder_output_proposals"]

SELECT_BY = ("max", "first_class")
ENC_OUTPUTS = ("topk", "all")


def gen_encoder_output_proposals(
    memory: Tensor, memory_mask: Tensor, shapes: List[Tuple[int, int]]
) -> Tuple[Tensor, Tensor, Tensor]:
    """One proposal per encoder position: centre at the pixel centre (normalised by the level's
    valid extent), width = height = 0.05 * 2^level.

    Args:
        memory: (N, S, C); memory_mask: (N, S) bool, True at padding; shapes: L (H_l, W_l).

    Returns:
        output_memory (N, S, C): memory zeroed at invalid positions;
        proposals (N, S, 4): logit of normalised cxcywh, +inf at invalid positions;
        valid (N, S) bool: not padded and all proposal coordinates in (0.01, 0.99).
    """
    n = memory.shape[0]
    proposals, start = [], 0
    for lvl, (h, w) in enumerate(shapes):
        mask = memory_mask[:, start : start + h * w].view(n, h, w)
        valid_h = (~mask[:, :, 0]).sum(1).float()
        valid_w = (~mask[:, 0, :]).sum(1).float()
        ys, xs = torch.meshgrid(
            torch.arange(h, dtype=torch.float32, device=memory.device),
            torch.arange(w, dtype=torch.float32, device=memory.device),
            indexing="ij",
        )
        grid = torch.stack([xs, ys], -1).view(1, h * w, 2) + 0.5
        centres = grid / torch.stack([valid_w, valid_h], -1).view(n, 1, 2)
        wh = torch.full_like(centres, 0.05 * 2.0**lvl)
        proposals.append(torch.cat([centres, wh], -1))
        start += h * w
    proposals = torch.cat(proposals, 1)
    valid = ((proposals > 0.01) & (proposals < 0.99)).all(-1) & ~memory_mask
    proposals = torch.log(proposals / (1 - proposals)).masked_fill(~valid[..., None], float("inf"))
    output_memory = memory.masked_fill(~valid[..., None], 0.0)
    return output_memory, proposals, valid


class DINOTransformer(nn.Module):
    """Encoder + two-stage mixed query selection + DINO decoder.

    Args:
        encoder: a ``DeformableEncoder``.
        decoder: a ``DINODecoder`` (owns the 6 decoder class/box heads). Its ``query_pos`` says
            where the matching queries' positions come from:
            "ref_point_head" (DINO): the decoder computes them at every layer from the current
            reference box;
            "given" (Deformable-DETR++ with mixed selection): this transformer computes them
            once, from the selected proposal boxes, ``pos_trans_norm(pos_trans(sine(box)))[..., :C]``
            with ``pos_trans`` a Linear 2C -> 2C and ``pos_trans_norm`` a LayerNorm(2C) (the
            second half is discarded, as in the official code).
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
        decoder: DINODecoder,
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
                raise ValueError(f"DINOTransformer: {name}={value!r}; expected one of {allowed}")
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
        if self.gives_query_pos:
            self.pos_trans = nn.Linear(2 * embed_dim, 2 * embed_dim)
            self.pos_trans_norm = nn.LayerNorm(2 * embed_dim)
        self.init_weights()

    @property
    def gives_query_pos(self) -> bool:
        """True when this transformer computes the matching queries' positions (``pos_trans``):
        its decoder was built with ``query_pos="given"`` (Deformable-DETR++)."""
        return self.decoder.query_pos == "given"

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

    def encode(self, features: List[Tensor], masks: List[Tensor], pos_embeds: List[Tensor]) -> Dict:
        """Run the encoder.

        Args:
            features: L maps (N, C, H_l, W_l), finest first.
            masks: L (N, H_l, W_l) bool, True at padding.
            pos_embeds: L (N, C, H_l, W_l) position embeddings (without level embedding).

        Returns dict:
            memory (N, S, C), mask_flatten (N, S) bool, spatial_shapes (L, 2) int64 (H, W),
            level_start_index (L,) int64, valid_ratios (N, L, 2) (w, h), shapes: L (H, W) ints.
        """
        if len(features) != self.num_feature_levels:
            raise ValueError(f"DINOTransformer: built for {self.num_feature_levels} levels, got {len(features)}")
        src, spatial_shapes, level_start_index, shapes = flatten_levels(features)
        mask_flatten = flatten_levels(masks)[0]
        pos = flatten_levels([p + e.view(1, -1, 1, 1) for p, e in zip(pos_embeds, self.level_embeds)])[0]
        valid_ratios = get_valid_ratios(masks)
        memory = self.encoder(src, pos.to(src.dtype), shapes, spatial_shapes, level_start_index, valid_ratios,
                              mask_flatten)
        return {
            "memory": memory,
            "mask_flatten": mask_flatten,
            "spatial_shapes": spatial_shapes,
            "level_start_index": level_start_index,
            "valid_ratios": valid_ratios,
            "shapes": shapes,
        }

    @staticmethod
    def split_memory(enc: Dict) -> List[Tensor]:
        """The encoder memory (N, S, C) of ``encode`` back as L maps (N, C, H_l, W_l), finest
        first (Co-DETR's pyramid for its auxiliary heads)."""
        memory = enc["memory"]
        sizes = [h * w for h, w in enc["shapes"]]
        return [
            m.transpose(1, 2).reshape(memory.shape[0], memory.shape[2], h, w)
            for m, (h, w) in zip(memory.split(sizes, 1), enc["shapes"])
        ]

    def select_queries(self, enc: Dict) -> Dict[str, Tensor]:
        """Two-stage mixed query selection from the encoder output of ``encode``.

        Returns dict:
            tgt (N, num_queries, C): learned content queries;
            ref_boxes (N, num_queries, 4): detached top-k encoder boxes, normalised cxcywh;
            query_pos (N, num_queries, C): only when ``gives_query_pos``, the
            queries' positions ``pos_trans_norm(pos_trans(sine(ref_boxes)))[..., :C]``;
            enc_logits (N, M, K), enc_boxes (N, M, 4): the encoder predictions for the encoder
            loss (gradients flow): of the M = num_queries top-k positions (``enc_outputs="topk"``)
            or of all M = S positions (``"all"``; boxes of invalid positions are 1, their
            proposal logits being +inf, as in the official code).
        """
        memory = enc["memory"]
        if memory.shape[1] < self.num_queries:
            raise ValueError(
                f"DINOTransformer: num_queries ({self.num_queries}) exceeds the {memory.shape[1]} encoder "
                f"positions of feature maps {enc['shapes']}; use fewer queries or larger images"
            )
        output_memory, proposals, valid = gen_encoder_output_proposals(memory, enc["mask_flatten"], enc["shapes"])
        output_memory = self.enc_output_norm(self.enc_output(output_memory))
        logits = self.enc_class_embed(output_memory)
        coords_unact = self.enc_bbox_embed(output_memory) + proposals
        scores = logits.max(-1).values if self.select_by == "max" else logits[..., 0]
        scores = scores.masked_fill(~valid, float("-inf"))
        topk = scores.topk(self.num_queries, dim=1).indices
        topk_coords = coords_unact.gather(1, topk[..., None].expand(-1, -1, 4)).sigmoid()
        n = memory.shape[0]
        out = {"tgt": self.tgt_embed.weight[None].expand(n, -1, -1), "ref_boxes": topk_coords.detach()}
        if self.gives_query_pos:
            out["query_pos"] = self.proposal_query_pos(out["ref_boxes"])
        if self.enc_outputs == "topk":
            out["enc_logits"] = logits.gather(1, topk[..., None].expand(-1, -1, logits.shape[-1]))
            out["enc_boxes"] = topk_coords
        else:
            out["enc_logits"], out["enc_boxes"] = logits, coords_unact.sigmoid()
        return out

    def proposal_query_pos(self, boxes: Tensor) -> Tensor:
        """Deformable-DETR++'s query position of proposal boxes (N, Q, 4) normalised cxcywh:
        ``pos_trans_norm(pos_trans(sine(boxes)))[..., :C]`` (N, Q, C); ``sine`` embeds cx, cy,
        w, h in that order with C / 2 channels each (temperature 10000, scale 2 pi)."""
        embed = get_sine_pos_embed(boxes, self.embed_dim // 2, exchange_xy=False).to(self.pos_trans.weight.dtype)
        return self.pos_trans_norm(self.pos_trans(embed))[..., : self.embed_dim]

    def decode(
        self,
        enc: Dict,
        tgt: Tensor,
        ref_boxes: Tensor,
        attn_mask: Optional[Tensor] = None,
        query_pos: Optional[Tensor] = None,
    ) -> Dict[str, Tensor]:
        """Run the shared decoder over queries (N, Q, C) with reference boxes (N, Q, 4) on the
        encoder output ``enc``; see ``DINODecoder.forward`` for ``attn_mask``, ``query_pos``
        (N, Q, C) (only when ``gives_query_pos``) and the outputs."""
        return self.decoder(
            tgt,
            ref_boxes,
            enc["memory"],
            enc["spatial_shapes"],
            enc["level_start_index"],
            enc["valid_ratios"],
            enc["mask_flatten"],
            attn_mask,
            query_pos,
        )
