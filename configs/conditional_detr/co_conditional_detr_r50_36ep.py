"""Co-Conditional-DETR-R50 (C5), 36 epochs (Co-DETR paper Table 2: 41.8 AP with K = 2, 41.5 with
ATSS alone, vs 39.4 for its own 36-epoch Conditional DETR; no public code).

Conditional DETR-R50 plus, during training only, Co-DETR's multi-scale adapter (p3..p7, strides
8..128, from the stride-32 encoder map: 3x3 stride-2 conv + GN down, bilinear x2 + 3x3 conv + GN
up), Faster R-CNN and ATSS auxiliary heads (losses x lambda_2 * 6 decoder layers = 12) and their
positive queries (lambda_1 = 1; positions from MLP(sine(point)), the decoder's ``ref_point_head``):
``configs/common/co_detr.py``'s parts. The Conditional DETR recipe (AdamW 1e-4 / 1e-5, clip 0.1,
batch 16), LR x 0.1 after epoch 30.
"""
from detectron2.config import LazyCall as L

from codetr.modeling.necks import SingleScalePyramidAdapter

from ..common.co_detr import co_detr
from ..common.schedule import lr_multiplier_36ep as lr_multiplier  # noqa: F401
from .conditional_detr_r50_50ep import dataloader, optimizer, train  # noqa: F401
from .conditional_detr_r50_50ep import model as detector  # noqa: E402

train.output_dir = "./output/co_conditional_detr_r50_36ep"
train.epochs = 36
detector.transformer.decoder.ref_point_head = True

PYRAMID = ["p3", "p4", "p5", "p6", "p7"]
model = co_detr(detector, PYRAMID, num_decoder_layers=6, num_roi_levels=4)  # RoIAlign on p3..p6
model.pyramid_adapter = L(SingleScalePyramidAdapter)(
    channels="${..detector.transformer.embed_dim}", in_stride=32, strides=[8, 16, 32, 64, 128], num_groups=32
)
