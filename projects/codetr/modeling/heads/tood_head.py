"""TOOD's task-aligned head (T-Head) with Task Alignment Learning (Feng et al. 2021), as mmdet's
``TOODHead`` / fcjian/TOOD.

Per level (weights shared across levels):
- task-interactive features: ``stacked_convs`` x (3x3 conv + GroupNorm + ReLU), all outputs
  concatenated (``stacked_convs * feat_channels`` channels);
- two task decompositions (classification, regression): layer attention from the globally
  pooled concatenated features (1x1 conv -> ReLU -> 1x1 conv -> sigmoid, hidden width
  ``in / (stacked_convs * 8)``, i.e. ``feat_channels / 8``) scales the ``stacked_convs`` groups
  of a 1x1 reduction conv, then GroupNorm + ReLU;
- classification: logits ``L`` (3x3 conv) and a probability map ``M`` (1x1 conv -> ReLU -> 3x3
  conv on the concatenated features); score ``sqrt(sigmoid(L) * sigmoid(M))``;
- regression: anchor-free ltrb distances ``Scale_l(exp(.))`` in stride units around the anchor
  centre (or, ``anchor_type="anchor_based"``, deltas of the anchor box), refined by a learned
  offset map: each of the 4 coordinates of the box map is bilinearly sampled at its own offset
  (``torchvision.ops.deform_conv2d`` with unit 1x1 weights and 4 groups, as the reference);
  samples whose corners cross keep the unrefined box.
- One square anchor of side ``anchor_scale * stride`` per location (Detectron2's
  ``DefaultAnchorGenerator``, offset 0, i.e. centred at ``(x, y) * stride``).

Training: the ATSS assigner for the first ``initial_epochs`` of the ``epochs``-epoch schedule
stretched to the run, i.e. up to iteration ``round(initial_epochs / epochs * max_iter)`` (focal
loss on the score, GIoU
weighted by the centerness target), then TAL (quality focal loss with the normalised alignment
``t_hat`` as soft target, GIoU weighted by ``t_hat``). Normalisers (sum of ``t_hat``; number of
positives / sum of centerness in the ATSS epochs) are all-reduced, clamped >= 1. Assignment and
losses run in fp32 with autocast off. The score is a probability; the losses, written for
logits (``codetr.modeling.losses``), receive its logit ``log s - log(1 - s)`` computed from
``log s = (logsigmoid(L) + logsigmoid(M)) / 2``: BCE on the logit equals BCE on the probability
without its clamping.

Boxes are absolute xyxy of the (resized, padded-batch) input image.
"""
from __future__ import annotations

import logging
import math
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.structures import Instances
from detectron2.utils.events import get_event_storage
from torch import Tensor, nn
from torchvision.ops import deform_conv2d

from codetr.engine.schedule import schedule_iteration
from codetr.modeling.assigners import atss_assign, tal_assign
from codetr.modeling.heads.dense import DenseHead, DenseTargets, centerness_targets, conv_gn_relu
from codetr.modeling.heads.dense import dense_targets, normal_init
from codetr.modeling.losses import giou_loss, quality_focal_loss, reduce_num_boxes, sigmoid_focal_loss

__all__ = [
    "TOODHead",
    "TaskDecomposition",
    "aligned_score_logits",
    "deform_sampling",
]

ANCHOR_TYPES = ("anchor_free", "anchor_based")

logger = logging.getLogger(__name__)


def aligned_score_logits(cls_logits: Tensor, prob_logits: Tensor, eps: float = 1e-12) -> Tensor:
    """Logit of TOOD's score ``s = sqrt(sigmoid(cls_logits) * sigmoid(prob_logits))``.

    Args: cls_logits (..., K), prob_logits broadcastable (..., 1). Returns fp32 (..., K) ``x``
    with ``sigmoid(x) = s``, computed in log space (``log(1 - s)`` floored at ``log(eps)``).
    """
    log_s = 0.5 * (F.logsigmoid(cls_logits.float()) + F.logsigmoid(prob_logits.float()))
    log_1m_s = torch.log((-torch.expm1(log_s)).clamp(min=eps))
    return log_s - log_1m_s


def deform_sampling(feat: Tensor, offset: Tensor) -> Tensor:
    """Sample each channel of ``feat`` at its own offset location (bilinear, zeros outside).

    Args:
        feat: (N, C, H, W). offset: (N, 2C, H, W), channels (dy_0, dx_0, dy_1, dx_1, ...) in
            pixels of the map.
    Returns: (N, C, H, W) with ``out[n, c, y, x] = bilinear(feat[n, c], y + dy_c, x + dx_c)``.

    NaN offsets (a diverged model) are sampled at offset 0: torchvision's ``deform_conv2d`` reads
    out of bounds at a NaN location (a segmentation fault on the CPU), where the NaN losses of
    such a model now stop the run with an error naming the iteration (``codetr.engine.Trainer``).
    """
    c = feat.shape[1]
    weight = feat.new_ones(c, 1, 1, 1)
    offset = offset.masked_fill(torch.isnan(offset), 0.0)
    return deform_conv2d(feat, offset, weight, stride=1, padding=0, dilation=1)


class TaskDecomposition(nn.Module):
    """Layer attention over the ``stacked_convs`` groups of the concatenated task-interactive
    features, folded into a 1x1 reduction conv, then GroupNorm + ReLU.

    forward(feat (N, S*C, H, W), avg_feat (N, S*C, 1, 1)) -> (N, C, H, W).
    """

    def __init__(self, feat_channels: int, stacked_convs: int, la_down_rate: int, num_groups: int):
        super().__init__()
        self.feat_channels, self.stacked_convs = feat_channels, stacked_convs
        in_channels = feat_channels * stacked_convs
        self.layer_attention = nn.Sequential(
            nn.Conv2d(in_channels, in_channels // la_down_rate, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels // la_down_rate, stacked_convs, 1),
            nn.Sigmoid(),
        )
        self.reduction_conv = nn.Conv2d(in_channels, feat_channels, 1, bias=False)
        self.norm = nn.GroupNorm(num_groups, feat_channels)
        for m in self.layer_attention:
            if isinstance(m, nn.Conv2d):
                normal_init(m, std=0.001)
        normal_init(self.reduction_conv, std=0.01)

    def forward(self, feat: Tensor, avg_feat: Tensor) -> Tensor:
        n, _, h, w = feat.shape
        s, c = self.stacked_convs, self.feat_channels
        weight = self.layer_attention(avg_feat).reshape(n, 1, s, 1)
        conv_weight = (weight * self.reduction_conv.weight.reshape(1, c, s, c)).reshape(n, c, s * c)
        out = torch.bmm(conv_weight, feat.reshape(n, s * c, h * w)).reshape(n, c, h, w)
        return F.relu(self.norm(out))


class TOODHead(DenseHead):
    """T-Head on a feature pyramid; the TOOD detector's head and a Co-DETR auxiliary head.

    Called as every ``DenseHead`` (``codetr.modeling.heads.dense``): ``head(feats)`` gives the
    raw predictions (the TOOD ``DenseDetector``); ``head(images, features, gt_instances)``:
      - training: ``(losses, AssignedSamples)``; losses ``{"loss_cls", "loss_bbox"}`` already
        weighted and multiplied by ``loss_scale``; samples per image: positives = the anchor
        boxes (``anchor_scale * stride`` squares, xyxy_abs) assigned to a ground truth, their
        labels and matched GT boxes; negatives = the other anchors whose centre lies in the
        unpadded image; with ``return_features`` each sample carries the pyramid feature at its
        anchor (Co-Deformable-DETR's positive queries); ``iteration=`` overrides the trainer's
        iteration for the assigner switch;
      - eval: N ``Instances`` (pred_boxes xyxy in the resized input image, scores, pred_classes).
    ``features`` maps names to (N, C, H_l, W_l) maps; ``in_features`` picks the levels in order
    and ``strides`` gives their strides.

    Args:
        num_classes: K.
        in_features, strides: pyramid level names (finest first) and their strides.
        stacked_convs: task-interactive convs (6); with ``DenseHead``'s ``in_channels``,
            ``feat_channels``, ``num_groups`` (256, 256, GN 32) the T-Head's widths.
        la_down_rate: layer-attention reduction of the concatenated features (default
            ``stacked_convs * 8``: hidden ``feat_channels / 8``, as the reference).
        anchor_type: "anchor_free" (ltrb distances from the anchor centre) or "anchor_based"
            (deltas of the anchor box, ``Box2BoxTransform`` weights (10, 10, 5, 5)).
        initial_epochs: epochs trained with the ATSS assigner before TAL (4 in the 1x schedule;
            0 = TAL from the start), as epochs of the ``epochs``-epoch schedule they are written
            for (12 in the 1x configs) run in ``max_iter`` iterations (``train.max_iter``): the
            switch is at iteration
            ``round(initial_epochs / epochs * max_iter)`` (``codetr.engine.schedule_iteration``),
            the same fraction of the run whatever its length. The current iteration is
            Detectron2's ``get_event_storage().iter`` (0 outside a trainer).
        atss_topk, tal_topk, alpha, beta: assigner parameters (9; 13, 1, 6).
        weight_cls, weight_bbox: loss weights (1, GIoU 2). loss_scale: multiplies both (Co-DETR).
        focal_alpha, focal_gamma, qfl_beta: focal loss (ATSS epochs) and QFL parameters.
        assign_max_elements: anchors x GTs per assigner chunk (memory bound on crowded images).
        kwargs: ``DenseHead``'s: ``in_channels``, ``feat_channels``, ``num_groups``,
            ``anchor_scale`` (side of the square anchor in strides, 8), ``return_features`` (each
            sample carries its anchor's pyramid feature), inference ``test_*`` (top 1000 per
            level above 0.05, NMS 0.6, 100 per image).
    """

    def __init__(
        self,
        num_classes: int,
        in_features: Sequence[str],
        strides: Sequence[int],
        stacked_convs: int = 6,
        la_down_rate: Optional[int] = None,
        anchor_type: str = "anchor_free",
        prior_prob: float = 0.01,
        initial_epochs: float = 0,
        epochs: Optional[float] = None,
        max_iter: Optional[int] = None,
        atss_topk: int = 9,
        tal_topk: int = 13,
        alpha: float = 1.0,
        beta: float = 6.0,
        weight_cls: float = 1.0,
        weight_bbox: float = 2.0,
        loss_scale: float = 1.0,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        qfl_beta: float = 2.0,
        assign_max_elements: int = 1 << 22,
        **kwargs,
    ):
        super().__init__(num_classes, in_features, strides, **kwargs)
        if anchor_type not in ANCHOR_TYPES:
            raise ValueError(f"TOODHead: anchor_type={anchor_type!r}; expected one of {ANCHOR_TYPES}")
        if initial_epochs < 0:
            raise ValueError(f"TOODHead: initial_epochs must be >= 0, got {initial_epochs}")
        if epochs is not None and initial_epochs > epochs:
            raise ValueError(f"TOODHead: initial_epochs={initial_epochs} exceeds the schedule's epochs={epochs}")
        self.anchor_type = anchor_type
        self.initial_epochs = initial_epochs
        self.epochs = epochs
        self.max_iter = max_iter
        if initial_epochs > 0 and epochs is not None and max_iter is not None:
            logger.info(
                "TOODHead: ATSS -> TAL switch at iteration %d (epoch %g of the %g-epoch schedule, max_iter=%d)",
                self.initial_iters, initial_epochs, epochs, max_iter,
            )
        self.atss_topk, self.tal_topk, self.alpha, self.beta = atss_topk, tal_topk, alpha, beta
        self.weight_cls, self.weight_bbox, self.loss_scale = weight_cls, weight_bbox, loss_scale
        self.focal_alpha, self.focal_gamma, self.qfl_beta = focal_alpha, focal_gamma, qfl_beta
        self.assign_max_elements = assign_max_elements

        in_channels, feat_channels, num_groups = self.in_channels, self.feat_channels, self.num_groups
        cat_channels = feat_channels * stacked_convs
        la_down_rate = la_down_rate or stacked_convs * 8
        self.inter_convs = nn.ModuleList(
            conv_gn_relu(in_channels if i == 0 else feat_channels, feat_channels, num_groups)
            for i in range(stacked_convs)
        )
        self.cls_decomp = TaskDecomposition(feat_channels, stacked_convs, la_down_rate, num_groups)
        self.reg_decomp = TaskDecomposition(feat_channels, stacked_convs, la_down_rate, num_groups)
        self.tood_cls = nn.Conv2d(feat_channels, num_classes, 3, padding=1)
        self.tood_reg = nn.Conv2d(feat_channels, 4, 3, padding=1)
        self.cls_prob_module = nn.Sequential(
            nn.Conv2d(cat_channels, feat_channels // 4, 1), nn.ReLU(inplace=True),
            nn.Conv2d(feat_channels // 4, 1, 3, padding=1),
        )
        self.reg_offset_module = nn.Sequential(
            nn.Conv2d(cat_channels, feat_channels // 4, 1), nn.ReLU(inplace=True),
            nn.Conv2d(feat_channels // 4, 4 * 2, 3, padding=1),
        )
        bias_cls = -math.log((1 - prior_prob) / prior_prob)
        normal_init(self.cls_prob_module[0], std=0.01)
        normal_init(self.cls_prob_module[2], std=0.01, bias=bias_cls)
        normal_init(self.reg_offset_module[0], std=0.001)
        normal_init(self.reg_offset_module[2], std=0.001)
        normal_init(self.tood_cls, std=0.01, bias=bias_cls)
        normal_init(self.tood_reg, std=0.01)
        self._last_assigner: Optional[str] = None  # logs the ATSS -> TAL switch once

    # ------------------------------------------------------------------ schedule
    @property
    def initial_iters(self) -> int:
        """Iterations trained with the ATSS assigner: ``round(initial_epochs / epochs * max_iter)``."""
        if self.initial_epochs == 0:
            return 0
        if self.epochs is None or self.max_iter is None:
            raise ValueError(
                f"TOODHead: initial_epochs={self.initial_epochs} needs the schedule's epochs and max_iter "
                f"(got epochs={self.epochs}, max_iter={self.max_iter}); set them in the config (e.g. "
                "head.epochs=12 for a 1x schedule and head.max_iter='${train.max_iter}', which train_net.py "
                "resolves) or set initial_epochs=0"
            )
        return schedule_iteration(self.initial_epochs, self.epochs, self.max_iter, "TOODHead initial_epochs")

    @staticmethod
    def current_iteration() -> int:
        """Detectron2's trainer iteration (``get_event_storage().iter``), 0 outside a trainer."""
        try:
            return get_event_storage().iter
        except AssertionError:  # no EventStorage context
            return 0

    def use_initial_assigner(self, iteration: Optional[int] = None) -> bool:
        """True while ``iteration`` (default: the current one) is below ``initial_iters``."""
        iteration = self.current_iteration() if iteration is None else iteration
        return iteration < self.initial_iters

    # ------------------------------------------------------------------ raw predictions
    def predict(self, feats: List[Tensor], anchors_per_level: Optional[List[Tensor]] = None) -> Tuple[Tensor, Tensor]:
        """L maps (N, C, H_l, W_l) -> score logits (N, A, K) fp32 (``sigmoid`` = the aligned score)
        and boxes (N, A, 4) fp32 xyxy_abs, A = sum H_l W_l in level order, row-major.
        ``anchors_per_level``: ``self.anchors(feats)`` when not given."""
        if anchors_per_level is None:
            anchors_per_level = self.anchors(feats)
        logits, boxes = [], []
        for x, scale, stride, anchors in zip(feats, self.scales, self.strides, anchors_per_level):
            n, _, h, w = x.shape
            inter = []
            for conv in self.inter_convs:
                x = conv(x)
                inter.append(x)
            feat = torch.cat(inter, 1)
            avg_feat = F.adaptive_avg_pool2d(feat, (1, 1))
            cls_feat = self.cls_decomp(feat, avg_feat)
            reg_feat = self.reg_decomp(feat, avg_feat)
            cls_logits = self.tood_cls(cls_feat)
            prob_logits = self.cls_prob_module(feat)
            reg = self.tood_reg(reg_feat)
            offset = self.reg_offset_module(feat)
            with torch.autocast(device_type=x.device.type, enabled=False):
                logits.append(aligned_score_logits(cls_logits, prob_logits).flatten(2).transpose(1, 2))
                reg, offset, anchors = reg.float(), offset.float(), anchors.float()
                if self.anchor_type == "anchor_free":
                    dist = scale(reg.exp()).permute(0, 2, 3, 1).reshape(n, h * w, 4)
                    ctr = (anchors[:, :2] + anchors[:, 2:]) / 2 / stride
                    reg_box = torch.cat([ctr - dist[..., :2], ctr + dist[..., 2:]], -1)
                else:
                    deltas = scale(reg).permute(0, 2, 3, 1).reshape(n * h * w, 4)
                    reg_box = self.box2box_transform.apply_deltas(deltas, anchors.repeat(n, 1)) / stride
                reg_box = reg_box.reshape(n, h, w, 4).permute(0, 3, 1, 2).contiguous()
                box = deform_sampling(reg_box, offset)
                # sampling may cross the corners (x1 > x2 or y1 > y2): keep the unrefined box there
                invalid = (box[:, 0:1] > box[:, 2:3]) | (box[:, 1:2] > box[:, 3:4])
                box = torch.where(invalid, reg_box, box)
                boxes.append(box.flatten(2).transpose(1, 2) * stride)
        return torch.cat(logits, 1), torch.cat(boxes, 1)

    # ------------------------------------------------------------------ training
    def assign(self, anchors_per_level: List[Tensor], gt_instances: List[Instances], logits: Tensor, boxes: Tensor,
               initial: bool) -> Tuple[DenseTargets, Tensor]:
        """Per image ATSS (``initial``) or TAL assignment -> ``DenseTargets`` (on fp32 anchors) and
        (N, A) soft-target weights: ``t_hat`` (TAL), 1 for positives (ATSS), 0 for negatives."""
        anchors = torch.cat(anchors_per_level).float()
        counts = [a.shape[0] for a in anchors_per_level]
        gts = [inst.gt_boxes.tensor.to(anchors) for inst in gt_instances]
        results = []
        for b, (gt, inst) in enumerate(zip(gts, gt_instances)):
            cls = inst.gt_classes.to(anchors.device)
            if initial:
                results.append(atss_assign(anchors, counts, gt, cls, self.atss_topk,
                                           max_elements=self.assign_max_elements))
            else:
                results.append(tal_assign(logits[b].detach().sigmoid(), boxes[b].detach(), anchors, gt, cls,
                                          self.tal_topk, self.alpha, self.beta, max_elements=self.assign_max_elements))
        weights = [(r.gt_index >= 0).float() if initial else r.norm_metric.float() for r in results]
        return dense_targets(anchors, results, gts, self.num_classes), torch.stack(weights)

    def losses(self, anchors_per_level, gt_instances, predictions, iteration: Optional[int] = None):
        """Weighted losses (module docstring) and the ``DenseTargets`` they were computed on.
        ``iteration`` (default: the trainer's) picks the assigner."""
        iteration = self.current_iteration() if iteration is None else iteration
        initial = self.use_initial_assigner(iteration)
        assigner = "ATSS" if initial else "task-aligned (TAL)"
        if assigner != self._last_assigner:
            logger.info("TOODHead: %s assignment from iteration %d", assigner, iteration)
            self._last_assigner = assigner
        logits, boxes = predictions
        device = logits.device
        with torch.autocast(device_type=device.type, enabled=False):
            logits, boxes = logits.float(), boxes.float()
            targets, weights = self.assign(anchors_per_level, gt_instances, logits, boxes, initial)
            pos = targets.positive
            one_hot = F.one_hot(targets.labels, self.num_classes + 1)[..., : self.num_classes].float()
            pos_anchors = targets.anchors[None].expand(pos.shape[0], -1, -1)[pos]
            pos_targets = targets.boxes[pos]
            if initial:
                cls_norm = reduce_num_boxes(pos.sum(), device)
                loss_cls = sigmoid_focal_loss(logits, one_hot, self.focal_alpha, self.focal_gamma).sum() / cls_norm
                box_weight = centerness_targets(pos_anchors, pos_targets)
            else:
                cls_norm = reduce_num_boxes(weights.sum(), device)
                loss_cls = quality_focal_loss(logits, one_hot * weights[..., None], self.qfl_beta).sum() / cls_norm
                box_weight = weights[pos]
            box_norm = reduce_num_boxes(box_weight.sum(), device)  # same collectives on every worker
            if pos.any():
                loss_bbox = (giou_loss(boxes[pos], pos_targets) * box_weight).sum() / box_norm
            else:  # keep every parameter in the graph
                loss_bbox = boxes.sum() * 0.0
        losses = {
            "loss_cls": loss_cls * self.weight_cls * self.loss_scale,
            "loss_bbox": loss_bbox * self.weight_bbox * self.loss_scale,
        }
        return losses, targets

    # ------------------------------------------------------------------ inference
    def candidates(self, b, anchors_per_level, predictions):
        """Image ``b``'s per-level aligned scores and predicted boxes."""
        logits, boxes = (p[b].split([a.shape[0] for a in anchors_per_level]) for p in predictions)
        return [(lg.sigmoid(), lambda i, bx=bx: bx[i]) for lg, bx in zip(logits, boxes)]
