"""ATSS head (Zhang et al. 2020): the ATSS detector's head (mmdet ``ATSSHead``,
``configs/atss``) and Co-DETR's one-stage auxiliary head (Co-DETR ``CoATSSHead``).

``stacked_convs`` 3x3 conv + GroupNorm + ReLU blocks per tower (4 in mmdet's ATSS, 1 in
Co-DETR's), classification, box-delta and centerness convs, a learnable scale per level; one
square anchor of side ``anchor_scale * stride``
per location (Detectron2's ``DefaultAnchorGenerator``, offset 0); ATSS assignment
(``codetr.modeling.assigners.atss_assign``); deltas decoded with ``Box2BoxTransform`` weights
(10, 10, 5, 5) (mmdet's stds 0.1, 0.1, 0.2, 0.2) and supervised on the decoded boxes
(``reg_decoded_bbox``).

Losses (all multiplied by ``loss_scale``, Co-DETR's ``lambda_2 * num_decoder_layers`` = 12):
- ``loss_cls``: sigmoid focal loss over all anchors / all-reduced number of positives;
- ``loss_bbox``: GIoU of decoded positives, weighted by their centerness targets, / all-reduced
  sum of centerness targets (weight 2);
- ``loss_centerness``: BCE of the centerness logits of positives / number of positives.

Inference (mmdet's ``BaseDenseHead``, with the centerness as ``score_factors``): per level the
top ``test_topk_candidates`` (anchor, class) pairs by ``sigmoid(cls)`` above
``test_score_thresh``; their score becomes ``sigmoid(cls) * sigmoid(centerness)``; class-wise NMS
over the levels; the best ``test_detections_per_image``.

Boxes are absolute xyxy of the (resized) input image.
"""
from __future__ import annotations

import math
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.structures import Instances
from torch import Tensor, nn

from codetr.modeling.assigners import atss_assign
from codetr.modeling.heads.dense import DenseHead, DenseTargets, centerness_targets, conv_gn_relu
from codetr.modeling.heads.dense import dense_targets, normal_init
from codetr.modeling.losses import giou_loss, reduce_num_boxes, sigmoid_focal_loss

__all__ = ["ATSSHead"]


class ATSSHead(DenseHead):
    """ATSS head on a feature pyramid (training: losses + assigned samples; eval: detections);
    called as every ``DenseHead`` (``codetr.modeling.heads.dense``).

    Args:
        num_classes: K.
        in_features: pyramid level names, finest first (e.g. ["p2", ..., "p7"]).
        strides: stride of each level.
        stacked_convs: conv + GN + ReLU blocks per tower (mmdet ATSS: 4; Co-DETR: 1). The tower
            is one ``nn.Sequential`` (block i: conv ``3 i``, GroupNorm ``3 i + 1``).
        topk: ATSS candidates per level and ground truth (9).
        loss_scale: multiplies every loss (Co-DETR: 12).
        weight_cls, weight_bbox, weight_centerness: loss weights (1, 2, 1).
        focal_alpha, focal_gamma: focal loss parameters.
        kwargs: ``DenseHead``'s: ``in_channels``, ``feat_channels``, ``num_groups`` (pyramid
            width, tower width, GroupNorm groups: 256, 256, 32), ``anchor_scale`` (square anchor
            side in strides, 8), ``return_features`` (each sample's pyramid feature,
            ``AssignedSamples.pos_feats``), inference ``test_*`` (mmdet test_cfg: nms_pre 1000,
            NMS 0.6, 100 per image; score_thr 0 here, mmdet's ATSS 0.05).
    """

    def __init__(
        self,
        num_classes: int,
        in_features: Sequence[str],
        strides: Sequence[int],
        stacked_convs: int = 1,
        topk: int = 9,
        loss_scale: float = 1.0,
        weight_cls: float = 1.0,
        weight_bbox: float = 2.0,
        weight_centerness: float = 1.0,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        prior_prob: float = 0.01,
        test_score_thresh: float = 0.0,
        **kwargs,
    ):
        super().__init__(num_classes, in_features, strides, test_score_thresh=test_score_thresh, **kwargs)
        if stacked_convs < 1:
            raise ValueError(f"ATSSHead: stacked_convs must be >= 1, got {stacked_convs}")
        self.stacked_convs = stacked_convs
        self.topk = topk
        self.loss_scale = loss_scale
        self.weights = {"loss_cls": weight_cls, "loss_bbox": weight_bbox, "loss_centerness": weight_centerness}
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        width = self.feat_channels

        def tower() -> nn.Sequential:
            blocks = (conv_gn_relu(self.in_channels if i == 0 else width, width, self.num_groups)
                      for i in range(stacked_convs))
            return nn.Sequential(*(m for block in blocks for m in block))

        self.cls_convs = tower()
        self.reg_convs = tower()
        self.atss_cls = nn.Conv2d(width, num_classes, 3, padding=1)
        self.atss_reg = nn.Conv2d(width, 4, 3, padding=1)
        self.atss_centerness = nn.Conv2d(width, 1, 3, padding=1)
        for conv in (self.atss_cls, self.atss_reg, self.atss_centerness):
            normal_init(conv, std=0.01)
        nn.init.constant_(self.atss_cls.bias, -math.log((1 - prior_prob) / prior_prob))

    # ------------------------------------------------------------------ raw predictions
    def predict(self, feats: List[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
        """L maps (N, C, H_l, W_l) -> logits (N, A, K), deltas (N, A, 4), centerness (N, A)
        with A = sum H_l W_l (level order, row-major, as the anchors)."""
        logits, deltas, ctr = [], [], []
        for x, scale in zip(feats, self.scales):
            c = self.cls_convs(x)
            r = self.reg_convs(x)
            logits.append(self.atss_cls(c).flatten(2).transpose(1, 2))
            deltas.append(scale(self.atss_reg(r)).flatten(2).transpose(1, 2))
            ctr.append(self.atss_centerness(r).flatten(1))
        return torch.cat(logits, 1), torch.cat(deltas, 1), torch.cat(ctr, 1)

    # ------------------------------------------------------------------ training
    def assign(self, anchors_per_level: List[Tensor], gt_instances: List[Instances]) -> DenseTargets:
        """ATSS assignment per image -> ``DenseTargets``."""
        anchors = torch.cat(anchors_per_level)
        counts = [a.shape[0] for a in anchors_per_level]
        gts = [inst.gt_boxes.tensor.to(anchors) for inst in gt_instances]
        results = [
            atss_assign(anchors, counts, gt, inst.gt_classes.to(anchors.device), topk=self.topk)
            for gt, inst in zip(gts, gt_instances)
        ]
        return dense_targets(anchors, results, gts, self.num_classes)

    def losses(self, anchors_per_level, gt_instances, predictions):
        """Weighted losses (module docstring) and the ``DenseTargets`` they were computed on."""
        logits, deltas, ctr = predictions
        targets = self.assign(anchors_per_level, gt_instances)
        pos = targets.positive
        device = logits.device
        with torch.autocast(device_type=device.type, enabled=False):
            num_pos = reduce_num_boxes(pos.sum(), device)
            one_hot = F.one_hot(targets.labels, self.num_classes + 1)[..., : self.num_classes].float()
            loss_cls = sigmoid_focal_loss(logits.float(), one_hot, self.focal_alpha, self.focal_gamma).sum() / num_pos
            pos_anchors = targets.anchors[None].expand(pos.shape[0], -1, -1)[pos]
            pos_targets = targets.boxes[pos]
            pred = self.box2box_transform.apply_deltas(deltas.float()[pos], pos_anchors)
            ctr_t = centerness_targets(pos_anchors, pos_targets)
            if pos.any():
                loss_bbox = (giou_loss(pred, pos_targets) * ctr_t).sum() / reduce_num_boxes(ctr_t.sum(), device)
                loss_ctr = F.binary_cross_entropy_with_logits(ctr.float()[pos], ctr_t, reduction="sum") / num_pos
            else:  # keep every parameter in the graph
                reduce_num_boxes(ctr_t.sum(), device)  # same collective calls on every worker
                loss_bbox = deltas.sum() * 0.0
                loss_ctr = ctr.sum() * 0.0
        raw = {"loss_cls": loss_cls, "loss_bbox": loss_bbox, "loss_centerness": loss_ctr}
        return {k: v * self.weights[k] * self.loss_scale for k, v in raw.items()}, targets

    # ------------------------------------------------------------------ inference
    def candidates(self, b, anchors_per_level, predictions):
        """Image ``b``'s per-level class scores ``sigmoid(cls)``, decoded boxes and score factors
        ``sigmoid(centerness)`` (multiplied in after the per-level selection, as mmdet)."""
        logits, deltas, ctr = (p[b].split([a.shape[0] for a in anchors_per_level]) for p in predictions)
        return [
            (lg.sigmoid(),
             lambda i, dl=dl, anchors=anchors: self.box2box_transform.apply_deltas(dl[i].float(), anchors[i]),
             ct.sigmoid())
            for anchors, lg, dl, ct in zip(anchors_per_level, logits, deltas, ctr)
        ]
