"""configs/common/data/*.py load, instantiate, take command-line overrides and yield batches."""
import itertools
import os
import uuid

import pytest
import torch

from detectron2.config import LazyConfig, instantiate
from detectron2.evaluation import COCOEvaluator

from codetr.data import DetrDatasetMapper, LSJDatasetMapper, SHAPE_CLASSES, generate_shapes_dataset

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs")


def _load(name):
    return LazyConfig.load(os.path.join(CONFIGS, "common", "data", name))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_cfg_shapes")
    return generate_shapes_dataset(str(root), num_train=6, num_val=3, seed=9, workers=1)


@pytest.mark.parametrize("name", ["coco_detr.py", "coco_lsj.py", "shapes.py"])
def test_configs_load_and_build_mappers(name):
    cfg = _load(name)
    assert set(cfg.dataloader) >= {"train", "test", "evaluator"}
    assert cfg.dataloader.evaluator.dataset_name == cfg.dataloader.test.dataset.names
    train_mapper, test_mapper = instantiate(cfg.dataloader.train.mapper), instantiate(cfg.dataloader.test.mapper)
    kind = LSJDatasetMapper if "lsj" in name else DetrDatasetMapper
    assert isinstance(train_mapper, kind) and isinstance(test_mapper, kind)
    assert train_mapper.is_train and not test_mapper.is_train


def test_coco_configs_use_builtin_names_and_batch_16():
    for name in ("coco_detr.py", "coco_lsj.py"):
        cfg = _load(name)
        assert cfg.dataloader.train.dataset.names == "coco_2017_train"
        assert cfg.dataloader.test.dataset.names == "coco_2017_val"
        assert cfg.dataloader.train.total_batch_size == 16


def test_shapes_config_yields_batches_on_overridden_data(tiny, tmp_path):
    """The shapes config, pointed at a tiny generated copy through command-line style overrides."""
    cfg = _load("shapes.py")
    train_name, val_name = f"tiny_train_{uuid.uuid4().hex[:6]}", f"tiny_val_{uuid.uuid4().hex[:6]}"
    cfg = LazyConfig.apply_overrides(
        cfg,
        [
            "dataloader.train.dataset._target_=codetr.data.coco_json_dataset",
            f"dataloader.train.dataset.names={train_name}",
            f"dataloader.train.dataset.json_file={tiny['train']['json_file']}",
            f"dataloader.train.dataset.image_root={tiny['train']['image_root']}",
            "dataloader.test.dataset._target_=codetr.data.coco_json_dataset",
            f"dataloader.test.dataset.names={val_name}",
            f"dataloader.test.dataset.json_file={tiny['val']['json_file']}",
            f"dataloader.test.dataset.image_root={tiny['val']['image_root']}",
            "dataloader.train.total_batch_size=2",
        ],
    )
    torch.manual_seed(0)
    loader = instantiate(cfg.dataloader.train)
    for batch in itertools.islice(loader, 3):
        assert len(batch) == 2
        for d in batch:
            img = d["image"]
            assert img.dtype == torch.uint8 and img.dim() == 3 and img.shape[0] == 3
            assert min(img.shape[1:]) <= 288 and max(img.shape[1:]) <= 480
            inst = d["instances"]
            assert inst.image_size == tuple(img.shape[1:])
            assert inst.gt_classes.dtype == torch.int64
            assert ((inst.gt_classes >= 0) & (inst.gt_classes < len(SHAPE_CLASSES))).all()
            b = inst.gt_boxes.tensor
            assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
            assert {"height", "width", "file_name", "image_id"} <= set(d)
    test_loader = instantiate(cfg.dataloader.test)
    batches = list(test_loader)
    assert len(batches) == 3 and all(len(b) == 1 for b in batches)
    assert min(batches[0][0]["image"].shape[1:]) == 256 or max(batches[0][0]["image"].shape[1:]) == 416
    evaluator = instantiate(cfg.dataloader.evaluator)
    assert isinstance(evaluator, COCOEvaluator)
