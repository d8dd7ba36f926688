"""The narrow interface between the detectors and the exporter.

An exportable detector is a module ``forward(image) -> (labels, boxes, scores)`` on ONE image:

- ``image``: (1, 3, H, W) uint8, channels in the wrapped model's ``input_format`` (as the
  Detectron2 data interface's ``"image"``, with a batch dimension of 1); any H, W;
- ``labels`` (K,) int64, ``boxes`` (K, 4) float32 absolute xyxy in the input image's pixels,
  ``scores`` (K,) float32, by decreasing score: the detections the PyTorch model returns for that
  image with ``height, width = H, W`` (after its post-processing, as the model's switches say:
  ``clip_before_nms`` clamps the boxes to the image before the NMS, ``detectron2_postprocess``
  clips them at the end and drops the empty ones; see ``codetr.modeling.postprocess``),
  K <= the model's detections per image.

Everything model-specific is in the adapters below, one per family; each calls only the model's
public pieces (normalisation constants, backbone + neck + encoder, the query stage or the dense
head's raw predictions) and re-implements the post-processing with tensor operations that
``torch.export`` can trace with dynamic image sizes (no Instances, no data-dependent Python).
``exportable(model)`` picks the adapter and raises ``UnsupportedModelError`` for anything else.
"""
from __future__ import annotations

import logging
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import nms

from codetr.modeling.meta_arch import TOOD, CoDETR, QueryDetector
from codetr.modeling.postprocess import clip_boxes

__all__ = ["ExportableDetector", "QueryDetectorExport", "TOODExport", "UnsupportedModelError", "exportable"]

logger = logging.getLogger(__name__)


class _Images:
    """What the detector's ``encode`` reads of its ImageList: the padded batch ``tensor``
    (N, 3, H, W) and the padding ``mask`` (N, H, W). (A plain class: dynamo traces it.)"""

    def __init__(self, tensor: Tensor, mask: Tensor):
        self.tensor, self.mask = tensor, mask


def _encode(det: QueryDetector, images: _Images):
    """The detector's encoder output (``QueryDetector.encode`` -> ``EncoderOutput``) and its L
    neck maps (``.features``)."""
    enc = det.encode(images)
    return enc, enc.features


class UnsupportedModelError(ValueError):
    """The model (or one of its settings) has no ONNX export; the message names it."""


class ExportableDetector(nn.Module):
    """Base of the adapters: input normalisation and padding shared by every family.

    Subclasses implement ``forward(image (1, 3, H, W) uint8) -> (labels, boxes, scores)``.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.input_format = model.input_format
        self.level_shapes = None

    @property
    def detectron2_postprocess(self) -> bool:
        """The model's last step: clip at the output size and drop empty boxes (True), or keep
        every detection; the graph does it at the input size, ``OnnxRuntimeDetector`` again at
        the original size (the graph's ``codetr.detectron2_postprocess`` metadata)."""
        return bool(self.model.detectron2_postprocess)

    def normalize(self, image: Tensor, size_divisibility: int) -> Tuple[Tensor, Tensor]:
        """uint8 (1, 3, H, W) -> normalised float (1, 3, H', W') zero-padded (after normalisation,
        as ``ImageList.from_tensors``) to a multiple of ``size_divisibility`` (0: no padding), and
        the (1, H', W') bool padding mask (True at padding)."""
        x = image.float()
        if self.input_format == "BGR":
            x = x.flip(1)
        x = (x - self.model.pixel_mean) / self.model.pixel_std
        h, w = x.shape[-2:]
        if size_divisibility > 1:
            # written as d * ceil(size / d) so that torch.export sees multiples of d (fast tracing)
            d = size_divisibility
            x = F.pad(x, (0, d * ((w + d - 1) // d) - w, 0, d * ((h + d - 1) // d) - h))
        ys = torch.arange(x.shape[-2], device=x.device)
        xs = torch.arange(x.shape[-1], device=x.device)
        mask = (ys[:, None] >= h) | (xs[None, :] >= w)
        return x, mask[None]

    def record_level_shapes(self, maps) -> None:
        """Keep the (H_l, W_l) of the feature maps of an eager call in ``level_shapes`` (the
        exporter checks them: ``torch.export`` specialises dynamic sizes equal to 1)."""
        if not torch.compiler.is_compiling():
            self.level_shapes = [tuple(int(s) for s in m.shape[-2:]) for m in maps]

    @staticmethod
    def finish(labels: Tensor, boxes: Tensor, scores: Tensor, h, w,
               detectron2_postprocess: bool = True) -> Tuple[Tensor, Tensor, Tensor]:
        """The model's last step at the input size: ``detector_postprocess`` (clip boxes to
        (h, w), drop empty boxes) if ``detectron2_postprocess``, else nothing (every detection
        kept as it is)."""
        if not detectron2_postprocess:
            return labels, boxes, scores
        boxes = clip_boxes(boxes, h, w)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        return labels[keep], boxes[keep], scores[keep]


def class_wise_nms(boxes: Tensor, scores: Tensor, labels: Tensor, iou_threshold: float) -> Tensor:
    """Hard NMS per class by offsetting each class's boxes (torchvision's coordinate trick), as
    one ``nms`` (ONNX ``NonMaxSuppression``). Returns kept indices by decreasing score. Boxes
    reaching below 0 (unclipped) are shifted to non-negative first, as ``codetr.layers.nms.batched_nms``
    does: the offsets separate the classes only then."""
    boxes = boxes - boxes.min().clamp(max=0)
    offsets = labels.to(boxes.dtype) * (boxes.max() + 1)
    return nms(boxes + offsets[:, None], scores, iou_threshold)


class QueryDetectorExport(ExportableDetector):
    """DETR family, any ``QueryDetector`` (DINO 4/5-scale, DN-Deformable-DETR, Deformable-DETR++,
    DETR, Conditional DETR / DAB-DETR / DN-DETR, AdaMixer / DEQDet / RNNDet): backbone, neck and
    encoder (``encode``), query selection and decoder (``forward_queries``), then the top-k
    (query, class) pairs of the detector's ``inference`` (``topk_pairs``: sigmoid scores; DETR's
    per-query softmax argmax).

    ``nms="nms"`` is exported (class-wise, ONNX ``NonMaxSuppression``); ``nms="soft_nms"`` has no
    ONNX operator and is dropped: the graph returns the top ``select_box_nums_for_evaluation``
    pairs, as the model with ``nms=None``.

    What it reads of the detector (the whole interface): ``pixel_mean``, ``pixel_std``,
    ``input_format``, ``size_divisibility``; ``encode(images)`` (``images.tensor`` (N, 3, H, W),
    ``images.mask`` (N, H, W)) -> encoder output with the L neck maps (``_encode``);
    ``forward_queries(enc)`` -> ``"pred_logits"`` (N, Q, K), ``"pred_boxes"`` (N, Q, 4)
    normalised cxcywh; ``topk_pairs`` (the top-k of its ``inference``), ``select_box_nums_for_evaluation``,
    ``nms``, ``nms_iou_threshold``, ``clip_before_nms``, ``detectron2_postprocess``.
    """

    def __init__(self, model: QueryDetector):
        super().__init__(model)
        self.soft_nms_dropped = model.nms == "soft_nms"
        if self.soft_nms_dropped:
            logger.warning("ONNX export: Soft-NMS has no ONNX operator; the graph returns the top-%d pairs without it",
                           model.select_box_nums_for_evaluation)

    def forward(self, image: Tensor):
        det = self.model
        h, w = image.shape[-2:]
        x, mask = self.normalize(image, det.size_divisibility)
        enc, features = _encode(det, _Images(x, mask))
        self.record_level_shapes(features)
        outputs = det.forward_queries(enc)
        hard_nms = det.nms == "nms"
        scores, labels, boxes = det.topk_pairs(outputs["pred_logits"][:1], outputs["pred_boxes"][:1], pre_nms=hard_nms)
        scores, labels, boxes = scores[0], labels[0], boxes[0]
        boxes = boxes * torch.tensor([w, h, w, h], dtype=boxes.dtype, device=boxes.device)  # traced, not baked
        if det.clip_before_nms:
            boxes = clip_boxes(boxes, h, w)
        if hard_nms:
            keep = class_wise_nms(boxes, scores, labels, det.nms_iou_threshold)[: det.select_box_nums_for_evaluation]
            labels, boxes, scores = labels[keep], boxes[keep], scores[keep]
        return self.finish(labels, boxes, scores, h, w, self.detectron2_postprocess)


class TOODExport(ExportableDetector):
    """TOOD: backbone (FPN) and the T-Head's raw predictions (``head.anchors`` / ``head.predict``),
    then ``dense_detections``: per level the top candidates above the score threshold, boxes
    clipped if ``head.test_clip_before_nms``, class-wise NMS, the best ``test_detections_per_image``,
    then the model's ``detectron2_postprocess`` (or nothing).

    Reads: ``pixel_mean``, ``pixel_std``, ``input_format``, ``size_divisibility``, ``backbone``
    (dict of maps), ``head.in_features``, ``head.anchors(feats)`` (per level (A_l, 4)),
    ``head.predict(feats, anchors)`` -> logits (N, A, K), boxes (N, A, 4) xyxy absolute,
    ``head.test_topk_candidates``, ``test_score_thresh``, ``test_nms_thresh``,
    ``test_detections_per_image``, ``test_clip_before_nms``; ``detectron2_postprocess``."""

    def forward(self, image: Tensor):
        head = self.model.head
        h, w = image.shape[-2:]
        x, _ = self.normalize(image, self.model.size_divisibility)
        features = self.model.backbone(x)
        feats = [features[f] for f in head.in_features]
        anchors = head.anchors(feats)
        logits, boxes = head.predict(feats, anchors)
        logits, boxes = logits[0], boxes[0]
        num_classes = logits.shape[1]
        self.record_level_shapes(feats)
        # Per level the top-k pairs; the score threshold is applied after the NMS: a pair below
        # it can suppress no pair above it (NMS suppresses lower scores only) and is then
        # dropped, so the result equals threshold -> top-k -> NMS without data-dependent shapes
        # before the NMS.
        all_boxes, all_scores, all_labels = [], [], []
        start = 0
        for a in anchors:
            count = a.shape[0]
            scores = logits[start : start + count].sigmoid().flatten()
            scores, idx = scores.topk(torch.sym_min(head.test_topk_candidates, scores.shape[0]))
            all_boxes.append(boxes[start : start + count][idx // num_classes])
            all_scores.append(scores)
            all_labels.append(idx % num_classes)
            start = start + count
        boxes, scores, labels = torch.cat(all_boxes), torch.cat(all_scores), torch.cat(all_labels)
        if head.test_clip_before_nms:
            boxes = clip_boxes(boxes, h, w)
        keep = class_wise_nms(boxes, scores, labels, head.test_nms_thresh)
        keep = keep[scores[keep] > head.test_score_thresh][: head.test_detections_per_image]
        return self.finish(labels[keep], boxes[keep], scores[keep], h, w, self.detectron2_postprocess)


def exportable(model: nn.Module) -> ExportableDetector:
    """The adapter of ``model`` (put in eval mode), or ``UnsupportedModelError`` naming what
    cannot be exported.

    Co-DETR (Co-DINO, Co-Deformable-DETR) exports its wrapped DINO: its inference graph with
    ``eval_module="detr"``; the auxiliary heads are not part of it.
    """
    model = model.eval()
    if isinstance(model, CoDETR):
        if model.eval_module != "detr":
            raise UnsupportedModelError(
                f"ONNX export: CoDETR with eval_module={model.eval_module!r} (an auxiliary head's inference) is not "
                "exportable; export with eval_module='detr' (the DINO detector)"
            )
        return QueryDetectorExport(model.detector)
    if isinstance(model, QueryDetector):
        return QueryDetectorExport(model)
    if isinstance(model, TOOD):
        return TOODExport(model)
    raise UnsupportedModelError(
        f"ONNX export: no exporter for {type(model).__name__}; exportable: any QueryDetector (DINO, DN-Deformable-DETR, "
        "DETR, Conditional DETR, DAB-DETR, DN-DETR, AdaMixer, DEQDet, RNNDet), "
        "CoDETR (Co-DINO, Co-Deformable-DETR, eval_module='detr'), TOOD"
    )
