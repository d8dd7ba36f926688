"""Registers the tiny COCO-format test dataset (written by tests/test_train_net.py into
$CODETR_TINY_COCO: train.json, val.json, images/) as ``tiny_train`` / ``tiny_val`` when a config
imports it: ``from .tiny_data import TINY_TRAIN, TINY_VAL``. Without $CODETR_TINY_COCO nothing
is registered, so models can still be built (tools/benchmark_model.py needs no data).

6 train / 4 val images of 64x64 with 1-2 rectangles each, 2 classes ("red", "green").
``shrink_detr_config`` points a DETR-family shapes config at it.
"""
import os

from codetr.data import register_coco_json

TINY_TRAIN, TINY_VAL, TINY_NUM_CLASSES = "tiny_train", "tiny_val", 2

_root = os.environ.get("CODETR_TINY_COCO")
if _root:
    for _name, _split in ((TINY_TRAIN, "train"), (TINY_VAL, "val")):
        register_coco_json(_name, os.path.join(_root, f"{_split}.json"), os.path.join(_root, "images"))


def shrink_detr_config(dataloader, model, train, name: str, num_queries: int = 20) -> None:
    """A DETR-family ``*_r18_shapes`` config on the tiny data: its datasets, batch 2, no crop,
    64 px images, its class count, ``num_queries`` queries and detections, and output folder
    ``./output/{name}``."""
    dataloader.train.dataset.names = TINY_TRAIN
    dataloader.test.dataset.names = TINY_VAL
    dataloader.train.total_batch_size = 2
    dataloader.train.mapper.crop_prob = 0.0
    dataloader.train.mapper.augmentation.min_sizes = [64]
    dataloader.train.mapper.augmentation.max_size = 64
    dataloader.test.mapper.augmentation.short_size = 64
    dataloader.test.mapper.augmentation.max_size = 64
    model.num_classes = TINY_NUM_CLASSES
    model.num_queries = num_queries
    model.select_box_nums_for_evaluation = num_queries
    train.output_dir = f"./output/{name}"
