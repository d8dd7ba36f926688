"""Co-DEQDet (no public code or result: Co-DETR's collaborative training around DEQDet), R18 on the
shapes dataset: ``deqdet_r18_shapes.py`` (data, schedule, optimiser: the decoder lr x 4 still
matches ``detector.decoder``) plus ``configs/common/co_detr.py``'s parts with K = 1: an ATSS
auxiliary head on the neck's maps (C2..C5, strides 4..32) and one extra stride-2 level, p2..p6;
its positive queries (Co-DINO style: content from the box; the AdaMixer layers embed each query's
xyzr, which comes from the positive box) through g and the fixed point of f alone
(``decode_fixed``), lambda_1 = 1; the head's losses x lambda_2 * 8, the 8 supervised outputs of
DEQDet's loop (init, init^1, init^2, iter 1, 3, 6, 9, 12) standing for the decoder layers.
Inference is DEQDet alone (``eval_module="detr"``; ``"one-stage"`` evaluates the ATSS head).
Untuned.
"""
from ..common.co_detr import co_detr
from .deqdet_r18_shapes import WIDTH, dataloader, lr_multiplier, optimizer, train  # noqa: F401
from .deqdet_r18_shapes import model as detector  # noqa: E402

train.output_dir = "./output/co_deqdet_r18_shapes"

PYRAMID = ["p2", "p3", "p4", "p5", "p6"]
model = co_detr(detector, PYRAMID, num_decoder_layers=8, num_roi_levels=4, width="neck.out_channels")
model.aux_heads = [model.aux_heads[1]]  # ATSS only (K = 1)
model.positive_queries.num_heads = 1
model.eval_heads = {"one-stage": 0}
