"""COCO 2017 with the DETR augmentation (detrex configs/common/data/coco_detr.py, Co-DETR "DETR aug").

Train: random horizontal flip, then with prob. 0.5 either a multi-scale resize (short side in
480..800 step 32, long side <= 1333) or resize (400/500/600) + random crop (384..600) + the same
multi-scale resize. Test: short side 800, long side <= 1333. Total batch 16.

Datasets are Detectron2's builtin ``coco_2017_train`` / ``coco_2017_val`` (under
``$DETECTRON2_DATASETS/coco``, see datasets/README.md). Images without boxes are kept
(``filter_empty=False``), as in Co-DETR (``filter_empty_gt=False``); detrex's DINO 12ep config
filters them (set ``dataloader.train.dataset.filter_empty=True`` for that).
"""
from omegaconf import OmegaConf

from detectron2.config import LazyCall as L
from detectron2.data import build_detection_test_loader, build_detection_train_loader, get_detection_dataset_dicts
from detectron2.evaluation import COCOEvaluator

from codetr.data import DetrDatasetMapper, detr_test_augmentation, detr_train_augmentation

dataloader = OmegaConf.create()

dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="coco_2017_train", filter_empty=False),
    mapper=L(DetrDatasetMapper)(
        augmentation=L(detr_train_augmentation)(min_sizes=list(range(480, 801, 32)), max_size=1333),
        augmentation_with_crop=L(detr_train_augmentation)(
            min_sizes=list(range(480, 801, 32)),
            max_size=1333,
            crop_resize_sizes=[400, 500, 600],
            crop_size=[384, 600],
        ),
        is_train=True,
        crop_prob=0.5,
    ),
    total_batch_size=16,
    num_workers=4,
)

dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="coco_2017_val", filter_empty=False),
    mapper=L(DetrDatasetMapper)(
        augmentation=L(detr_test_augmentation)(short_size=800, max_size=1333),
        augmentation_with_crop=None,
        is_train=False,
    ),
    num_workers=4,
)

dataloader.evaluator = L(COCOEvaluator)(dataset_name="${..test.dataset.names}")
