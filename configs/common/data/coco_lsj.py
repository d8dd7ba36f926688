"""COCO 2017 with large-scale jitter (Co-DETR ``co_dino_5scale_lsj_r50_1x_coco``, box-only).

Train: resize to a random scale in [0.1, 2.0] of 1024x1024, crop to at most 1024x1024, flip, pad
to 1024x1024 with 114 (the padded area counts as image: see LSJDatasetMapper). Co-DETR's
CopyPaste needs instance masks and is not applied. Test: keep-ratio resize into 1024x1024.
Swin-L LSJ configs use ``image_size=1280`` for both mappers.
"""
from omegaconf import OmegaConf

from detectron2.config import LazyCall as L
from detectron2.data import build_detection_test_loader, build_detection_train_loader, get_detection_dataset_dicts
from detectron2.evaluation import COCOEvaluator

from codetr.data import LSJDatasetMapper

dataloader = OmegaConf.create()

dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="coco_2017_train", filter_empty=False),
    mapper=L(LSJDatasetMapper)(is_train=True, image_size=1024, min_scale=0.1, max_scale=2.0, pad_value=114.0),
    total_batch_size=16,
    num_workers=4,
)

dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="coco_2017_val", filter_empty=False),
    mapper=L(LSJDatasetMapper)(is_train=False, image_size="${...train.mapper.image_size}"),
    num_workers=4,
)

dataloader.evaluator = L(COCOEvaluator)(dataset_name="${..test.dataset.names}")
