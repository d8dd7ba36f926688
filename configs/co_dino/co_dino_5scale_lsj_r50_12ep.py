"""Co-DINO-R50 5-scale, 12 epochs on COCO with large-scale jitter at 1024 (official
``co_dino_5scale_lsj_r50_1x_coco``: 52.1 AP; box-only, without CopyPaste).

As the official ``with_attn_mask=False``, the padded area counts as image: the LSJ mapper marks
its outputs ``padding_is_image``, and Co-DETR then builds no padding mask and normalises boxes by
the padded size. Test images are padded to 1024 x 1024 (``size_divisibility``; the pad value is
the mean pixel, the official code uses 114).
"""
from ..common.data.coco_lsj import dataloader
from .co_dino_5scale_r50_12ep import lr_multiplier, model, optimizer, train

train.output_dir = "./output/co_dino_5scale_lsj_r50_12ep"
model.detector.size_divisibility = 1024
dataloader.train.total_batch_size = 16
dataloader.evaluator.output_dir = "${train.output_dir}"
