"""Conditional DETR (Meng et al. 2021) and the single-scale family built on its decoder:
DAB-DETR (Liu et al. 2022, 4-d anchors), DN-DETR (Li et al. 2022, DN-DETR denoising on DAB-DETR)
and DN on Conditional DETR (denoising on 2-d reference points).

What is the family's own: the matching queries are learned (``SingleScaleTransformer.queries``:
Conditional DETR's query embedding and reference points, or DAB-DETR's anchors); with DN-DETR
denoising the matching queries' content is the learned "unknown" label embedding with indicator
0. Everything else (encoder output, decoding the groups with the group mask, top-k inference) is
``QueryDetector``'s; the variants differ only in their parts (see ``configs/conditional_detr``).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

from detectron2.modeling import META_ARCH_REGISTRY, Backbone
from torch import nn

from codetr.modeling.criterion import DETRCriterion
from codetr.modeling.encoders import EncoderOutput
from codetr.modeling.queries import QueryGroup
from codetr.modeling.queries.denoising import DenoisingGenerator
from codetr.modeling.queries.fixed_target import FixedTargetQueries
from codetr.modeling.transformers.single_scale import SingleScaleTransformer

from .query_detector import QueryDetector

__all__ = ["ConditionalDETR"]


@META_ARCH_REGISTRY.register()
class ConditionalDETR(QueryDetector):
    """Conditional DETR / DAB-DETR / DN-DETR.

    Args:
        backbone, position_embedding, neck, criterion, pixel_mean, pixel_std,
        select_box_nums_for_evaluation, aux_loss, size_divisibility, nms, input_format: see
            ``QueryDetector`` (the papers: top-100 (Conditional DETR) / top-300 (DAB, DN), no NMS).
        transformer: ``SingleScaleTransformer``.
        denoising: None, or a DN-DETR ``DenoisingGenerator`` (``mode="dn"``); with a point
            decoder it must noise the centres only (``noise_sizes=False``) and the decoder needs
            a ``ref_point_head`` (the denoising queries' positions come from their points).
        num_classes, num_queries: optional; checked against the heads / criterion / transformer.
    """

    def __init__(
        self,
        backbone: Backbone,
        position_embedding: nn.Module,
        neck: nn.Module,
        transformer: SingleScaleTransformer,
        criterion: DETRCriterion,
        denoising: Optional[DenoisingGenerator] = None,
        num_classes: Optional[int] = None,
        num_queries: Optional[int] = None,
        **kwargs,
    ):
        super().__init__(backbone, position_embedding, neck, transformer, criterion, denoising, **kwargs)
        decoder = transformer.decoder
        if denoising is not None:
            if denoising.contrastive:
                raise ValueError("ConditionalDETR: denoising must be DN-DETR's (mode='dn'), got mode='cdn'")
            if decoder.ref_point_head is None:
                raise ValueError(
                    "ConditionalDETR: denoising queries take their positions from the decoder's ref_point_head; "
                    "build the decoder with ref_point_head=True"
                )
            if decoder.box_coder.ref_dim == 2 and denoising.noise_sizes:
                raise ValueError(
                    "ConditionalDETR: a point decoder reads only the noised centres; build the denoising with "
                    "noise_sizes=False (DN on 2-d reference points)"
                )
        if num_queries is not None and num_queries != transformer.num_queries:
            raise ValueError(f"ConditionalDETR: num_queries={num_queries} but transformer.num_queries={transformer.num_queries}")
        self.check_num_classes(num_classes, {"transformer.decoder.class_embed": decoder.class_embed.out_features})

    def matching_queries(
        self, enc: EncoderOutput, fixed: Optional[FixedTargetQueries] = None
    ) -> Tuple[QueryGroup, Dict[str, Dict]]:
        """The learned queries; with denoising, their content is the "unknown" label embedding with
        indicator 0 (in training and at inference, as DN-DETR)."""
        content = None
        if self.denoising is not None:
            content = self.denoising.matching_content()
        return self.transformer.matching_queries(enc.memory.shape[0], content), {}
