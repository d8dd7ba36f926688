"""Faster R-CNN as Co-DETR's two-stage auxiliary head: Detectron2's ``RPN`` and
``StandardROIHeads``, wrapped so that training also returns the RoI head's assignment.

``RCNNAuxHead`` runs the RPN (its own losses), samples proposals with the RoI head's matcher and
sampler (GT boxes appended as proposals), and computes the box head's losses, as
``StandardROIHeads`` does; it returns the sampled proposals as an ``AssignedSamples``: positives are
the sampled proposals matched to a ground truth (detached proposal boxes, the matched class and
GT box), negatives the sampled background proposals (Co-DETR's ``CoStandardRoIHead``); with
``return_features`` each sample also carries its RoIAlign feature averaged over the 7 x 7 bins.

``build_rcnn_aux_head`` builds it with Co-DETR's settings (§1.5 of the reference notes).
"""
from __future__ import annotations

import contextlib
import math
from typing import Dict, List, Optional, Sequence

from detectron2.layers import ShapeSpec
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.matcher import Matcher
from detectron2.modeling.poolers import ROIPooler
from detectron2.modeling.proposal_generator import RPN, StandardRPNHead
from detectron2.modeling.roi_heads import FastRCNNConvFCHead, FastRCNNOutputLayers, StandardROIHeads
from detectron2.structures import ImageList, Instances
from detectron2.utils import events
from torch import Tensor, nn

from codetr.modeling.heads.base import AssignedSamples

__all__ = ["RCNNAuxHead", "build_rcnn_aux_head", "event_storage"]


def event_storage():
    """Detectron2's RPN / RoI heads log to the current ``EventStorage``; open a throw-away one
    when the caller (a test, a script) has none."""
    if events._CURRENT_STORAGE_STACK:
        return contextlib.nullcontext()
    return events.EventStorage()


class RCNNAuxHead(nn.Module):
    """RPN + RoI box head on a feature pyramid.

    Args:
        rpn: a Detectron2 ``RPN`` (its ``loss_weight`` carries the loss scaling).
        roi_heads: a Detectron2 ``StandardROIHeads`` (box head only).
        return_features: return per-sample mean-pooled RoI features (Co-Deformable-DETR).
    """

    def __init__(self, rpn: RPN, roi_heads: StandardROIHeads, return_features: bool = False):
        super().__init__()
        self.rpn = rpn
        self.roi_heads = roi_heads
        self.return_features = return_features

    def forward(self, images: ImageList, features: Dict[str, Tensor], gt_instances: Optional[List[Instances]] = None):
        """Training: ``(losses, AssignedSamples)``; inference: N ``Instances`` (resized-image coords)."""
        with event_storage():
            if not self.training:
                proposals, _ = self.rpn(images, features)
                results, _ = self.roi_heads(images, features, proposals)
                return results
            proposals, losses = self.rpn(images, features, gt_instances)
            sampled = self.roi_heads.label_and_sample_proposals(proposals, gt_instances)
            heads = self.roi_heads
            pooled = heads.box_pooler([features[f] for f in heads.box_in_features], [p.proposal_boxes for p in sampled])
            predictions = heads.box_predictor(heads.box_head(pooled))
            losses.update(heads.box_predictor.losses(predictions, sampled))
        return losses, self.samples(sampled, pooled.mean((2, 3)) if self.return_features else None)

    def samples(self, sampled: List[Instances], pooled: Optional[Tensor]):
        num_classes = self.roi_heads.num_classes
        out = {k: [] for k in ("pos_boxes", "pos_labels", "pos_targets", "neg_boxes", "pos_feats", "neg_feats")}
        feats = pooled.split([len(p) for p in sampled]) if pooled is not None else [None] * len(sampled)
        for p, f in zip(sampled, feats):
            pos = (p.gt_classes >= 0) & (p.gt_classes < num_classes)
            boxes = p.proposal_boxes.tensor.detach()
            out["pos_boxes"].append(boxes[pos])
            out["pos_labels"].append(p.gt_classes[pos])
            out["pos_targets"].append(p.gt_boxes.tensor[pos] if p.has("gt_boxes") else boxes[pos])
            out["neg_boxes"].append(boxes[~pos])
            if f is not None:
                out["pos_feats"].append(f[pos])
                out["neg_feats"].append(f[~pos])
        if pooled is None:
            out["pos_feats"] = out["neg_feats"] = None
        return AssignedSamples(**out)


def build_rcnn_aux_head(
    num_classes: int,
    in_features: Sequence[str],
    strides: Sequence[int],
    in_channels: int = 256,
    num_roi_levels: int = 5,
    loss_scale: float = 12.0,
    rpn_batch_size_per_image: int = 256,
    rpn_positive_fraction: float = 0.5,
    pre_nms_topk: Sequence[int] = (4000, 1000),
    post_nms_topk: Sequence[int] = (1000, 1000),
    roi_batch_size_per_image: int = 512,
    roi_positive_fraction: float = 0.25,
    fc_dim: int = 1024,
    giou_weight: float = 10.0,
    pooler_sampling_ratio: int = 0,
    return_features: bool = False,
) -> RCNNAuxHead:
    """Co-DETR's Faster R-CNN auxiliary head from Detectron2 parts.

    RPN: anchors ``4 * stride * 2^(i/3)`` (i = 0, 1, 2) x ratios (0.5, 1, 2) on every level,
    offset 0; IoU 0.3 / 0.7 with low-quality matches; 256 anchors per image, half positive; L1 box
    loss on deltas with weights (1, 1, 1, 1); NMS 0.7; ``pre_nms_topk`` per level and
    ``post_nms_topk`` per image (train, test). RoI head on the first ``num_roi_levels`` levels:
    ROIAlignV2 7x7 (``pooler_sampling_ratio`` points per bin and axis, 0 = adaptive as mmdet;
    a fixed 2 is much cheaper on CPU for large boxes; canonical box 224 at level 4 = mmdet's
    finest_scale 56 from p2, 112 from
    p3); 2 FC of ``fc_dim``; matcher IoU 0.5; 512 samples per image, 25% positive, GT appended;
    deltas weights (10, 10, 5, 5); softmax CE + GIoU (weight ``giou_weight``) on decoded boxes.
    Every loss is multiplied by ``loss_scale`` (Co-DETR: 12).
    """
    strides = list(strides)
    rpn = RPN(
        in_features=list(in_features),
        head=StandardRPNHead(in_channels=in_channels, num_anchors=9, box_dim=4),
        anchor_generator=DefaultAnchorGenerator(
            sizes=[[4 * s * 2 ** (i / 3) for i in range(3)] for s in strides],
            aspect_ratios=[[0.5, 1.0, 2.0]],
            strides=strides,
            offset=0.0,
        ),
        anchor_matcher=Matcher([0.3, 0.7], [0, -1, 1], allow_low_quality_matches=True),
        box2box_transform=Box2BoxTransform(weights=(1.0, 1.0, 1.0, 1.0)),
        batch_size_per_image=rpn_batch_size_per_image,
        positive_fraction=rpn_positive_fraction,
        pre_nms_topk=tuple(pre_nms_topk),
        post_nms_topk=tuple(post_nms_topk),
        nms_thresh=0.7,
        loss_weight={"loss_rpn_cls": loss_scale, "loss_rpn_loc": loss_scale},
        smooth_l1_beta=0.0,
    )
    roi_features = list(in_features)[:num_roi_levels]
    box_head = FastRCNNConvFCHead(
        ShapeSpec(channels=in_channels, height=7, width=7), conv_dims=[], fc_dims=[fc_dim] * 2
    )
    roi_heads = StandardROIHeads(
        box_in_features=roi_features,
        box_pooler=ROIPooler(
            output_size=7,
            scales=[1.0 / s for s in strides[:num_roi_levels]],
            sampling_ratio=pooler_sampling_ratio,
            pooler_type="ROIAlignV2",
        ),
        box_head=box_head,
        box_predictor=FastRCNNOutputLayers(
            box_head.output_shape,
            box2box_transform=Box2BoxTransform(weights=(10.0, 10.0, 5.0, 5.0)),
            num_classes=num_classes,
            test_score_thresh=0.0,
            test_nms_thresh=0.5,
            test_topk_per_image=100,
            box_reg_loss_type="giou",
            loss_weight={"loss_cls": loss_scale, "loss_box_reg": giou_weight * loss_scale},
        ),
        num_classes=num_classes,
        batch_size_per_image=roi_batch_size_per_image,
        positive_fraction=roi_positive_fraction,
        proposal_matcher=Matcher([0.5], [0, 1], allow_low_quality_matches=False),
        proposal_append_gt=True,
    )
    if not all(math.log2(s).is_integer() for s in strides):
        raise ValueError(f"build_rcnn_aux_head: strides must be powers of 2, got {strides}")
    return RCNNAuxHead(rpn, roi_heads, return_features)
