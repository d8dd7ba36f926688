"""Co-Deformable-DETR-R50, 12 epochs on COCO (official ``co_deformable_detr_r50_1x_coco``: 49.5 AP).

Deformable-DETR++ (official ``CoDeformDETRHead`` + ``CoDeformableDetrTransformer``): two-stage,
box refinement, mixed query selection, look-forward-twice, 300 queries, 4 scales (strides
8..64), no denoising, sigmoid focal loss of weight 2 (L1 5, GIoU 2), top-100 without NMS at test.

- query selection: top-300 encoder positions by the logit of class 0; the encoder proposals of
  *all* positions are trained with binary labels (every ground truth is class 0), as mmdet's
  ``DeformableDETRHead``;
- queries: learned contents ``query_embedding`` (300, 256) (our ``tgt_embed``); positions
  ``pos_trans_norm(pos_trans(sine(box)))[..., :256]`` of the selected boxes (``pos_trans``:
  Linear 512 -> 512), the same at every decoder layer (no ``ref_point_head``);
- decoder: the heads read the raw layer outputs (no final LayerNorm); encoder, decoder and FFN
  dropout 0, as the official config;
- position embedding: sine, 128 features per axis, temperature 10000, normalised, offset -0.5;
- auxiliary Faster R-CNN (RoIAlign on p3..p6) and ATSS heads on p3..p7 (x 12), the extra level
  p7 = 3x3 stride-2 conv + GN on the last encoder level (official ``query_head.downsample``);
- customized positive queries (``PositiveQueries(style="co_deformable")``):
  ``LN_k(Linear_k(sine(box)))`` (512 -> 512) split into (position, content), the gathered
  auxiliary feature (mean-pooled RoI feature / ATSS pyramid feature at the anchor) added to the
  content through ``LN_k(Linear_k)`` (official ``with_coord_feat``), and the per-head
  ``head_pos_embed`` scalar added to the position (a bug the authors keep for their R50 results;
  see ``codetr.modeling.queries.positive_queries``).

AdamW lr 2e-4, wd 1e-4, LR x 0.1 for the backbone and the sampling offsets (the official
``reference_points`` multiplier has no module in the two-stage model), clip 0.1, batch 16.

Deliberate departures from the official code (small):
- the top-k selection skips encoder positions whose proposal is invalid (padding, or a centre /
  size outside (0.01, 0.99)); the official code ranks them too (their memory is zeroed, their box
  is +inf);
- box refinement uses ``inverse_sigmoid`` with eps 1e-3 (DINO / detrex); mmdet uses 1e-5;
- initialisation: ``tgt_embed`` is Xavier-uniform (official ``query_embedding``: N(0, 1)).
"""
from ..common.co_detr import co_detr
from ..common.detr_recipe import dataloader, lr_multiplier, optimizer, train
from ..dino.models.dino_r50 import model as detector

train.output_dir = "./output/co_deformable_detr_r50_12ep"

optimizer.lr = 2e-4
optimizer.params.lr_factors = {"backbone": 0.1, "sampling_offsets": 0.1}

detector.num_queries = 300
detector.denoising = None
detector.transformer.select_by = "first_class"
detector.transformer.enc_outputs = "all"
detector.transformer.decoder.ref_point_head = False
detector.transformer.decoder.post_norm = False
detector.criterion.binary_enc_loss = True
detector.criterion.class_loss = "focal"
detector.criterion.weight_class = 2.0
detector.nms = None
detector.select_box_nums_for_evaluation = 100

# auxiliary pyramid: the encoder levels (strides 8..64) + stride 128; RoIAlign on p3..p6
model = co_detr(detector, ["p3", "p4", "p5", "p6", "p7"], num_decoder_layers=6, num_roi_levels=4)
# each sample carries its feature (mean-pooled RoI / pyramid feature), added to its query
model.aux_heads[0].return_features = True
model.aux_heads[1].return_features = True
model.positive_queries.update(feat_dim=256, style="co_deformable", head_pos_embed="scalar")
