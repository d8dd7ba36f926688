"""Co-DINO-R18 on the shapes dataset with the TOOD T-Head (task-aligned learning) as an auxiliary
head in place of ATSS: Faster R-CNN + T-Head (K = 2), otherwise ``co_dino_r18_shapes.py``, so the
two compare directly. The T-Head assigns with TAL from the first iteration (``initial_epochs=0``:
Co-DETR's auxiliary heads train with the detector from scratch, and its ATSS head already covers
the ATSS variant); its losses are scaled by lambda_2 * number of decoder layers like the others.
"""
from detectron2.config import LazyCall as L

from codetr.modeling.heads.tood_head import TOODHead

from .co_dino_r18_shapes import (  # noqa: F401
    HIDDEN,
    LAMBDA_2,
    NUM_DECODER_LAYERS,
    PYRAMID,
    STRIDES,
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    train,
)

train.output_dir = "./output/co_dino_tood_r18_shapes"
model.aux_heads[1] = L(TOODHead)(
    num_classes="${...num_classes}",
    in_features=PYRAMID,
    strides=STRIDES,
    in_channels="${...detector.transformer.embed_dim}",
    feat_channels="${...detector.transformer.embed_dim}",
    stacked_convs=4,
    initial_epochs=0,
    loss_scale=LAMBDA_2 * NUM_DECODER_LAYERS,
)
model.eval_heads = {"two-stage": 0, "one-stage": 1}
