"""Set criterion of the DETR family (DETR, Deformable-DETR, DN-DETR, DINO, Co-DINO).

Two ways of knowing a query's target, one loss:
- matched queries: targets found by Hungarian matching (``matched_losses``), on the last decoder
  layer, every auxiliary decoder layer and the encoder proposals;
- fixed-target queries: targets known by construction (``fixed_target_losses``): DN / CDN groups
  and Co-DETR's customised positive queries.
Both build dense per-query targets (label, box, valid, positive) and call the same ``_losses``.

Conventions:
- ``pred_logits`` (B, Q, C) raw scores (C = K + 1 with DETR's softmax loss: the last column is
  "no object"); ``pred_boxes`` (B, Q, 4) normalised cxcywh (sigmoid applied).
- targets: B dicts with ``"labels"`` (G_b,) int64 in [0, C) and ``"boxes"`` (G_b, 4) normalised cxcywh.
- Model outputs (the dict given to ``forward``)::

      {"pred_logits", "pred_boxes",                      # last decoder layer, matching queries
       "aux_outputs": [{"pred_logits", "pred_boxes"}, ...],  # decoder layers 0 .. L-2 (optional)
       "enc_outputs": {"pred_logits", "pred_boxes"},      # two-stage proposals (optional)
       "dn_outputs": {"pred_logits", "pred_boxes",        # fixed-target part of every layer
                      "aux_outputs": [...]}}              # (required when ``dn`` is given)

- Returned losses are already weighted (class 1, bbox 5, giou 2 by default); keys
  ``loss_{class,bbox,giou}{suffix}`` with suffix "" (last layer), ``_{i}`` (aux layer i), ``_enc``,
  ``_dn`` and ``_dn_{i}``.
"""
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from codetr.layers.box_ops import box_cxcywh_to_xyxy, elementwise_box_iou
from codetr.modeling.losses import (
    giou_loss,
    l1_loss,
    normalized_sum,
    quality_focal_loss,
    reduce_num_boxes,
    sigmoid_focal_loss,
)
from codetr.modeling.matcher import HungarianMatcher, check_l1_box_format, l1_boxes
from codetr.modeling.queries.fixed_target import FixedTargetQueries

__all__ = ["DETRCriterion"]

CLASS_LOSSES = ("focal", "qfl", "softmax")


class DETRCriterion(nn.Module):
    """Weighted focal / quality-focal / softmax classification, L1 and GIoU box losses for DETR
    queries.

    Args:
        num_classes: K; label ``num_classes`` means "no object".
        matcher: Hungarian matcher (default: cost_class 2, cost_bbox 5, cost_giou 2, focal costs;
            with ``class_loss="softmax"``: cost_class 1, cost_bbox 5, cost_giou 2, softmax cost).
        class_loss: "focal" (sigmoid focal, DINO), "qfl" (quality focal, Co-DINO: the target of
            a positive is the IoU of its detached predicted box with its target box) or "softmax"
            (DETR: cross-entropy over K + 1 logits, "no object" last, weighted ``eos_coef`` for
            "no object" and 1 for the classes, averaged with those weights over the queries,
            i.e. ``F.cross_entropy(weight=...)``'s mean, not divided by the number of boxes; the
            matcher must use the softmax class cost).
        eos_coef: the "no object" weight of the softmax loss (DETR: 0.1).
        weight_class, weight_bbox, weight_giou: loss weights (applied here, for every suffix).
        focal_alpha, focal_gamma: focal loss parameters. qfl_beta: QFL exponent.
        binary_enc_loss: the encoder proposals (``enc_outputs``) are matched and classified with
            every ground-truth label set to 0 (foreground = class 0), as Deformable-DETR's
            two-stage loss (mmdet ``DeformableDETRHead.loss``, Co-Deformable-DETR); False (DINO,
            Co-DINO): with the true labels.
        l1_box_format: the coordinates of the L1 loss between normalised boxes: "cxcywh" (DETR,
            DINO) or "xyxy" (AdaMixer / DEQDet: mmdet's L1 on ``bbox / img_whwh`` corners). The
            matcher has its own option.
    """

    def __init__(
        self,
        num_classes: int,
        matcher: Optional[HungarianMatcher] = None,
        class_loss: str = "focal",
        weight_class: float = 1.0,
        weight_bbox: float = 5.0,
        weight_giou: float = 2.0,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        qfl_beta: float = 2.0,
        binary_enc_loss: bool = False,
        l1_box_format: str = "cxcywh",
        eos_coef: float = 0.1,
    ):
        super().__init__()
        check_l1_box_format("DETRCriterion", l1_box_format)
        self.l1_box_format = l1_box_format
        if class_loss not in CLASS_LOSSES:
            raise ValueError(f"DETRCriterion: class_loss={class_loss!r}; expected one of {CLASS_LOSSES}")
        self.num_classes = num_classes
        if matcher is None:
            softmax = class_loss == "softmax"
            matcher = HungarianMatcher(1.0, 5.0, 2.0, class_cost="softmax") if softmax else HungarianMatcher()
        matcher_cost = getattr(matcher, "class_cost", "focal")
        if (class_loss == "softmax") != (matcher_cost == "softmax"):
            raise ValueError(
                f"DETRCriterion: class_loss={class_loss!r} with a matcher whose class_cost={matcher_cost!r}; the "
                "softmax loss (K + 1 logits, 'no object' last) needs the softmax matching cost, the others the focal one"
            )
        self.matcher = matcher
        self.class_loss = class_loss
        self.eos_coef = eos_coef
        self.weights = {"loss_class": weight_class, "loss_bbox": weight_bbox, "loss_giou": weight_giou}
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.qfl_beta = qfl_beta
        self.binary_enc_loss = binary_enc_loss

    # ------------------------------------------------------------------ entry point
    def forward(
        self,
        outputs: Dict,
        targets: List[Dict[str, Tensor]],
        dn: Optional[FixedTargetQueries] = None,
    ) -> Dict[str, Tensor]:
        """All losses of a DETR-family model (see the module docstring for ``outputs``).

        ``dn`` holds the targets of the denoising queries whose predictions are
        ``outputs["dn_outputs"]``; their normaliser is ``num_boxes * dn.num_groups``. The ``_dn``
        keys come exactly when ``dn`` is given, and a detector with denoising gives it on every
        training batch (a batch without boxes gets one group of padding queries), so the loss dict
        has the same keys on every iteration and worker, as detectron2's metric gathering needs.
        """
        num_boxes = reduce_num_boxes(sum(t["labels"].numel() for t in targets), outputs["pred_logits"].device)
        losses = self.matched_losses(outputs, targets, num_boxes)
        if "enc_outputs" in outputs:
            enc_targets = targets
            if self.binary_enc_loss:
                enc_targets = [{**t, "labels": torch.zeros_like(t["labels"])} for t in targets]
            losses.update(self.matched_losses(outputs["enc_outputs"], enc_targets, num_boxes, suffix="_enc"))
        if dn is not None:
            if "dn_outputs" not in outputs:
                raise KeyError("DETRCriterion: denoising queries given but outputs has no 'dn_outputs'")
            losses.update(self.fixed_target_losses(outputs["dn_outputs"], dn, num_boxes * dn.num_groups, "_dn"))
        return losses

    # ------------------------------------------------------------------ the two query kinds
    def matched_losses(
        self, outputs: Dict, targets: List[Dict[str, Tensor]], num_boxes: Tensor, suffix: str = ""
    ) -> Dict[str, Tensor]:
        """Hungarian-matched losses of ``outputs`` (last layer: ``suffix``) and of each of its
        ``outputs["aux_outputs"]`` (``{suffix}_{i}``), each layer matched on its own.

        ``num_boxes``: normaliser, see ``reduce_num_boxes``.
        """
        def one_layer(out: Dict, layer_suffix: str) -> Dict[str, Tensor]:
            indices = self.matcher(out["pred_logits"], out["pred_boxes"], targets)
            labels, boxes, positive = self.matched_targets(out["pred_logits"], indices, targets)
            valid = torch.ones_like(positive)
            return self._losses(out, labels, boxes, valid, positive, num_boxes, layer_suffix)

        return self._over_layers(outputs, one_layer, suffix)

    def fixed_target_losses(
        self, outputs: Dict, fixed: FixedTargetQueries, normalizer: Union[Tensor, float], suffix: str
    ) -> Dict[str, Tensor]:
        """Losses of queries with known targets: ``outputs`` holds their predictions (B, N, ...)
        for the last layer (keys ``loss_*{suffix}``) and optionally ``aux_outputs``
        (``loss_*{suffix}_{i}``). Padded slots take part in no loss, negatives only in the
        classification loss.

        ``normalizer``: DINO's denoising uses ``num_boxes * num_groups`` (official
        ``compute_dn_loss``), i.e. about the number of positive DN queries; Co-DETR's positive
        queries use ``reduce_num_boxes(number of positive queries)``.
        """
        def one_layer(out: Dict, layer_suffix: str) -> Dict[str, Tensor]:
            return self._losses(out, fixed.labels, fixed.boxes, fixed.valid, fixed.positive, normalizer, layer_suffix)

        return self._over_layers(outputs, one_layer, suffix)

    def matched_targets(self, pred_logits: Tensor, indices, targets: List[Dict[str, Tensor]]):
        """Dense per-query targets from a matching.

        Returns:
            labels (B, Q) int64 (``num_classes`` for unmatched queries), boxes (B, Q, 4)
            normalised cxcywh (zeros for unmatched), positive (B, Q) bool.
        """
        batch, num_queries = pred_logits.shape[:2]
        device = pred_logits.device
        labels = torch.full((batch, num_queries), self.num_classes, dtype=torch.int64, device=device)
        boxes = torch.zeros(batch, num_queries, 4, device=device)
        positive = torch.zeros(batch, num_queries, dtype=torch.bool, device=device)
        for b, ((query_idx, target_idx), t) in enumerate(zip(indices, targets)):
            labels[b, query_idx] = t["labels"][target_idx]
            boxes[b, query_idx] = t["boxes"][target_idx].float()
            positive[b, query_idx] = True
        return labels, boxes, positive

    # ------------------------------------------------------------------ the single loss
    def _losses(self, outputs: Dict, labels: Tensor, boxes: Tensor, valid: Tensor, positive: Tensor,
                normalizer: Union[Tensor, float], suffix: str) -> Dict[str, Tensor]:
        """Weighted losses of one layer from dense targets.

        Args:
            outputs: "pred_logits" (B, Q, C), "pred_boxes" (B, Q, 4) normalised cxcywh.
            labels (B, Q) int64; boxes (B, Q, 4) normalised cxcywh; valid, positive (B, Q) bool.
            normalizer: scalar divisor of every summed loss (the softmax classification loss is
                a weighted mean instead, see the class docstring).
        """
        logits, pred_boxes = outputs["pred_logits"], outputs["pred_boxes"]
        with torch.autocast(device_type=logits.device.type, enabled=False):
            logits, pred_boxes = logits[valid].float(), pred_boxes.float()
            loss_class, class_normalizer = self._class_loss(logits, labels[valid], pred_boxes[valid], boxes[valid])
            pos_pred, pos_target = pred_boxes[positive], boxes[positive].float()
            losses = {
                "loss_class": normalized_sum(loss_class, normalizer if class_normalizer is None else class_normalizer),
                "loss_bbox": normalized_sum(
                    l1_loss(l1_boxes(pos_pred, self.l1_box_format), l1_boxes(pos_target, self.l1_box_format)),
                    normalizer,
                ),
                "loss_giou": normalized_sum(
                    giou_loss(box_cxcywh_to_xyxy(pos_pred), box_cxcywh_to_xyxy(pos_target)), normalizer
                ),
            }
        return {name + suffix: self.weights[name] * value for name, value in losses.items()}

    def _class_loss(
        self, logits: Tensor, labels: Tensor, pred_boxes: Tensor, target_boxes: Tensor
    ) -> Tuple[Tensor, Optional[Tensor]]:
        """(M, C) logits, (M,) labels (K = no object), (M, 4) predicted / target cxcywh boxes ->
        the unreduced fp32 loss ((M, K) focal or quality focal, (M,) weighted softmax
        cross-entropy) and its own normaliser (softmax: the sum of the queries' class weights;
        None: the caller's)."""
        if self.class_loss == "softmax":
            if logits.shape[-1] != self.num_classes + 1:
                raise ValueError(
                    f"DETRCriterion: the softmax loss needs num_classes + 1 = {self.num_classes + 1} logits "
                    f"('no object' last), got {logits.shape[-1]}"
                )
            weight = torch.ones(self.num_classes + 1, device=logits.device)
            weight[-1] = self.eos_coef
            loss = F.cross_entropy(logits, labels, weight=weight, reduction="none")  # weight[label] * CE
            return loss, weight[labels].sum().clamp(min=torch.finfo(torch.float32).tiny)
        one_hot = F.one_hot(labels, self.num_classes + 1)[:, : self.num_classes].float()
        if self.class_loss == "focal":
            return sigmoid_focal_loss(logits, one_hot, self.focal_alpha, self.focal_gamma), None
        iou = elementwise_box_iou(box_cxcywh_to_xyxy(pred_boxes.detach()), box_cxcywh_to_xyxy(target_boxes))
        return quality_focal_loss(logits, one_hot * iou[:, None], self.qfl_beta), None

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _over_layers(
        outputs: Dict, one_layer: Callable[[Dict, str], Dict[str, Tensor]], suffix: str
    ) -> Dict[str, Tensor]:
        """Apply ``one_layer`` to the last layer (``suffix``) and to aux layer i (``{suffix}_{i}``)."""
        losses = one_layer(outputs, suffix)
        for i, aux in enumerate(outputs.get("aux_outputs", [])):
            losses.update(one_layer(aux, f"{suffix}_{i}"))
        return losses
