"""What the dense heads (ATSS, T-Head) share: the anchor layout, the conv + GN tower blocks, dense
targets from per-image assignments, the assignment as ``AssignedSamples`` (optionally with each
sample's pyramid feature), inference, and the two ways a dense head is called.

Layout: one square anchor of side ``anchor_scale * stride`` per location of each pyramid level
(Detectron2's ``DefaultAnchorGenerator``, offset 0, i.e. centred at ``(x, y) * stride``); the A
anchors of an image are the levels' ``H_l * W_l`` locations, level after level, row-major, the
order of ``torch.cat([f.flatten(2) for f in feats], 2)``. Boxes are absolute xyxy of the resized
input image.

Call protocols of a ``DenseHead``:
- ``head(feats)``, ``feats`` a list of L maps (N, C, H_l, W_l) in ``in_features`` order: the raw
  predictions (``predict``), Detectron2's dense-head protocol (``DenseDetector`` calls it);
- ``head(images, features, gt_instances)``, ``features`` a dict of maps: Co-DETR's auxiliary-head
  protocol (and the whole head on its own): training ``(losses, AssignedSamples)``, eval N
  ``Instances`` (pred_boxes xyxy in the resized image, scores, pred_classes).
"""
from __future__ import annotations

from typing import Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

import torch
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.structures import Boxes, ImageList, Instances
from torch import Tensor, nn

from codetr.layers.nms import batched_nms
from codetr.modeling.heads.base import AssignedSamples

__all__ = [
    "DenseHead",
    "DenseTargets",
    "Scale",
    "assigned_samples",
    "centerness_targets",
    "conv_gn_relu",
    "dense_detections",
    "dense_targets",
    "normal_init",
]


class Scale(nn.Module):
    """A learnable scalar multiplier (mmcv ``Scale``), one per pyramid level."""

    def __init__(self, init: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(init)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


def normal_init(conv: nn.Conv2d, std: float, bias: float = 0.0) -> None:
    """Weights ~ N(0, std^2), bias (if any) constant (mmcv ``normal_init``)."""
    nn.init.normal_(conv.weight, std=std)
    if conv.bias is not None:
        nn.init.constant_(conv.bias, bias)


def conv_gn_relu(c_in: int, c_out: int, num_groups: int) -> nn.Sequential:
    """One tower block: 3x3 conv (no bias, N(0, 0.01^2)) + GroupNorm + ReLU (keys ``0.``, ``1.``)."""
    conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
    normal_init(conv, std=0.01)
    return nn.Sequential(conv, nn.GroupNorm(num_groups, c_out), nn.ReLU(inplace=True))


def centerness_targets(anchors: Tensor, gt_boxes: Tensor) -> Tensor:
    """FCOS/ATSS centerness of anchor centres inside their ground truths: (P, 4), (P, 4) xyxy ->
    (P,) ``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))``."""
    cx = (anchors[:, 0] + anchors[:, 2]) / 2
    cy = (anchors[:, 1] + anchors[:, 3]) / 2
    lr = torch.stack([cx - gt_boxes[:, 0], gt_boxes[:, 2] - cx], -1)
    tb = torch.stack([cy - gt_boxes[:, 1], gt_boxes[:, 3] - cy], -1)
    ratio = (lr.min(-1).values / lr.max(-1).values) * (tb.min(-1).values / tb.max(-1).values)
    return ratio.clamp(min=0).sqrt()


# ---------------------------------------------------------------------------- training targets
class DenseTargets(NamedTuple):
    """Per-anchor targets of a batch (N images, A anchors).

    anchors: (A, 4) xyxy_abs, the anchors the assignment was made on.
    gt_index: (N, A) int64 index of the assigned ground truth, -1 for negatives.
    labels: (N, A) int64 class of the assigned ground truth, ``num_classes`` for negatives.
    boxes: (N, A, 4) xyxy_abs assigned ground-truth box, zeros for negatives.
    """

    anchors: Tensor
    gt_index: Tensor
    labels: Tensor
    boxes: Tensor

    @property
    def positive(self) -> Tensor:
        """(N, A) bool."""
        return self.gt_index >= 0


def dense_targets(anchors: Tensor, assignments: Sequence, gt_boxes: Sequence[Tensor], num_classes: int) -> DenseTargets:
    """Dense targets from per-image assignments.

    Args:
        anchors: (A, 4) xyxy_abs.
        assignments: per image, an assigner result with ``gt_index`` (A,) (-1 negative) and
            ``labels`` (A,) (``codetr.modeling.assigners``: ATSS, TAL).
        gt_boxes: per image (G_b, 4) xyxy_abs ground truths, in the dtype / device of ``anchors``.
        num_classes: the "no object" label of negatives.
    """
    gt_index, labels, boxes = [], [], []
    for res, gt in zip(assignments, gt_boxes):
        pos = res.gt_index >= 0
        gt_index.append(res.gt_index)
        labels.append(torch.where(pos, res.labels, torch.full_like(res.labels, num_classes)))
        matched = gt[res.gt_index.clamp(min=0)] if gt.shape[0] else anchors.new_zeros(anchors.shape)
        boxes.append(matched * pos[:, None])
    return DenseTargets(anchors, torch.stack(gt_index), torch.stack(labels), torch.stack(boxes))


def assigned_samples(
    image_sizes: Sequence[Tuple[int, int]], targets: DenseTargets, feats: Optional[List[Tensor]] = None
) -> AssignedSamples:
    """A dense assignment as ``AssignedSamples``: positives = the anchors assigned to a ground
    truth (their labels and matched boxes); negatives = the other anchors whose centre lies inside
    the unpadded image ``image_sizes[b]`` (h, w).

    ``feats``: the L pyramid maps (N, C, H_l, W_l) the anchors were laid on; when given, each
    sample also carries the C-channel feature at its location (``pos_feats`` / ``neg_feats``).
    """
    anchors = targets.anchors
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    flat = torch.cat([f.flatten(2).transpose(1, 2) for f in feats], 1) if feats is not None else None
    out = {k: [] for k in ("pos_boxes", "pos_labels", "pos_targets", "neg_boxes", "pos_feats", "neg_feats")}
    for b, (h, w) in enumerate(image_sizes):
        pos = targets.gt_index[b] >= 0
        neg = ~pos & (centres[:, 0] < w) & (centres[:, 1] < h)
        out["pos_boxes"].append(anchors[pos])
        out["pos_labels"].append(targets.labels[b][pos])
        out["pos_targets"].append(targets.boxes[b][pos])
        out["neg_boxes"].append(anchors[neg])
        if flat is not None:
            out["pos_feats"].append(flat[b][pos])
            out["neg_feats"].append(flat[b][neg])
    if flat is None:
        out["pos_feats"] = out["neg_feats"] = None
    return AssignedSamples(**out)


# ---------------------------------------------------------------------------- inference
def dense_detections(
    image_size: Tuple[int, int],
    levels: Iterable[Tuple[Tensor, Callable[[Tensor], Tensor]]],
    score_thresh: float,
    topk_candidates: int,
    nms_thresh: float,
    detections_per_image: int,
    clip_before_nms: bool = True,
) -> Instances:
    """Detections of one image.

    Args:
        image_size: (h, w) of the resized image.
        levels: per pyramid level, ``(scores, boxes_of)`` or ``(scores, boxes_of, score_factor)``:
            scores (A_l, K) probabilities, a function from anchor indices (n,) to their boxes
            (n, 4) xyxy_abs (decoded lazily, only for the kept candidates) and optionally
            (A_l,) factors that multiply the kept pairs' scores after the selection (mmdet's
            ``score_factors``: ATSS's centerness).
        score_thresh, topk_candidates: per level, the top ``topk_candidates`` (anchor, class)
            pairs with score above ``score_thresh`` (before any score factor).
        nms_thresh, detections_per_image: class-wise NMS, then the best detections.
        clip_before_nms: clip the candidates' boxes to ``image_size`` before the NMS (mmdet's
            ATSS, which decodes with ``max_shape``); False: NMS on the boxes as decoded
            (MMDetection's ``TOODHead``, which never clips).
    """
    boxes_all, scores_all, classes_all = [], [], []
    for scores, boxes_of, *score_factor in levels:
        num_classes = scores.shape[1]
        scores = scores.flatten()
        keep = scores > score_thresh
        scores, idx = scores[keep], keep.nonzero()[:, 0]
        scores, order = scores.topk(min(topk_candidates, scores.numel()))
        idx = idx[order]
        if score_factor:
            scores = scores * score_factor[0][idx // num_classes]
        boxes_all.append(boxes_of(idx // num_classes))
        scores_all.append(scores)
        classes_all.append(idx % num_classes)
    boxes = Boxes(torch.cat(boxes_all))
    if clip_before_nms:
        boxes.clip(image_size)
    scores, classes = torch.cat(scores_all), torch.cat(classes_all)
    keep = batched_nms(boxes.tensor, scores, classes, nms_thresh)[:detections_per_image]
    result = Instances(image_size)
    result.pred_boxes, result.scores, result.pred_classes = boxes[keep], scores[keep], classes[keep]
    return result


# ---------------------------------------------------------------------------- the head
class DenseHead(nn.Module):
    """Base of the dense heads: pyramid levels, anchors, per-level ``Scale``, box coder, the
    samples it hands to Co-DETR and the two call protocols (module docstring).

    A subclass passes these arguments on (``**kwargs``), builds its towers (``conv_gn_relu``
    blocks of ``feat_channels`` on the ``in_channels`` pyramid) and implements:
      - ``predict(feats) -> predictions``: a tuple of (N, A, .) tensors;
      - ``losses(anchors_per_level, gt_instances, predictions, **kw) -> (losses, DenseTargets)``;
      - ``candidates(b, anchors_per_level, predictions)``: image ``b``'s per-level
        ``(scores (A_l, K), boxes_of[, score_factor (A_l,)])`` for ``dense_detections``.

    Args:
        num_classes: K.
        in_features, strides: pyramid level names (finest first) and their strides.
        in_channels, feat_channels, num_groups: pyramid width (also the width of the samples'
            features), tower width and GroupNorm groups of the towers (256, 256, 32).
        anchor_scale: square anchor side in strides (8).
        return_features: the samples carry the pyramid feature at each anchor
            (Co-Deformable-DETR adds it to the positive queries).
        test_topk_candidates, test_score_thresh, test_nms_thresh, test_detections_per_image:
            inference: per level the top ``test_topk_candidates`` (anchor, class) pairs with score
            above ``test_score_thresh``, boxes clipped to the image, class-wise NMS, the best
            ``test_detections_per_image`` (1000, 0.05, 0.6, 100).
    """

    def __init__(
        self,
        num_classes: int,
        in_features: Sequence[str],
        strides: Sequence[int],
        in_channels: int = 256,
        feat_channels: int = 256,
        num_groups: int = 32,
        *,
        anchor_scale: float = 8.0,
        return_features: bool = False,
        test_topk_candidates: int = 1000,
        test_score_thresh: float = 0.05,
        test_nms_thresh: float = 0.6,
        test_detections_per_image: int = 100,
        test_clip_before_nms: bool = True,
    ):
        super().__init__()
        name = type(self).__name__
        if len(in_features) != len(strides):
            raise ValueError(f"{name}: {len(in_features)} in_features {list(in_features)} but {len(strides)} strides")
        self.num_classes = num_classes
        self.in_features = list(in_features)
        self.strides = list(strides)
        self.in_channels, self.feat_channels, self.num_groups = in_channels, feat_channels, num_groups
        self.return_features = return_features
        self.test_topk_candidates = test_topk_candidates
        self.test_score_thresh = test_score_thresh
        self.test_nms_thresh = test_nms_thresh
        self.test_detections_per_image = test_detections_per_image
        self.test_clip_before_nms = test_clip_before_nms
        self.scales = nn.ModuleList(Scale(1.0) for _ in self.strides)
        self.anchor_generator = DefaultAnchorGenerator(
            sizes=[[anchor_scale * s] for s in self.strides], aspect_ratios=[[1.0]], strides=self.strides, offset=0.0
        )
        self.box2box_transform = Box2BoxTransform(weights=(10.0, 10.0, 5.0, 5.0))

    def anchors(self, feats: List[Tensor]) -> List[Tensor]:
        """Per level (H_l * W_l, 4) xyxy_abs anchors, row-major as the flattened maps."""
        return [b.tensor for b in self.anchor_generator(feats)]

    def predict(self, feats: List[Tensor]) -> Tuple[Tensor, ...]:
        raise NotImplementedError

    def losses(self, anchors_per_level: List[Tensor], gt_instances: List[Instances], predictions, **kwargs):
        raise NotImplementedError

    def candidates(self, b: int, anchors_per_level: List[Tensor], predictions):
        raise NotImplementedError

    def inference(self, image_sizes, anchors_per_level: List[Tensor], predictions) -> List[Instances]:
        """N ``Instances`` (pred_boxes xyxy_abs, clipped to ``image_sizes[b]`` if
        ``test_clip_before_nms``; scores, pred_classes)."""
        return [
            dense_detections(
                image_size, self.candidates(b, anchors_per_level, predictions), self.test_score_thresh,
                self.test_topk_candidates, self.test_nms_thresh, self.test_detections_per_image,
                self.test_clip_before_nms,
            )
            for b, image_size in enumerate(image_sizes)
        ]

    def forward(
        self,
        images: ImageList | List[Tensor],
        features: Optional[Dict[str, Tensor]] = None,
        gt_instances: Optional[List[Instances]] = None,
        **kwargs,
    ):
        """``head(feats)``: ``predict(feats)``. ``head(images, features, gt_instances=None)``:
        training ``(losses, AssignedSamples)``, eval N ``Instances`` (module docstring);
        ``kwargs`` go to ``losses``."""
        if not isinstance(images, ImageList):
            if features is not None or gt_instances is not None:
                raise TypeError(f"{type(self).__name__}: head(feats) takes the list of maps only")
            return self.predict(list(images))
        if features is None:
            raise TypeError(f"{type(self).__name__}: head(images, features, gt_instances) needs the feature dict")
        feats = [features[f] for f in self.in_features]
        predictions = self.predict(feats)
        anchors_per_level = self.anchors(feats)
        if not self.training:
            return self.inference(images.image_sizes, anchors_per_level, predictions)
        if gt_instances is None:
            raise ValueError(f"{type(self).__name__}: training needs gt_instances")
        return self.losses_and_samples(images, feats, anchors_per_level, gt_instances, predictions, **kwargs)

    def losses_and_samples(self, images: ImageList, feats: List[Tensor], anchors_per_level, gt_instances,
                           predictions, **kwargs) -> Tuple[Dict[str, Tensor], AssignedSamples]:
        """``losses`` plus the assignment as ``AssignedSamples`` (with features when
        ``return_features``)."""
        losses, targets = self.losses(anchors_per_level, gt_instances, predictions, **kwargs)
        return losses, assigned_samples(images.image_sizes, targets, feats if self.return_features else None)
