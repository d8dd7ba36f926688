"""Real third-party data through registration, the mapper, a short train_net run and the evaluator.

The data is not in the repository: ``tools/fetch_test_data.sh`` (run by ``make test``) puts it
under ``$CODETR_TESTDATA`` (default ``<repo>/.cache/testdata``); each test skips, saying how to get
it, when its source is missing.

- labelme: Debian's ``labelme-examples``, labelme's COCO export of 3 VOC images (image and
  annotation ids from 0, a ``_background_`` category with id 0, 20 classes).
- deepforest: aerial tree crowns from the ``deepforest`` wheel: OSBS_029 (400 px, 61 trees,
  csv), SOAP_061 (400 px, 37 dead/alive trees, csv), a 1249x1035 YELL crop with 279 trees
  (Pascal-VOC xml). Converted here to a one-class ("tree") COCO json.
"""
import csv
import json
import os
import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET

import pytest
from detectron2.data import MetadataCatalog

from codetr.data import DetrDatasetMapper, coco_json_dataset, detr_train_augmentation

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TESTDATA = os.environ.get("CODETR_TESTDATA") or os.path.join(ROOT, ".cache", "testdata")
LABELME = os.path.join(TESTDATA, "labelme", "data_dataset_coco")
DEEPFOREST = os.path.join(TESTDATA, "deepforest")
DINO_TINY = os.path.join(ROOT, "tests", "engine", "configs", "dino_r18_tiny.py")
VOC_CLASSES = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
    "dog", "horse", "motorbike", "person", "potted plant", "sheep", "sofa", "train", "tv/monitor",
]


def _need(what):
    """Skip unless tools/fetch_test_data.sh completed the source ``what`` ("labelme", "deepforest")."""
    if not os.path.isfile(os.path.join(TESTDATA, what, ".complete")):
        pytest.skip(f"{what} test data not found under {TESTDATA}: run `bash tools/fetch_test_data.sh` (needs network; "
                    "labelme-examples needs apt, i.e. Debian/Ubuntu)")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CODETR_CACHE", str(tmp_path / "cache"))


def _name(prefix):
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def _train_net(tmp_path, *overrides):
    """Two iterations of the tiny DINO-R18 (20 queries, 64 px images) and the evaluation."""
    out = str(tmp_path / "out")
    env = dict(os.environ, OMP_NUM_THREADS="1", CODETR_CACHE=str(tmp_path / "cache"))
    env.pop("CODETR_TINY_COCO", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (os.path.join(ROOT, "projects"), env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, os.path.join(ROOT, "train_net.py"), "--config-file", DINO_TINY, "train.device=cpu",
           f"train.output_dir={out}", "train.max_iter=2", "train.log_period=1", "train.vis_output_images=0",
           "train.checkpointer.period=1000", *overrides]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-6000:]
    with open(os.path.join(out, "metrics.json")) as f:
        metrics = [json.loads(line) for line in f if line.strip()]
    return proc.stdout, metrics


def _dataset_overrides(split, name, json_file, image_root, filter_empty):
    node = f"dataloader.{split}.dataset"
    return [f"{node}._target_=codetr.data.coco_json_dataset", f"{node}.names={name}",
            f"{node}.json_file={json_file}", f"{node}.image_root={image_root}", f"{node}.filter_empty={filter_empty}"]


# ------------------------------------------------------------------------------------- labelme
def test_labelme_registration_and_perfect_ap(perfect_ap):
    """labelme's export as it is: AP 100 on its own boxes (94.9 before the id fix), 20 VOC classes
    (not 21 with `_background_`), the image ids of the file."""
    _need("labelme")
    json_file = os.path.join(LABELME, "annotations.json")
    raw = json.load(open(json_file))
    assert min(a["id"] for a in raw["annotations"]) == 0 and raw["categories"][0]["name"] == "_background_"
    name = _name("labelme")
    dicts = coco_json_dataset(name, json_file, LABELME, filter_empty=False)
    assert MetadataCatalog.get(name).thing_classes == VOC_CLASSES
    assert sorted(d["image_id"] for d in dicts) == sorted(img["id"] for img in raw["images"]) == [0, 1, 2]
    assert sum(len(d["annotations"]) for d in dicts) == len(raw["annotations"]) == 12
    assert perfect_ap(name, dicts) == pytest.approx(100.0, abs=1e-9)

    # the mapper keeps every box (all inside their images) and maps the labels to 0..19
    mapper = DetrDatasetMapper(
        augmentation=detr_train_augmentation(min_sizes=[320], max_size=512), augmentation_with_crop=None,
        is_train=True, crop_prob=0.0,
    )
    for d in dicts:
        inst = mapper(d)["instances"]
        assert len(inst) == len(d["annotations"])
        names = sorted(VOC_CLASSES[c] for c in inst.gt_classes.tolist())
        by_id = {c["id"]: c["name"] for c in raw["categories"]}
        img_id = d["image_id"]
        assert names == sorted(by_id[a["category_id"]] for a in raw["annotations"] if a["image_id"] == img_id)


def test_labelme_train_net(tmp_path):
    """The README's recipe for one's own COCO json, on labelme's export: train, then evaluate."""
    _need("labelme")
    json_file = os.path.join(LABELME, "annotations.json")
    log, metrics = _train_net(
        tmp_path,
        *_dataset_overrides("train", "lm_train", json_file, LABELME, True),
        *_dataset_overrides("test", "lm_val", json_file, LABELME, False),
        "model.num_classes=20",
    )
    assert "annotation ids start at 0: shifted by +1" in log
    assert "'_background_' has no annotations" in log
    assert [m["iteration"] for m in metrics if "total_loss" in m] == [0, 1]
    assert any("bbox/AP" in m for m in metrics)


# ----------------------------------------------------------------------------------- deepforest
def _read_csv(path):
    boxes = {}
    with open(path) as f:
        for row in csv.DictReader(f):
            xyxy = [float(row[k]) for k in ("xmin", "ymin", "xmax", "ymax")]
            boxes.setdefault(row["image_path"], []).append(xyxy)
    return boxes


def _read_voc(path):
    root = ET.parse(path).getroot()
    name = root.findtext("filename")
    return {name: [[float(o.find("bndbox").findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
                   for o in root.iter("object")]}


def deepforest_coco(out_dir):
    """Write ``{split}.json`` (one class "tree") for the deepforest images; returns the paths.

    train: OSBS_029, SOAP_061, the YELL crop (279 trees); val_small: OSBS_029, SOAP_061;
    val: OSBS_029 and the YELL crop. Boxes are the csv/xml corners as COCO [x, y, w, h]."""
    from PIL import Image

    boxes = {}
    boxes.update(_read_csv(os.path.join(DEEPFOREST, "OSBS_029.csv")))  # rows name OSBS_029.tif (the png's pixels)
    boxes["OSBS_029.png"] = boxes.pop("OSBS_029.tif")
    boxes.update(_read_csv(os.path.join(DEEPFOREST, "testfile_multi.csv")))  # SOAP_061.png, dead/alive
    boxes.update(_read_voc(os.path.join(DEEPFOREST, "2019_YELL_2_541000_4977000_image_crop.xml")))
    order = ["OSBS_029.png", "SOAP_061.png", "2019_YELL_2_541000_4977000_image_crop.png"]
    splits = {"train": order, "val_small": order[:2], "val": [order[0], order[2]]}
    paths = {}
    for split, files in splits.items():
        images, annotations = [], []
        for image_id, file_name in enumerate(files, start=1):
            w, h = Image.open(os.path.join(DEEPFOREST, file_name)).size
            images.append({"id": image_id, "file_name": file_name, "width": w, "height": h})
            for x0, y0, x1, y1 in boxes[file_name]:
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                                    "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
        paths[split] = os.path.join(out_dir, f"{split}.json")
        with open(paths[split], "w") as f:
            json.dump({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "tree"}]}, f)
    return paths


def test_deepforest_registration_and_perfect_ap(tmp_path, perfect_ap):
    _need("deepforest")
    paths = deepforest_coco(str(tmp_path))
    name = _name("trees")
    dicts = coco_json_dataset(name, paths["val_small"], DEEPFOREST, filter_empty=False)
    assert [len(d["annotations"]) for d in dicts] == [61, 37]
    assert perfect_ap(name, dicts) == pytest.approx(100.0, abs=1e-9)
    # 279 trees in one image: COCO AP counts 100 detections per image, so even the ground truth
    # itself cannot reach 100 (the start-of-run check warns about it)
    name = _name("trees_val")
    dicts = coco_json_dataset(name, paths["val"], DEEPFOREST, filter_empty=False)
    assert [len(d["annotations"]) for d in dicts] == [61, 279]
    assert perfect_ap(name, dicts) < 99.0


def test_deepforest_train_net_warns_about_queries(tmp_path):
    """More trees than queries (20) and than COCO's 100 detections: said at start, then it runs."""
    _need("deepforest")
    paths = deepforest_coco(str(tmp_path))
    log, metrics = _train_net(
        tmp_path,
        *_dataset_overrides("train", "df_train", paths["train"], DEEPFOREST, True),
        *_dataset_overrides("test", "df_val", paths["val"], DEEPFOREST, False),
        "model.num_classes=1",
    )
    assert "'df_train': 3 of 3 images have more than 20 ground-truth boxes (at most 279 in one image)" in log
    assert "'df_val': 2 of 2 images have more than 20 ground-truth boxes" in log
    assert "'df_val': 1 of 2 images have more than 100 ground-truth boxes" in log and "maxDets" in log
    assert [m["iteration"] for m in metrics if "total_loss" in m] == [0, 1]
    assert any("bbox/AP" in m for m in metrics)
