"""Set criterion of the DETR family (Deformable-DETR, DN-DETR, DINO, Co-DINO).

Two ways of knowing a query's target, one loss:
- matched queries: targets found by Hungarian matching (``matched_losses``), on the last decoder
  layer, every auxiliary decoder layer and the encoder proposals;
- fixed-target queries: targets known by construction (``fixed_target_losses``): DN / CDN groups
  and Co-DETR's customised positive queries.
Both build dense per-query targets (label, box, valid, positive) and call the same ``_losses``.

Conventions:
- ``pred_logits`` (B, Q, C) raw scores; ``pred_boxes`` (B, Q, 4) normalised cxcywh (sigmoid applied).
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
from typing import Callable, Dict, List, Optional, Union

import torch
import torch.nn.functional as F
from detectron2.utils import comm
from torch import Tensor, nn

from codetr.layers.box_ops import box_cxcywh_to_xyxy, elementwise_box_iou
from codetr.modeling.losses import giou_loss, l1_loss, normalized_sum, quality_focal_loss, sigmoid_focal_loss
from codetr.modeling.matcher import HungarianMatcher
from codetr.modeling.queries.denoising import FixedTargetQueries

__all__ = ["DETRCriterion", "reduce_num_boxes"]

LOSS_NAMES = ("loss_class", "loss_bbox", "loss_giou")


def reduce_num_boxes(count: Union[int, float, Tensor], device: torch.device) -> Tensor:
    """Average of ``count`` over all workers (all-reduce / world size), clamped to >= 1.

    The DETR normaliser: the mean number of target boxes (or positives) per worker. Returns a
    0-dim fp32 tensor on ``device``.
    """
    count = torch.as_tensor(count, dtype=torch.float32, device=device)
    world_size = comm.get_world_size()
    if world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(count)
        count = count / world_size
    return count.clamp(min=1.0)


class DETRCriterion(nn.Module):
    """Weighted focal / quality-focal classification, L1 and GIoU box losses for DETR queries.

    Args:
        num_classes: C; label ``num_classes`` means "no object".
        matcher: Hungarian matcher (default: cost_class 2, cost_bbox 5, cost_giou 2, focal costs).
        class_loss: "focal" (sigmoid focal, DINO) or "qfl" (quality focal, Co-DINO: the target of
            a positive is the IoU of its detached predicted box with its target box).
        weight_class, weight_bbox, weight_giou: loss weights (applied here, for every suffix).
        focal_alpha, focal_gamma: focal loss parameters. qfl_beta: QFL exponent.
        with_dn: emit ``_dn`` keys (zeros) even when a batch has no denoising queries, so that the
            loss dict has the same keys on every iteration and worker (detectron2's metric
            gathering needs that).
        binary_enc_loss: the encoder proposals (``enc_outputs``) are matched and classified with
            every ground-truth label set to 0 (foreground = class 0), as Deformable-DETR's
            two-stage loss (mmdet ``DeformableDETRHead.loss``, Co-Deformable-DETR); False (DINO,
            Co-DINO): with the true labels.
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
        with_dn: bool = False,
        binary_enc_loss: bool = False,
    ):
        super().__init__()
        if class_loss not in ("focal", "qfl"):
            raise ValueError(f"DETRCriterion: class_loss={class_loss!r}; expected 'focal' or 'qfl'")
        self.num_classes = num_classes
        self.matcher = matcher if matcher is not None else HungarianMatcher()
        self.class_loss = class_loss
        self.weights = {"loss_class": weight_class, "loss_bbox": weight_bbox, "loss_giou": weight_giou}
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.qfl_beta = qfl_beta
        self.with_dn = with_dn
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
        ``outputs["dn_outputs"]``; their normaliser is ``num_boxes * dn.num_groups``.
        """
        device = outputs["pred_logits"].device
        num_boxes = reduce_num_boxes(sum(t["labels"].numel() for t in targets), device)
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
        elif self.with_dn:
            num_aux = len(outputs.get("aux_outputs", []))
            losses.update(self._zero_losses("_dn", num_aux, device))
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
            normalizer: scalar divisor of every summed loss.
        """
        logits, pred_boxes = outputs["pred_logits"], outputs["pred_boxes"]
        with torch.autocast(device_type=logits.device.type, enabled=False):
            logits, pred_boxes = logits[valid].float(), pred_boxes.float()
            loss_class = self._class_loss(logits, labels[valid], pred_boxes[valid], boxes[valid])
            pos_pred, pos_target = pred_boxes[positive], boxes[positive].float()
            losses = {
                "loss_class": normalized_sum(loss_class, normalizer),
                "loss_bbox": normalized_sum(l1_loss(pos_pred, pos_target), normalizer),
                "loss_giou": normalized_sum(
                    giou_loss(box_cxcywh_to_xyxy(pos_pred), box_cxcywh_to_xyxy(pos_target)), normalizer
                ),
            }
        return {name + suffix: self.weights[name] * value for name, value in losses.items()}

    def _class_loss(self, logits: Tensor, labels: Tensor, pred_boxes: Tensor, target_boxes: Tensor) -> Tensor:
        """(M, C) logits, (M,) labels (C = no object), (M, 4) predicted / target cxcywh boxes ->
        (M, C) unreduced fp32 focal or quality focal loss."""
        one_hot = F.one_hot(labels, self.num_classes + 1)[:, : self.num_classes].float()
        if self.class_loss == "focal":
            return sigmoid_focal_loss(logits, one_hot, self.focal_alpha, self.focal_gamma)
        iou = elementwise_box_iou(box_cxcywh_to_xyxy(pred_boxes.detach()), box_cxcywh_to_xyxy(target_boxes))
        return quality_focal_loss(logits, one_hot * iou[:, None], self.qfl_beta)

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

    def _zero_losses(self, suffix: str, num_aux: int, device: torch.device) -> Dict[str, Tensor]:
        suffixes = [suffix] + [f"{suffix}_{i}" for i in range(num_aux)]
        return {name + s: torch.zeros((), device=device) for s in suffixes for name in LOSS_NAMES}
