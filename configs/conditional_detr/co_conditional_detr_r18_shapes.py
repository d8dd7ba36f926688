"""Co-Conditional-DETR (no public code; Co-DETR paper Table 2 reports +2.1 AP with an ATSS head on
Conditional DETR-C5), R18 on the shapes dataset: ``conditional_detr_r18_shapes.py`` plus Co-DETR's
multi-scale adapter (strides 8..128 from the stride-32 encoder map), an ATSS auxiliary head
(loss x lambda_2 * decoder layers) and its positive queries (lambda_1 = 1; their positions from
MLP(sine(point)), the decoder's ``ref_point_head``): ``configs/common/co_detr.py``'s parts with K = 1.
Inference is Conditional DETR alone."""
from detectron2.config import LazyCall as L

from codetr.modeling.necks import SingleScalePyramidAdapter

from ..common.co_detr import co_detr
from .conditional_detr_r18_shapes import HIDDEN, dataloader, lr_multiplier, optimizer, train  # noqa: F401
from .conditional_detr_r18_shapes import model as detector  # noqa: E402

train.output_dir = "./output/co_conditional_detr_r18_shapes"
detector.transformer.decoder.ref_point_head = True

PYRAMID = ["p3", "p4", "p5", "p6", "p7"]
model = co_detr(detector, PYRAMID, num_decoder_layers=3, num_roi_levels=4)
model.aux_heads = [model.aux_heads[1]]  # ATSS only (K = 1)
model.positive_queries.num_heads = 1
model.eval_heads = {"one-stage": 0}
model.pyramid_adapter = L(SingleScalePyramidAdapter)(
    channels="${..detector.transformer.embed_dim}", in_stride=32, strides=[8, 16, 32, 64, 128], num_groups=32
)
