"""The bundled synthetic shapes dataset (8 classes, ~256 px images), sized for CPU training.

The DETR augmentation scaled down for ~256 px images (about 0.36x COCO's sizes): flip, then
with prob. 0.5 a multi-scale resize (short side 192..288 step 16, long side <= 480) or resize
(160/192/224) + random crop (128..224) + the same multi-scale resize. Test: short side 256,
long side <= 416. Total batch 4; no loader worker processes (2-core machines).

``shapes_train`` (2000 images) / ``shapes_val`` (200) are generated on first use (a few tens of
seconds) under ``$CODETR_DATASETS/shapes`` or ``<repo>/datasets/shapes``.
"""
from omegaconf import OmegaConf

from detectron2.config import LazyCall as L
from detectron2.data import build_detection_test_loader, build_detection_train_loader, get_detection_dataset_dicts
from detectron2.evaluation import COCOEvaluator

from codetr.data import DetrDatasetMapper, detr_test_augmentation, detr_train_augmentation

dataloader = OmegaConf.create()

dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="shapes_train", filter_empty=False),
    mapper=L(DetrDatasetMapper)(
        augmentation=L(detr_train_augmentation)(min_sizes=list(range(192, 289, 16)), max_size=480),
        augmentation_with_crop=L(detr_train_augmentation)(
            min_sizes=list(range(192, 289, 16)),
            max_size=480,
            crop_resize_sizes=[160, 192, 224],
            crop_size=[128, 224],
        ),
        is_train=True,
        crop_prob=0.5,
    ),
    total_batch_size=4,
    num_workers=0,
)

dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="shapes_val", filter_empty=False),
    mapper=L(DetrDatasetMapper)(
        augmentation=L(detr_test_augmentation)(short_size=256, max_size=416),
        augmentation_with_crop=None,
        is_train=False,
    ),
    num_workers=0,
)

dataloader.evaluator = L(COCOEvaluator)(dataset_name="${..test.dataset.names}")
