"""ATSS head (Zhang et al. 2020) as Co-DETR's one-stage auxiliary head (mmdet ``ATSSHead`` /
Co-DETR ``CoATSSHead``).

One 3x3 conv + GroupNorm + ReLU per tower (``stacked_convs=1``), classification, box-delta and
centerness convs, a learnable scale per level; one square anchor of side ``anchor_scale * stride``
per location (Detectron2's ``DefaultAnchorGenerator``, offset 0); ATSS assignment
(``codetr.modeling.assigners.atss_assign``); deltas decoded with ``Box2BoxTransform`` weights
(10, 10, 5, 5) (mmdet's stds 0.1, 0.1, 0.2, 0.2) and supervised on the decoded boxes
(``reg_decoded_bbox``).

Losses (all multiplied by ``loss_scale``, Co-DETR's ``lambda_2 * num_decoder_layers`` = 12):
- ``loss_cls``: sigmoid focal loss over all anchors / all-reduced number of positives;
- ``loss_bbox``: GIoU of decoded positives, weighted by their centerness targets, / all-reduced
  sum of centerness targets (weight 2);
- ``loss_centerness``: BCE of the centerness logits of positives / number of positives.

Boxes are absolute xyxy of the (resized) input image.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.structures import Boxes, ImageList, Instances
from torch import Tensor, nn

from codetr.modeling.heads.postprocess import dense_detections
from codetr.modeling.assigners import atss_assign
from codetr.modeling.criterion import reduce_num_boxes
from codetr.modeling.losses import giou_loss, sigmoid_focal_loss
from codetr.modeling.queries.positive_queries import AuxSamples

__all__ = ["ATSSHead", "Scale", "centerness_targets"]


class Scale(nn.Module):
    """A learnable scalar multiplier (mmcv ``Scale``)."""

    def __init__(self, init: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(init)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


def centerness_targets(anchors: Tensor, gt_boxes: Tensor) -> Tensor:
    """FCOS/ATSS centerness of anchor centres inside their ground truths: (P, 4), (P, 4) xyxy ->
    (P,) ``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))``."""
    cx = (anchors[:, 0] + anchors[:, 2]) / 2
    cy = (anchors[:, 1] + anchors[:, 3]) / 2
    lr = torch.stack([cx - gt_boxes[:, 0], gt_boxes[:, 2] - cx], -1)
    tb = torch.stack([cy - gt_boxes[:, 1], gt_boxes[:, 3] - cy], -1)
    ratio = (lr.min(-1).values / lr.max(-1).values) * (tb.min(-1).values / tb.max(-1).values)
    return ratio.clamp(min=0).sqrt()


def _conv_gn(c_in: int, c_out: int, num_groups: int) -> nn.Sequential:
    conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
    nn.init.normal_(conv.weight, std=0.01)
    return nn.Sequential(conv, nn.GroupNorm(num_groups, c_out), nn.ReLU(inplace=True))


class ATSSHead(nn.Module):
    """ATSS head on a feature pyramid (training: losses + assigned samples; eval: detections).

    Args:
        num_classes: K.
        in_features: pyramid level names, finest first (e.g. ["p2", ..., "p7"]).
        strides: stride of each level.
        in_channels, feat_channels: pyramid width and tower width.
        num_groups: GroupNorm groups of the towers.
        anchor_scale: square anchor side = ``anchor_scale * stride`` (8).
        topk: ATSS candidates per level and ground truth (9).
        loss_scale: multiplies every loss (Co-DETR: 12).
        weight_cls, weight_bbox, weight_centerness: loss weights (1, 2, 1).
        focal_alpha, focal_gamma: focal loss parameters.
        return_features: also return each sample's pyramid feature (``AuxSamples.pos_feats``).
        test_topk_candidates, test_nms_thresh, test_detections_per_image, test_score_thresh:
            inference (mmdet test_cfg: nms_pre 1000, NMS 0.6, 100 per image, score_thr 0).
    """

    def __init__(
        self,
        num_classes: int,
        in_features: Sequence[str],
        strides: Sequence[int],
        in_channels: int = 256,
        feat_channels: int = 256,
        num_groups: int = 32,
        anchor_scale: float = 8.0,
        topk: int = 9,
        loss_scale: float = 1.0,
        weight_cls: float = 1.0,
        weight_bbox: float = 2.0,
        weight_centerness: float = 1.0,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        prior_prob: float = 0.01,
        return_features: bool = False,
        test_topk_candidates: int = 1000,
        test_nms_thresh: float = 0.6,
        test_detections_per_image: int = 100,
        test_score_thresh: float = 0.0,
    ):
        super().__init__()
        if len(in_features) != len(strides):
            raise ValueError(f"ATSSHead: {len(in_features)} in_features but {len(strides)} strides")
        self.num_classes = num_classes
        self.in_features = list(in_features)
        self.strides = list(strides)
        self.topk = topk
        self.loss_scale = loss_scale
        self.weights = {"loss_cls": weight_cls, "loss_bbox": weight_bbox, "loss_centerness": weight_centerness}
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        self.return_features = return_features
        self.test_topk_candidates = test_topk_candidates
        self.test_nms_thresh = test_nms_thresh
        self.test_detections_per_image = test_detections_per_image
        self.test_score_thresh = test_score_thresh
        self.cls_convs = _conv_gn(in_channels, feat_channels, num_groups)
        self.reg_convs = _conv_gn(in_channels, feat_channels, num_groups)
        self.atss_cls = nn.Conv2d(feat_channels, num_classes, 3, padding=1)
        self.atss_reg = nn.Conv2d(feat_channels, 4, 3, padding=1)
        self.atss_centerness = nn.Conv2d(feat_channels, 1, 3, padding=1)
        for conv in (self.atss_cls, self.atss_reg, self.atss_centerness):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        nn.init.constant_(self.atss_cls.bias, -math.log((1 - prior_prob) / prior_prob))
        self.scales = nn.ModuleList(Scale(1.0) for _ in self.strides)
        self.anchor_generator = DefaultAnchorGenerator(
            sizes=[[anchor_scale * s] for s in self.strides], aspect_ratios=[[1.0]], strides=self.strides, offset=0.0
        )
        self.box2box_transform = Box2BoxTransform(weights=(10.0, 10.0, 5.0, 5.0))

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

    def forward(self, images: ImageList, features: Dict[str, Tensor], gt_instances: Optional[List[Instances]] = None):
        """Training: ``(losses, AuxSamples)``. Inference: N ``Instances`` (pred_boxes xyxy in the
        resized image, scores, pred_classes)."""
        feats = [features[f] for f in self.in_features]
        anchors_per_level = [b.tensor for b in self.anchor_generator(feats)]
        logits, deltas, ctr = self.predict(feats)
        if not self.training:
            return self.inference(images, anchors_per_level, logits, deltas, ctr)
        return self.losses_and_samples(images, feats, anchors_per_level, gt_instances, logits, deltas, ctr)

    # ------------------------------------------------------------------ training
    def assign(self, anchors_per_level: List[Tensor], gt_instances: List[Instances]):
        """ATSS assignment per image -> (gt_index (N, A) int64 (-1 negative), labels (N, A)
        int64 (K for negatives), target boxes (N, A, 4) xyxy (zeros for negatives))."""
        anchors = torch.cat(anchors_per_level)
        counts = [a.shape[0] for a in anchors_per_level]
        gt_index, labels, targets = [], [], []
        for inst in gt_instances:
            gt = inst.gt_boxes.tensor.to(anchors)
            res = atss_assign(anchors, counts, gt, inst.gt_classes, topk=self.topk)
            pos = res.gt_index >= 0
            gt_index.append(res.gt_index)
            labels.append(torch.where(pos, res.labels, torch.full_like(res.labels, self.num_classes)))
            tgt = gt[res.gt_index.clamp(min=0)] if gt.shape[0] else anchors.new_zeros(anchors.shape)
            targets.append(tgt * pos[:, None])
        return torch.stack(gt_index), torch.stack(labels), torch.stack(targets)

    def losses_and_samples(self, images, feats, anchors_per_level, gt_instances, logits, deltas, ctr):
        anchors = torch.cat(anchors_per_level)
        gt_index, labels, targets = self.assign(anchors_per_level, gt_instances)
        pos = gt_index >= 0
        device = logits.device
        with torch.autocast(device_type=device.type, enabled=False):
            num_pos = reduce_num_boxes(pos.sum(), device)
            one_hot = F.one_hot(labels, self.num_classes + 1)[..., : self.num_classes].float()
            loss_cls = sigmoid_focal_loss(logits.float(), one_hot, self.focal_alpha, self.focal_gamma).sum() / num_pos
            pos_anchors = anchors[None].expand(pos.shape[0], -1, -1)[pos]
            pos_targets = targets[pos]
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
        losses = {k: v * self.weights[k] * self.loss_scale for k, v in raw.items()}
        return losses, self.samples(images, feats, anchors, gt_index, labels, targets)

    def samples(self, images: ImageList, feats, anchors: Tensor, gt_index, labels, targets):
        """The assignment as ``AuxSamples``: positives = anchors assigned to a ground truth;
        negatives = the other anchors whose centre lies inside the (unpadded) image."""
        centres = (anchors[:, :2] + anchors[:, 2:]) / 2
        flat = torch.cat([f.flatten(2).transpose(1, 2) for f in feats], 1) if self.return_features else None
        out = {k: [] for k in ("pos_boxes", "pos_labels", "pos_targets", "neg_boxes", "pos_feats", "neg_feats")}
        for b, (h, w) in enumerate(images.image_sizes):
            pos = gt_index[b] >= 0
            inside = (centres[:, 0] < w) & (centres[:, 1] < h)
            neg = ~pos & inside
            out["pos_boxes"].append(anchors[pos])
            out["pos_labels"].append(labels[b][pos])
            out["pos_targets"].append(targets[b][pos])
            out["neg_boxes"].append(anchors[neg])
            if flat is not None:
                out["pos_feats"].append(flat[b][pos])
                out["neg_feats"].append(flat[b][neg])
        if flat is None:
            out["pos_feats"] = out["neg_feats"] = None
        return AuxSamples(**out)

    # ------------------------------------------------------------------ inference
    def inference(self, images: ImageList, anchors_per_level, logits, deltas, ctr) -> List[Instances]:
        """Per level the top ``test_topk_candidates`` (anchor, class) pairs by
        ``sigmoid(cls) * sigmoid(centerness)``, decoded, class-wise NMS, top detections."""
        counts = [a.shape[0] for a in anchors_per_level]
        results = []
        for b, image_size in enumerate(images.image_sizes):
            levels = [
                (lg.sigmoid() * ct.sigmoid()[:, None],
                 lambda i, dl=dl, anchors=anchors: self.box2box_transform.apply_deltas(dl[i].float(), anchors[i]))
                for anchors, lg, dl, ct in zip(
                    anchors_per_level, logits[b].split(counts), deltas[b].split(counts), ctr[b].split(counts)
                )
            ]
            results.append(dense_detections(
                image_size, levels, self.test_score_thresh, self.test_topk_candidates, self.test_nms_thresh,
                self.test_detections_per_image,
            ))
        return results
