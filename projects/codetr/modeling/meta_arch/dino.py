"""DINO (Zhang et al. 2023): deformable DETR with contrastive denoising (CDN), mixed query
selection and look-forward-twice; with a DN-DETR ``DenoisingGenerator``, DN-Deformable-DETR;
with a Deformable-DETR++ transformer (no denoising), Co-Deformable-DETR's detector.

What is DINO's own: the matching queries come from the transformer's two-stage mixed query
selection (top-k encoder proposals as reference boxes, learned contents), with the encoder
predictions as an extra loss ("enc_outputs"). Look-forward-twice is the decoder's option
(``DeformableDecoder(look_forward_twice=True)``), CDN the denoising generator's; the rest of the
flow is ``QueryDetector``'s.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from detectron2.modeling import META_ARCH_REGISTRY, Backbone
from torch import nn

from codetr.modeling.criterion import DETRCriterion
from codetr.modeling.encoders import EncoderOutput
from codetr.modeling.necks import ChannelMapper
from codetr.modeling.queries import QueryGroup
from codetr.modeling.queries.denoising import DenoisingGenerator
from codetr.modeling.queries.fixed_target import FixedTargetQueries
from codetr.modeling.transformers import DeformableTransformer

from .query_detector import QueryDetector

__all__ = ["DINO"]


@META_ARCH_REGISTRY.register()
class DINO(QueryDetector):
    """DINO detector.

    Args:
        backbone, position_embedding, neck, criterion, pixel_mean, pixel_std,
        select_box_nums_for_evaluation, aux_loss, size_divisibility, nms, nms_iou_threshold,
        nms_pre_topk, input_format: see ``QueryDetector`` (Co-DINO uses linear Soft-NMS, IoU
            0.8, on the top-900 pairs).
        transformer: ``DeformableTransformer``.
        denoising: ``DenoisingGenerator`` (CDN for DINO, DN for DN-Deformable-DETR) or None.
        num_classes, num_queries: optional; checked against the heads / criterion and the
            transformer (configs interpolate them, as detrex's ``"${..num_classes}"``, so that
            ``model.num_classes=8 model.num_queries=100`` works on the command line).
    """

    def __init__(
        self,
        backbone: Backbone,
        position_embedding: nn.Module,
        neck: ChannelMapper,
        transformer: DeformableTransformer,
        criterion: DETRCriterion,
        denoising: Optional[DenoisingGenerator] = None,
        num_classes: Optional[int] = None,
        num_queries: Optional[int] = None,
        **kwargs,
    ):
        super().__init__(backbone, position_embedding, neck, transformer, criterion, denoising, **kwargs)
        if denoising is not None and transformer.decoder.ref_point_head is None:
            raise ValueError(
                "DINO: denoising queries take their positions from the decoder's ref_point_head; this decoder "
                "(Deformable-DETR++, ref_point_head=False) has none: set denoising=None"
            )
        if num_queries is not None and num_queries != transformer.num_queries:
            raise ValueError(f"DINO: num_queries={num_queries} but transformer.num_queries={transformer.num_queries}")
        self.check_num_classes(num_classes, {
            "transformer.decoder.class_embed": transformer.decoder.class_embed[0].out_features,
            "transformer.enc_class_embed": transformer.enc_class_embed.out_features,
        })

    def matching_queries(
        self, enc: EncoderOutput, fixed: Optional[FixedTargetQueries] = None
    ) -> Tuple[QueryGroup, Dict[str, Dict]]:
        """Mixed query selection: learned contents on the top-k encoder proposals; the encoder
        predictions go to the criterion as "enc_outputs"."""
        group, enc_outputs = self.transformer.select_queries(enc)
        content = group.content
        if self.denoising is not None and not self.denoising.contrastive:
            content = torch.cat([content[..., :-1], torch.zeros_like(content[..., -1:])], -1)  # DN indicator 0
        return QueryGroup(content, group.reference, group.query_pos), {"enc_outputs": enc_outputs}
