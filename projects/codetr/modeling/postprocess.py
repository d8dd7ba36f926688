"""The last step of inference: clipping detections to the image and rescaling them to the size the
caller asked for, in each of the ways the official codes do it.

Two switches, carried by each detector (``QueryDetector``, ``TOOD`` and its head):

- ``clip_before_nms``: clamp the boxes to the image frame as soon as they are in pixels, before
  any (Soft-)NMS (and also when there is none): mmdet's DETR heads, Co-DETR (Sense-X
  ``projects/models/co_deformable_detr_head.py`` ``CoDeformDETRHead._get_bboxes_single``, which
  Co-DINO's head inherits; MMDetection 3 ``projects/CO-DETR/codetr/co_dino_head.py``
  ``CoDINOHead._predict_by_feat_single``), mmdet's ATSS (decoding with ``max_shape``),
  Detectron2's ROI heads (``fast_rcnn_inference_single_image``).
- ``detectron2_postprocess``: Detectron2's ``detector_postprocess`` rescales to the output size,
  clips the boxes to it and **drops the boxes that are then empty** (Detectron2, detrex). False:
  the boxes are only rescaled, every detection is kept (mmdet rescales by ``scale_factor`` and
  keeps them all; the official DETR-family ``PostProcess`` scales by the original size and keeps
  them all).

The class defaults are Detectron2's behaviour (``clip_before_nms=False`` for the query detectors,
``True`` for the dense heads, whose ``dense_detections`` has always clipped; ``detectron2_postprocess=True``).
The configs set each source's official post-processing:

- DINO, DN-Deformable-DETR (detrex): no clipping before NMS, ``detectron2_postprocess``
  (detrex ``projects/dino/modeling/dino.py`` calls ``detector_postprocess``).
- Co-DINO, Co-Deformable-DETR and every Co-DETR config (``configs/common/co_detr.py``):
  ``clip_before_nms``, nothing dropped (the Sense-X / MMDetection 3 heads above).
- Conditional DETR, DAB-DETR, DN-DETR: neither; official ``PostProcess`` (Atten4Vis
  ``models/conditional_detr.py``, IDEA-Research ``models/DAB_DETR/DABDETR.py``,
  ``models/DN_DAB_DETR/DABDETR.py``) scales the boxes and keeps them all.
- AdaMixer, DEQDet, RNNDet: neither; MCG-NJU ``adamixer_decoder.py``
  ``simple_test`` / ``deq_det_roi_head.py`` ``DEQDetRoIHead.predict`` return the top-k boxes
  divided by ``scale_factor``, unclipped.
- TOOD: neither; MMDetection's ``TOODHead`` decodes without ``max_shape`` and its
  ``_bbox_post_process`` rescales and runs NMS without clipping.
"""
from __future__ import annotations

from typing import Union

import torch
from detectron2.modeling import detector_postprocess
from detectron2.structures import Instances
from torch import Tensor

__all__ = ["clip_boxes", "rescale_detections"]

Number = Union[int, float, Tensor]


def clip_boxes(boxes: Tensor, height: Number, width: Number) -> Tensor:
    """(N, 4) absolute xyxy -> the same boxes clamped to [0, width] x [0, height] (a new tensor;
    as mmdet's ``clamp_(min=0, max=img_shape)`` on x and y). Traceable: ``height`` / ``width``
    may be symbolic sizes."""
    x = boxes[:, 0::2].clamp(min=0, max=width)
    y = boxes[:, 1::2].clamp(min=0, max=height)
    return torch.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], -1)


def rescale_detections(results: Instances, height: int, width: int, detectron2_postprocess: bool = True) -> Instances:
    """Detections in ``results.image_size`` (h, w) coordinates -> detections of a ``height`` x
    ``width`` image.

    ``detectron2_postprocess``: Detectron2's ``detector_postprocess`` (boxes scaled, clipped to the
    output, empty boxes dropped). False: boxes scaled by ``width / w`` and ``height / h`` only;
    every detection kept, in order, with its other fields.
    """
    if detectron2_postprocess:
        return detector_postprocess(results, height, width)
    h, w = results.image_size
    out = Instances((height, width), **results.get_fields())
    if out.has("pred_boxes"):
        out.pred_boxes = out.pred_boxes.clone()
        out.pred_boxes.scale(width / w, height / h)
    return out
