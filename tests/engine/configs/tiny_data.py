"""Registers the tiny COCO-format test dataset (written by tests/test_train_net.py into
$CODETR_TINY_COCO: train.json, val.json, images/) as ``tiny_train`` / ``tiny_val`` when a config
imports it: ``from .tiny_data import TINY_TRAIN, TINY_VAL``. Without $CODETR_TINY_COCO nothing
is registered, so models can still be built (tools/benchmark_model.py needs no data).

6 train / 4 val images of 64x64 with 1-2 rectangles each, 2 classes ("red", "green").
"""
import os

from codetr.data import register_coco_json

TINY_TRAIN, TINY_VAL, TINY_NUM_CLASSES = "tiny_train", "tiny_val", 2

_root = os.environ.get("CODETR_TINY_COCO")
if _root:
    for _name, _split in ((TINY_TRAIN, "train"), (TINY_VAL, "val")):
        register_coco_json(_name, os.path.join(_root, f"{_split}.json"), os.path.join(_root, "images"))
