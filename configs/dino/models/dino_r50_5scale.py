"""DINO-R50 5-scale (detrex dino_r50_5scale): ``dino_r50.py`` on res2..res5 plus one extra
stride-64 level (strides 4..64)."""
from detectron2.layers import ShapeSpec

from .dino_r50 import model

model.backbone.out_features = ["res2", "res3", "res4", "res5"]
model.neck.input_shapes = {
    "res2": ShapeSpec(channels=256, stride=4),
    "res3": ShapeSpec(channels=512, stride=8),
    "res4": ShapeSpec(channels=1024, stride=16),
    "res5": ShapeSpec(channels=2048, stride=32),
}
model.neck.in_features = ["res2", "res3", "res4", "res5"]
model.neck.num_outs = 5
model.transformer.num_feature_levels = 5
