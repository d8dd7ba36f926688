"""DINO-R18 on the bundled synthetic shapes dataset, sized to train from scratch on a CPU.

A small DINO (hidden 128, 2 encoder / 3 decoder layers, 100 queries, 30 denoising queries) on a
randomly initialised ResNet-18 with BatchNorm (nothing frozen; no pretrained weights exist on
these machines, so ``init_checkpoint`` is empty), on images resized to a short side of 128..192
(test: 160). 2 epochs of 500 iterations at batch 4; the LR (5e-4, backbone x 1) is divided by 10
for the last 1/12 of the schedule. Defaults to ``train.device=cpu``.
"""
from detectron2.layers import ShapeSpec

from ..common.data.shapes import dataloader
from ..common.optim import AdamW as optimizer
from ..common.schedule import multistep
from ..common.train_shapes import EPOCHS, resnet18_from_scratch, train
from .models.dino_r50 import model

HIDDEN = 128

train.output_dir = "./output/dino_r18_shapes"
train.clip_grad.enabled = True
train.clip_grad.max_norm = 0.1
train.vis_output_images = 4  # draw the detections of 4 validation images into output_dir/vis
train.vis_score_threshold = 0.2  # after 2 epochs from scratch the best scores are ~0.2-0.3
lr_multiplier = multistep([11], epochs=12)  # x0.1 for the last 1/12 of the run, as 11 of 12 epochs

optimizer.lr = 5e-4  # from scratch and short: higher than COCO's 1e-4 (AP 6.4 vs 3.7 with 2e-4)
optimizer.params.lr_factors = {}

model.num_classes = 8
model.num_queries = 100
model.select_box_nums_for_evaluation = 100

resnet18_from_scratch(model.backbone)
model.neck.input_shapes = {
    "res3": ShapeSpec(channels=128, stride=8),
    "res4": ShapeSpec(channels=256, stride=16),
    "res5": ShapeSpec(channels=512, stride=32),
}
model.position_embedding.num_pos_feats = HIDDEN // 2

model.transformer.embed_dim = HIDDEN
model.transformer.encoder.update(num_layers=2, ffn_dim=4 * HIDDEN)  # embed_dim: the transformer's
model.transformer.decoder.update(num_layers=3, ffn_dim=4 * HIDDEN)
model.denoising.num_dn_queries = 30

# smaller images than configs/common/data/shapes.py (~0.6x): short side 128..192 for training,
# 160 for testing, to fit the CPU budget
TRAIN_SIZES = [128, 144, 160, 176, 192]
dataloader.train.mapper.augmentation.update(min_sizes=TRAIN_SIZES, max_size=320)
dataloader.train.mapper.augmentation_with_crop.update(
    min_sizes=TRAIN_SIZES, max_size=320, crop_resize_sizes=[128, 160, 192], crop_size=[96, 160]
)
dataloader.test.mapper.augmentation.update(short_size=160, max_size=272)
dataloader.evaluator.output_dir = "${train.output_dir}"
