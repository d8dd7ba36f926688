"""tools/demo.py on a tiny randomly initialised DINO (tests/engine/configs/dino_r18_tiny.py) over a
folder with two images, a corrupt image and a non-image file."""
import importlib.util
import json
import os

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import LazyConfig, instantiate
from PIL import Image

from codetr.data import register_coco_json

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "tests", "engine", "configs", "dino_r18_tiny.py")
DATASET = "demo_test_classes"
OVERRIDES = [f"dataloader.test.dataset.names={DATASET}", "train.device=cpu"]


def _demo():
    spec = importlib.util.spec_from_file_location("codetr_demo", os.path.join(REPO, "tools", "demo.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _register_classes(root):
    """A COCO json with the two categories (ids 3 and 7, to check the id mapping) and no images."""
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    json_file = os.path.join(root, "classes.json")
    with open(json_file, "w") as f:
        categories = [{"id": 3, "name": "red"}, {"id": 7, "name": "green"}]
        json.dump({"images": [], "annotations": [], "categories": categories}, f)
    register_coco_json(DATASET, json_file, os.path.join(root, "images"))


def test_demo_folder_with_a_corrupt_image(tmp_path, capsys):
    _register_classes(str(tmp_path / "data"))
    cfg = LazyConfig.apply_overrides(LazyConfig.load(CONFIG), OVERRIDES)
    torch.manual_seed(0)
    weights = str(tmp_path / "model.pth")
    DetectionCheckpointer(instantiate(cfg.model), save_dir=str(tmp_path)).save("model")
    assert os.path.exists(weights)

    folder = tmp_path / "inputs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    sizes = {"a.png": (48, 64), "b.jpg": (70, 40)}  # (h, w)
    for name, (h, w) in sizes.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / name)
    (folder / "broken.jpg").write_bytes(b"this is not a jpeg" * 10)
    (folder / "notes.txt").write_text("not an image")

    out = tmp_path / "out"
    rc = _demo().main([
        "--config-file", CONFIG, "--weights", weights, "--input", str(folder), "--output", str(out),
        "--confidence-threshold", "0.0", *OVERRIDES,
    ])
    captured = capsys.readouterr()
    assert rc == 1  # some images failed, the others were processed
    assert "broken.jpg" in captured.err and "unreadable" in captured.err

    assert sorted(os.listdir(out)) == ["a.jpg", "b.jpg", "coco_images.json", "coco_results.json"]
    for name, (h, w) in sizes.items():
        with Image.open(out / (os.path.splitext(name)[0] + ".jpg")) as im:
            assert im.size == (w, h)  # drawn on the original image

    info = json.loads((out / "coco_images.json").read_text())
    assert [os.path.basename(i["file_name"]) for i in info["images"]] == ["a.png", "b.jpg"]
    assert [(i["height"], i["width"]) for i in info["images"]] == [sizes["a.png"], sizes["b.jpg"]]
    assert [os.path.basename(f["file_name"]) for f in info["failed"]] == ["broken.jpg"]
    assert info["categories"] == [{"id": 3, "name": "red"}, {"id": 7, "name": "green"}]

    results = json.loads((out / "coco_results.json").read_text())
    ids = {i["id"]: (i["height"], i["width"]) for i in info["images"]}
    assert results and {r["image_id"] for r in results} == set(ids)
    for r in results:
        assert r["category_id"] in (3, 7) and 0.0 <= r["score"] <= 1.0
        x, y, w, h = r["bbox"]
        img_h, img_w = ids[r["image_id"]]
        assert w >= 0 and h >= 0 and x >= -0.01 and y >= -0.01
        assert x + w <= img_w + 0.01 and y + h <= img_h + 0.01
    # the model keeps its top-k pairs per image (model.select_box_nums_for_evaluation = 20)
    assert sum(r["image_id"] == 1 for r in results) == 20


def test_demo_reports_missing_inputs(tmp_path, capsys):
    demo = _demo()
    weights = tmp_path / "w.pth"
    assert demo.main(["--config-file", CONFIG, "--weights", str(weights), "--input", str(tmp_path),
                      "--output", str(tmp_path / "o")]) == 2
    assert "is not a file" in capsys.readouterr().err
    weights.write_bytes(b"")
    assert demo.main(["--config-file", CONFIG, "--weights", str(weights), "--input", str(tmp_path / "nope"),
                      "--output", str(tmp_path / "o")]) == 2
    assert "neither a file nor a folder" in capsys.readouterr().err
