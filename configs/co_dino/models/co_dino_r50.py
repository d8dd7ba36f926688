"""Co-DINO-R50 5-scale (official ``co_dino_5scale_r50_1x_coco``): a DINO-R50 5-scale detector
(quality focal loss in the matching, denoising and positive-query branches; 900 queries; CDN with
100 denoising queries, label noise 0.5, box noise 1.0; class-wise linear Soft-NMS, IoU 0.8, on
the top-900 pairs, 300 kept) plus, during training only, K = 2 auxiliary heads on the encoder
pyramid p2..p7 (Faster R-CNN, ATSS; losses x lambda_2 * 6 decoder layers = 12) and their
customized positive queries (lambda_1 = 1, 9..300 queries per image and head).
"""
from ...common.co_detr import co_detr
from ...dino.models.dino_r50_5scale import model as detector

# official Co-DINO: mmdet SinePositionalEncoding(num_feats=128, temperature=20, normalize=True), offset 0
detector.position_embedding.temperature = 20
detector.position_embedding.offset = 0.0
detector.criterion.class_loss = "qfl"
detector.nms = "soft_nms"
detector.nms_iou_threshold = 0.8
detector.nms_pre_topk = 900
detector.select_box_nums_for_evaluation = 300

# auxiliary pyramid: the encoder levels (strides 4..64) + stride 128; RoIAlign on p2..p6
model = co_detr(detector, ["p2", "p3", "p4", "p5", "p6", "p7"], num_decoder_layers=6, num_roi_levels=5)
