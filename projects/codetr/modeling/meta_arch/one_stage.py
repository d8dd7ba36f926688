"""One-stage dense detectors (TOOD, ATSS): ResNet + FPN (P3..P7) + a ``DenseHead``.

The detector is Detectron2's generic one-stage flow (``DenseDetector``: preprocess, backbone,
``head(features)``, training losses or inference, results rescaled to the inputs' "height" /
"width": ``codetr.modeling.postprocess.rescale_detections``) around a ``DenseHead`` (``codetr.modeling.heads.dense``), which holds the
anchors, assigner, losses and inference (and is also a Co-DETR auxiliary head). A paper's
detector is this class under its own registered name (``TOOD``, ``ATSS``).
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import torch.nn.functional as F
from detectron2.modeling import Backbone
from detectron2.modeling.backbone.fpn import LastLevelP6P7 as _D2LastLevelP6P7
from detectron2.modeling.meta_arch.dense_detector import DenseDetector
from detectron2.structures import ImageList
from torch import Tensor

from codetr.modeling.heads.dense import DenseHead
from codetr.modeling.postprocess import rescale_detections

from .preprocess import normalize_and_pad

__all__ = ["LastLevelP6P7", "OneStageDetector"]


class LastLevelP6P7(_D2LastLevelP6P7):
    """Detectron2's P6/P7 top block, optionally without the ReLU before P7.

    mmdet's FPN with ``add_extra_convs="on_output"`` (TOOD, ATSS, GFL) computes
    ``P7 = conv(P6)``; Detectron2's RetinaNet block computes ``P7 = conv(relu(P6))``.
    ``in_feature="p5"`` takes P6 from FPN's output P5 ("on_output").
    """

    def __init__(self, in_channels: int, out_channels: int, in_feature: str = "p5", relu_before_p7: bool = False):
        super().__init__(in_channels, out_channels, in_feature)
        self.relu_before_p7 = relu_before_p7

    def forward(self, x: Tensor) -> List[Tensor]:
        p6 = self.p6(x)
        p7 = self.p7(F.relu(p6) if self.relu_before_p7 else p6)
        return [p6, p7]


class OneStageDetector(DenseDetector):
    """A backbone (returning the pyramid) and a ``DenseHead``.

    Args:
        backbone: a Detectron2 ``Backbone`` returning the pyramid the head reads (FPN P3..P7).
        head: a ``DenseHead`` (its ``in_features`` name the backbone outputs it uses).
        pixel_mean, pixel_std: RGB normalisation of the uint8 input images.
        input_format: "RGB" (the data interface) or "BGR" (images are flipped to RGB).
        size_divisibility: pad batched images to a multiple of this (mmdet: 32).
        detectron2_postprocess: rescale the results with Detectron2's ``detector_postprocess``
            (clipped to the output size, empty boxes dropped); False: rescaled only, every
            detection kept (MMDetection). See ``codetr.modeling.postprocess``.

    forward(batched_inputs): Detectron2 inputs. Training: the head's weighted losses.
    Inference: ``[{"instances": Instances(pred_boxes, scores, pred_classes)}]`` in original
    image coordinates (the inputs' "height" / "width").
    """

    def __init__(
        self,
        backbone: Backbone,
        head: DenseHead,
        pixel_mean: Sequence[float] = (123.675, 116.28, 103.53),
        pixel_std: Sequence[float] = (58.395, 57.12, 57.375),
        input_format: str = "RGB",
        size_divisibility: int = 32,
        detectron2_postprocess: bool = True,
    ):
        name = type(self).__name__
        if input_format not in ("RGB", "BGR"):
            raise ValueError(f"{name}: input_format={input_format!r}; expected 'RGB' or 'BGR'")
        missing = [f for f in head.in_features if f not in backbone.output_shape()]
        if missing:
            raise ValueError(
                f"{name}: head.in_features {missing} are not backbone outputs {list(backbone.output_shape())}"
            )
        super().__init__(backbone, head, head.in_features, pixel_mean=pixel_mean, pixel_std=pixel_std)
        self.input_format = input_format
        self.size_divisibility = size_divisibility
        self.detectron2_postprocess = detectron2_postprocess

    def forward(self, batched_inputs: List[Dict]):
        """``DenseDetector.forward``, with the inference results rescaled by ``rescale_detections``."""
        if self.training:
            return super().forward(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        features = [features[f] for f in self.head_in_features]
        results = self.forward_inference(images, features, self.head(features))
        return [
            {"instances": rescale_detections(r, x.get("height", r.image_size[0]), x.get("width", r.image_size[1]),
                                             self.detectron2_postprocess)}
            for r, x in zip(results, batched_inputs)
        ]

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    @property
    def num_queries(self) -> None:
        """Dense detectors have no queries (every anchor may match)."""
        return None

    @property
    def detections_per_image(self) -> int:
        return self.head.test_detections_per_image

    def preprocess_image(self, batched_inputs: List[Dict]) -> ImageList:
        return normalize_and_pad(
            batched_inputs, self.pixel_mean, self.pixel_std, self.input_format, self.size_divisibility
        )

    def forward_training(self, images: ImageList, features: List[Tensor], predictions, gt_instances):
        losses, _ = self.head.losses(self.head.anchors(features), gt_instances, predictions)
        return losses

    def forward_inference(self, images: ImageList, features: List[Tensor], predictions):
        return self.head.inference(images.image_sizes, self.head.anchors(features), predictions)
