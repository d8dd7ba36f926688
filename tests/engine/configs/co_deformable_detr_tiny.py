"""Co-Deformable-DETR (configs/co_deformable_detr/co_deformable_detr_r50_12ep.py) on the tiny 64x64
test dataset, from random weights, shrunk for disk and time: ResNet-18 with BatchNorm and hidden
size 128 as configs/dino/dino_r18_shapes.py, 1 encoder / 2 decoder layers, R-CNN FCs of 64.

Everything that makes it Co-Deformable-DETR rather than Co-DINO stays: pos_trans query positions,
no final decoder norm, top-k by class 0, binary encoder loss, no denoising, focal loss, no NMS,
co_deformable positive queries with gathered features and head_pos_embed. (At R50 / 256 a
checkpoint with optimizer and EMA state is 1.0 GB; here 0.22 GB, mostly the ResNet-18.)
"""
from ....configs.co_deformable_detr.co_deformable_detr_r50_12ep import lr_multiplier, model, optimizer, train  # noqa: F401
from ....configs.dino.dino_r18_shapes import HIDDEN
from ....configs.dino.dino_r18_shapes import model as dino_r18  # its backbone and neck inputs
from .dino_r18_tiny import dataloader  # noqa: F401  (the tiny data, 6 train images, batch 2)
from .tiny_data import TINY_NUM_CLASSES

model.num_classes = TINY_NUM_CLASSES
model.num_queries = 20
model.detector.select_box_nums_for_evaluation = 20
model.positive_queries.max_queries = 30
train.init_checkpoint = ""
train.output_dir = "./output/co_deformable_detr_tiny"

detector = model.detector
detector.backbone = dino_r18.backbone
detector.neck.input_shapes = dino_r18.neck.input_shapes
detector.neck.out_channels = HIDDEN
detector.position_embedding.num_pos_feats = HIDDEN // 2
detector.transformer.embed_dim = HIDDEN
detector.transformer.encoder.update(num_layers=1, embed_dim=HIDDEN, ffn_dim=2 * HIDDEN)
detector.transformer.decoder.update(num_layers=2, embed_dim=HIDDEN, ffn_dim=2 * HIDDEN)
rcnn, atss = model.aux_heads
rcnn.update(in_channels=HIDDEN, fc_dim=64)
atss.update(in_channels=HIDDEN, feat_channels=HIDDEN)
model.positive_queries.update(embed_dim=HIDDEN, feat_dim=HIDDEN)
# LazyConfig.load turns every top-level dict into a config key: drop the aliases (their relative
# interpolations such as "${..num_classes}" only resolve inside `model`)
del detector, rcnn, atss, dino_r18
