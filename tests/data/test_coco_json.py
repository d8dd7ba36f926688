"""COCO json corrections at registration: annotation id 0, background categories, invalid boxes,
corrupt files. Every case is scored end to end: registration -> dataset dicts -> Detectron2's
COCOEvaluator on predictions equal to the ground truth, which must give AP 100."""
import json
import logging
import os
import tempfile
import uuid

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.structures import BoxMode

from codetr.data import coco_json_dataset, register_coco_json
from codetr.data.coco_json import box_is_valid, sanitize_coco
from codetr.data.mapper_utils import transform_box_annotations


def _name(prefix):
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CODETR_CACHE", str(tmp_path / "cache"))


def write_json(tmp_path, data, name="ann.json"):
    (tmp_path / "images").mkdir(exist_ok=True)
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path), str(tmp_path / "images")


def labelme_like():
    """Ids from 0 everywhere, as labelme's COCO export writes them: 2 images x 3 boxes, a
    ``_background_`` category 0 that no box uses, and classes 1 and 2."""
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 100, "height": 80} for i in range(2)]
    boxes = [[10, 10, 20, 20], [40, 30, 30, 40], [5, 50, 60, 20]]
    annotations = [
        {"id": 3 * i + j, "image_id": i, "category_id": 1 + (i + j) % 2, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
        for i in range(2)
        for j, b in enumerate(boxes)
    ]
    categories = [{"id": 0, "name": "_background_"}, {"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    return {"images": images, "annotations": annotations, "categories": categories}


def test_ids_from_zero_score_100(tmp_path, perfect_ap):
    """Fails before the fix: pycocotools never matches ground-truth box id 0 (AP 95.0 here)."""
    json_file, root = write_json(tmp_path, labelme_like())
    name = _name("ids0")
    dicts = coco_json_dataset(name, json_file, root, filter_empty=False)
    assert perfect_ap(name, dicts) == pytest.approx(100.0, abs=1e-9)
    # image ids are the user's (predictions files keep them); the user's file is untouched
    assert sorted(d["image_id"] for d in dicts) == [0, 1]
    assert json.load(open(json_file)) == labelme_like()
    meta = MetadataCatalog.get(name)
    assert meta.source_json_file == json_file and meta.json_file != json_file
    # the evaluator's file has every box once, ids from 1, same images and boxes
    fixed = json.load(open(meta.json_file))
    assert sorted(a["id"] for a in fixed["annotations"]) == list(range(1, 7))
    assert [a["bbox"] for a in fixed["annotations"]] == [a["bbox"] for a in labelme_like()["annotations"]]


def test_background_category_dropped_when_unused(tmp_path):
    json_file, root = write_json(tmp_path, labelme_like())
    name = _name("bg")
    dicts = coco_json_dataset(name, json_file, root)
    meta = MetadataCatalog.get(name)
    assert meta.thing_classes == ["cat", "dog"]  # not ["_background_", "cat", "dog"]
    assert {a["category_id"] for d in dicts for a in d["annotations"]} == {0, 1}
    assert any("_background_" in m for m in meta.coco_json_corrections)


def test_background_category_with_boxes_is_refused(tmp_path):
    data = labelme_like()
    data["annotations"][4]["category_id"] = 0
    json_file, root = write_json(tmp_path, data)
    with pytest.raises(ValueError, match=r"category id 0 '_background_'.*1 annotations"):
        register_coco_json(_name("bgused"), json_file, root)


def test_category_id_zero_is_a_class(tmp_path, perfect_ap):
    """A category with id 0 that is a real class stays a class and scores 100."""
    data = labelme_like()
    data["categories"][0]["name"] = "person"
    for a in data["annotations"][:2]:
        a["category_id"] = 0
    json_file, root = write_json(tmp_path, data)
    name = _name("cat0")
    dicts = coco_json_dataset(name, json_file, root, filter_empty=False)
    assert MetadataCatalog.get(name).thing_classes == ["person", "cat", "dog"]
    assert perfect_ap(name, dicts) == pytest.approx(100.0, abs=1e-9)


def test_clean_json_is_registered_as_is(tmp_path):
    data = labelme_like()
    data["categories"] = data["categories"][1:]
    for a in data["annotations"]:
        a["id"] += 1
    json_file, root = write_json(tmp_path, data)
    name = register_coco_json(_name("clean"), json_file, root)
    assert MetadataCatalog.get(name).json_file == json_file
    assert MetadataCatalog.get(name).coco_json_corrections == []
    assert not os.path.exists(tmp_path / "cache")


INVALID = [[30, 10, 0, 12], [30, 10, 12, -3], [30, 10, float("nan"), 5], [150, 10, 20, 20], [-40, 10, 20, 20]]


def test_invalid_boxes_dropped_in_both_with_one_warning(tmp_path, perfect_ap, caplog):
    """Fails before the fix: the invalid boxes stay in the evaluation ground truth, where no
    prediction can match them (AP < 100), and nothing says so."""
    data = labelme_like()
    for i, b in enumerate(INVALID):
        data["annotations"].append(
            {"id": 100 + i, "image_id": i % 2, "category_id": 1, "bbox": b, "area": 1.0, "iscrowd": 0}
        )
    json_file, root = write_json(tmp_path, data)
    name = _name("invalid")
    with caplog.at_level(logging.WARNING, logger="codetr"):
        dicts = coco_json_dataset(name, json_file, root, filter_empty=False)
        DatasetCatalog.get(name)  # loading again does not repeat the warning
    warned = [r.getMessage() for r in caplog.records if "boxes are invalid" in r.getMessage()]
    assert len(warned) == 1 and f"5 of {6 + len(INVALID)} boxes are invalid" in warned[0]
    assert name in warned[0]
    assert sum(len(d["annotations"]) for d in dicts) == 6
    assert perfect_ap(name, dicts) == pytest.approx(100.0, abs=1e-9)
    fixed = json.load(open(MetadataCatalog.get(name).json_file))
    assert len(fixed["annotations"]) == 6


def test_box_validity_is_the_mappers_rule():
    """``box_is_valid`` keeps exactly the boxes the training mapper keeps (identity transform,
    100 x 80 image), on hand-picked edge cases and random boxes around the image border."""
    rng = np.random.default_rng(0)
    boxes = INVALID + [[0, 0, 100, 80], [99.99, 79.99, 5, 5], [100, 10, 5, 5], [-5, -5, 5.001, 6], [10, 10, 1e-6, 4]]
    boxes += [list(map(float, b)) for b in rng.uniform(-30, 130, size=(200, 4)) * [1, 1, 0.4, 0.4] - [0, 0, 5, 5]]
    annos = [{"bbox": b, "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0, "iscrowd": 0} for b in boxes]
    kept = []
    for a in annos:  # one by one: the mapper drops, it does not say which
        kept.append(len(transform_box_annotations([a], T.TransformList([]), (80, 100))) == 1)
    assert [box_is_valid(b, 100, 80) for b in boxes] == kept
    assert 0 < sum(kept) < len(kept)


def test_corrupt_json_names_the_file(tmp_path):
    """Fails before the fix: pycocotools' JSONDecodeError does not say which file."""
    path = tmp_path / "broken.json"
    path.write_text('{"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [')
    (tmp_path / "images").mkdir()
    with pytest.raises(ValueError, match="broken.json.*not valid json"):
        coco_json_dataset(_name("corrupt"), str(path), str(tmp_path / "images"))
    path.write_text('{"images": [], "annotations": [{"image_id": 1, "bbox": [1, 2, 3, 4]}], "categories": []}')
    with pytest.raises(ValueError, match=r"broken.json.*annotations\[0\] has no \['id', 'category_id'\]"):
        coco_json_dataset(_name("corrupt"), str(path), str(tmp_path / "images"))


def test_repeated_image_ids_refused(tmp_path):
    data = labelme_like()
    data["images"][1]["id"] = 0
    json_file, root = write_json(tmp_path, data)
    with pytest.raises(ValueError, match=r"image ids are not unique \(repeated: \[0\]\)"):
        register_coco_json(_name("dupimg"), json_file, root)


def test_sanitize_is_pure():
    data = labelme_like()
    before = json.dumps(data)
    fixed, report = sanitize_coco(data)
    assert json.dumps(data) == before and fixed is not data
    assert report.annotation_id_shift == 1 and report.invalid_boxes == 0
    assert report.dropped_categories == [{"id": 0, "name": "_background_"}]
    assert report.num_annotations == 6


def test_unwritable_cache_falls_back_to_tmp(tmp_path, monkeypatch):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    monkeypatch.setenv("CODETR_CACHE", str(blocker))  # cannot hold a coco_json/ folder
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    json_file, root = write_json(tmp_path, labelme_like())
    name = register_coco_json(_name("fallback"), json_file, root)
    path = MetadataCatalog.get(name).json_file
    assert path.startswith(str(tmp_path / "tmp")) and os.path.isfile(path)
