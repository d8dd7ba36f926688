"""DN-DETR-DC5-R50 (DN-DAB-DETR), 50 epochs on COCO (official: 46.3 AP): ``dn_detr_r50_50ep.py``
with res5 dilated as torchvision's ``replace_stride_with_dilation`` (stride 16)."""
from detectron2.layers import ShapeSpec

from .dn_detr_r50_50ep import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.backbone.stages.res5_dilation = 2
model.neck.input_shapes = {"res5": ShapeSpec(channels=2048, stride=16)}
train.output_dir = "./output/dn_detr_r50_dc5_50ep"
