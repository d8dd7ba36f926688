"""DETR (Carion et al. 2020): the ancestor of the family, the comparator for Conditional DETR's
convergence claim.

What is DETR's own: learned queries with no reference (``LearnedPositionQueries``: positions
added at every layer, zero content), the standard-attention decoder (``DETRDecoder``), the
softmax classification over K + 1 classes with "no object" last (``DETRCriterion`` with
``class_loss="softmax"``, the matcher's softmax class cost) and its inference, the official
``PostProcess``: per query the softmax probabilities without "no object", the best class and its
probability as the score; the top ``select_box_nums_for_evaluation`` queries by that score
(all 100 of them in the official setting). Everything else (the DETR encoder on one level, the
decoding, the losses of every layer) is ``QueryDetector``'s.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

from detectron2.modeling import META_ARCH_REGISTRY, Backbone
from torch import Tensor, nn

from codetr.layers.box_ops import box_cxcywh_to_xyxy
from codetr.modeling.criterion import DETRCriterion
from codetr.modeling.encoders import EncoderOutput
from codetr.modeling.queries import QueryGroup
from codetr.modeling.queries.fixed_target import FixedTargetQueries
from codetr.modeling.transformers.single_scale import SingleScaleTransformer

from .query_detector import QueryDetector

__all__ = ["DETR"]


@META_ARCH_REGISTRY.register()
class DETR(QueryDetector):
    """DETR.

    Args:
        backbone, position_embedding, neck, criterion, pixel_mean, pixel_std,
        select_box_nums_for_evaluation, aux_loss, size_divisibility, nms, input_format: see
            ``QueryDetector`` (the paper: top-100 of 100 queries, no NMS); ``criterion`` must use
            the softmax loss (``class_loss="softmax"``).
        transformer: ``SingleScaleTransformer`` with a ``DETRDecoder`` and ``LearnedPositionQueries``.
        num_classes, num_queries: optional; checked against the class head (K + 1 outputs), the
            criterion and the transformer.
    """

    def __init__(
        self,
        backbone: Backbone,
        position_embedding: nn.Module,
        neck: nn.Module,
        transformer: SingleScaleTransformer,
        criterion: DETRCriterion,
        num_classes: Optional[int] = None,
        num_queries: Optional[int] = None,
        **kwargs,
    ):
        super().__init__(backbone, position_embedding, neck, transformer, criterion, None, **kwargs)
        if criterion.class_loss != "softmax":
            raise ValueError(
                f"DETR: criterion.class_loss={criterion.class_loss!r}; DETR's classification is a softmax over "
                "K + 1 classes ('no object' last): build the criterion with class_loss='softmax'"
            )
        outputs = transformer.decoder.class_embed.out_features
        if outputs != criterion.num_classes + 1:
            raise ValueError(
                f"DETR: the class head has {outputs} outputs; expected criterion.num_classes + 1 = "
                f"{criterion.num_classes + 1} (the classes and 'no object')"
            )
        if num_queries is not None and num_queries != transformer.num_queries:
            raise ValueError(f"DETR: num_queries={num_queries} but transformer.num_queries={transformer.num_queries}")
        self.check_num_classes(num_classes, {"transformer.decoder.class_embed (without 'no object')": outputs - 1})

    def matching_queries(
        self, enc: EncoderOutput, fixed: Optional[FixedTargetQueries] = None
    ) -> Tuple[QueryGroup, Dict[str, Dict]]:
        """The learned queries (zero content, the query embedding as positions, no reference)."""
        return self.transformer.matching_queries(enc.memory.shape[0]), {}

    def topk_pairs(self, logits: Tensor, boxes: Tensor, pre_nms: Optional[bool] = None):
        """The official ``PostProcess``: per query its best class by softmax probability ("no
        object" excluded) and that probability as its score; the top
        ``select_box_nums_for_evaluation`` queries by score (``nms_pre_topk`` for NMS to prune
        when ``pre_nms``).

        logits (N, Q, K + 1), boxes (N, Q, 4) normalised cxcywh -> scores (N, k), labels (N, k),
        boxes (N, k, 4) normalised xyxy (float32), as ``QueryDetector.topk_pairs``.
        """
        pre_nms = self.nms is not None if pre_nms is None else pre_nms
        num_queries = logits.shape[1]
        k = min(self.select_box_nums_for_evaluation, num_queries)
        if pre_nms:
            k = min(max(self.nms_pre_topk, k), num_queries)
        scores, labels = logits.float().softmax(-1)[..., :-1].max(-1)
        scores, query = scores.topk(k, dim=1)
        labels = labels.gather(1, query)
        boxes = box_cxcywh_to_xyxy(boxes.float().gather(1, query[..., None].expand(-1, -1, 4)))
        return scores, labels, boxes
