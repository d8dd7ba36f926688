"""Co-DINO-R18 on the bundled synthetic shapes dataset: ``configs/dino/dino_r18_shapes.py`` (same
detector size, data, schedule and optimiser) plus the Co-DETR parts, so that the two compare
directly.

Co-DETR parts: quality focal loss and class-wise Soft-NMS (IoU 0.8) as Co-DINO; the auxiliary
pyramid p3..p7 from the 4-scale encoder (strides 8..64) + one stride-128 level; Faster R-CNN
and ATSS auxiliary heads (losses x 2 * 3 decoder
layers = 6, lambda_2 * number of decoder layers as the official code); customized positive
queries (9..300 per image and head, lambda_1 = 1). For an ablation of the collaborative branch
alone use ``model.detector.criterion.class_loss=focal model.detector.nms=null`` (``null``: a
command-line ``None`` stays the string "None").

CPU sizing of the Faster R-CNN head (the official values, kept in ``co_dino_5scale_r50_12ep.py``,
are for ~15x larger images): 2 FC of 256 instead of 1024; RPN top 1000 per level before NMS
instead of 4000 and 300 proposals per image instead of 1000; 128 RoIs sampled per image instead
of 512 (still 25% positive). With the official numbers torchvision's single-threaded CPU
``roi_align`` backward and the RPN's NMS took ~1 s of a ~2.1 s iteration (profiled with
``torch.profiler`` at 256 px, batch 4); see ``benchmarks/shapes_models_cost.md``.
"""
from ..common.co_detr import co_detr
from ..dino.dino_r18_shapes import HIDDEN, dataloader, lr_multiplier, optimizer, train  # noqa: F401
from ..dino.dino_r18_shapes import model as detector  # noqa: E402  (one module load per statement)

train.output_dir = "./output/co_dino_r18_shapes"

detector.criterion.class_loss = "qfl"
detector.nms = "soft_nms"
detector.nms_iou_threshold = 0.8
detector.nms_pre_topk = 900

LAMBDA_2 = 2.0
NUM_DECODER_LAYERS = 3
PYRAMID = ["p3", "p4", "p5", "p6", "p7"]
STRIDES = [8, 16, 32, 64, 128]

model = co_detr(detector, PYRAMID, num_decoder_layers=NUM_DECODER_LAYERS, num_roi_levels=4,
                lambda_2=LAMBDA_2)
model.aux_heads[0].update(  # the CPU sizing of the Faster R-CNN head (module docstring)
    fc_dim=256, pre_nms_topk=(1000, 1000), post_nms_topk=(300, 300), roi_batch_size_per_image=128
)
