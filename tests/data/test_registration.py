"""Dataset registration: COCO json wrapper errors and idempotence, shapes metadata, COCOEvaluator."""
import json
import os
import uuid

import pytest
import torch

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import COCOEvaluator
from detectron2.structures import Boxes, BoxMode, Instances

import codetr.data  # noqa: F401  (registers shapes_train / shapes_val)
from codetr.data import SHAPE_CLASSES, coco_json_dataset, ensure_shapes_dataset, generate_shapes_dataset, register_coco_json
from codetr.data import datasets as ds


def _name(prefix):
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_shapes")
    return generate_shapes_dataset(str(root), num_train=4, num_val=3, seed=5, workers=1)


def test_missing_files_are_named(tmp_path, tiny):
    missing_json = str(tmp_path / "nope" / "train.json")
    with pytest.raises(FileNotFoundError, match="nope/train.json"):
        register_coco_json(_name("x"), missing_json, tiny["train"]["image_root"])
    with pytest.raises(FileNotFoundError, match="no_images_here"):
        register_coco_json(_name("x"), tiny["train"]["json_file"], str(tmp_path / "no_images_here"))
    with pytest.raises(TypeError, match="name"):
        register_coco_json("", tiny["train"]["json_file"], tiny["train"]["image_root"])


def test_reregistration(tiny):
    name = _name("reg")
    register_coco_json(name, tiny["train"]["json_file"], tiny["train"]["image_root"])
    # same files (even spelled differently) -> no-op
    split_dir = os.path.dirname(tiny["train"]["json_file"])
    other_spelling = os.path.join(split_dir, os.pardir, os.path.basename(split_dir), "annotations.json")
    register_coco_json(name, other_spelling, tiny["train"]["image_root"] + "/")
    with pytest.raises(ValueError, match="already registered") as err:
        register_coco_json(name, tiny["val"]["json_file"], tiny["val"]["image_root"])
    assert tiny["train"]["json_file"] in str(err.value) and tiny["val"]["json_file"] in str(err.value)
    # builtin names cannot be silently pointed elsewhere either
    with pytest.raises(ValueError, match="coco_2017_train"):
        register_coco_json("coco_2017_train", tiny["train"]["json_file"], tiny["train"]["image_root"])


def test_coco_json_dataset_returns_dicts(tiny):
    name = _name("cfg")
    dicts = coco_json_dataset(name, tiny["train"]["json_file"], tiny["train"]["image_root"])
    assert len(dicts) == 4
    with open(tiny["train"]["json_file"]) as f:
        n_ann = len(json.load(f)["annotations"])
    assert sum(len(d["annotations"]) for d in dicts) == n_ann
    for d in dicts:
        assert os.path.isfile(d["file_name"])
        for a in d["annotations"]:
            assert 0 <= a["category_id"] < len(SHAPE_CLASSES) and a["bbox_mode"] == BoxMode.XYWH_ABS
    meta = MetadataCatalog.get(name)
    assert meta.thing_classes == list(SHAPE_CLASSES) and meta.evaluator_type == "coco"
    assert coco_json_dataset([name], tiny["train"]["json_file"], tiny["train"]["image_root"]) == dicts
    with pytest.raises(ValueError, match="one dataset"):
        coco_json_dataset([name, "b"], tiny["train"]["json_file"], tiny["train"]["image_root"])


def test_shapes_registered_lazily():
    for name in ("shapes_train", "shapes_val"):
        assert name in DatasetCatalog.list()
        meta = MetadataCatalog.get(name)
        assert meta.evaluator_type == "coco" and meta.thing_classes == list(SHAPE_CLASSES)
        assert meta.json_file.endswith(os.path.join(name, "annotations.json"))
        assert meta.image_root.endswith(os.path.join(name, "images"))


def test_ensure_shapes_dataset_and_loader(tmp_path, monkeypatch):
    monkeypatch.setitem(ds.SHAPES_SPLITS, "shapes_val", ("val", 3))  # tiny instead of 200 images
    out = ensure_shapes_dataset(["shapes_val"], root=str(tmp_path))
    assert os.path.isfile(out["shapes_val"]["json_file"])
    dicts = ds._load_shapes("shapes_val", str(tmp_path))
    assert len(dicts) == 3
    with pytest.raises(KeyError, match="shapes_test"):
        ensure_shapes_dataset(["shapes_test"], root=str(tmp_path))


def test_shapes_root_env(monkeypatch, tmp_path):
    monkeypatch.setenv("CODETR_DATASETS", str(tmp_path))
    assert ds.shapes_root() == os.path.join(str(tmp_path), "shapes")


def test_coco_evaluator_on_ground_truth(tiny, tmp_path):
    """COCOEvaluator works from the registered metadata; GT boxes as predictions give AP 100."""
    name = _name("eval")
    dicts = coco_json_dataset(name, tiny["val"]["json_file"], tiny["val"]["image_root"], filter_empty=False)
    evaluator = COCOEvaluator(name, output_dir=str(tmp_path))
    evaluator.reset()
    for d in dicts:
        boxes = torch.tensor(
            [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in d["annotations"]], dtype=torch.float32
        ).reshape(-1, 4)
        inst = Instances((d["height"], d["width"]))
        inst.pred_boxes = Boxes(boxes)
        inst.scores = torch.ones(len(boxes))
        inst.pred_classes = torch.tensor([a["category_id"] for a in d["annotations"]], dtype=torch.int64)
        evaluator.process([{"image_id": d["image_id"]}], [{"instances": inst}])
    res = evaluator.evaluate()
    assert res["bbox"]["AP"] == pytest.approx(100.0, abs=1e-6)
    assert res["bbox"]["AP50"] == pytest.approx(100.0, abs=1e-6)
