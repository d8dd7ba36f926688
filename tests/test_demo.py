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


class _WritesMarker:
    """Unpickling this object runs ``os.system("touch <marker>")``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _register_classes_once(root):
    from detectron2.data import DatasetCatalog

    if DATASET not in DatasetCatalog.list():  # the first test of this module may have done it
        _register_classes(root)


def _one_image(folder):
    folder.mkdir()
    Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(folder / "a.png")
    return folder


def test_demo_refuses_a_crafted_pickle_and_loads_a_trusted_one_on_request(tmp_path, capsys):
    """--weights evil.pkl: exit 2 naming the file and the refused global, the code never runs.
    A trusted Detectron2-format .pkl (numpy arrays of the model, plus an argparse.Namespace that
    the restricted unpickler does not admit) loads with --allow-unsafe-pickle, with its values."""
    import argparse
    import pickle

    _register_classes_once(str(tmp_path / "data"))
    inputs = _one_image(tmp_path / "inputs")
    marker = tmp_path / "marker"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"model": {}, "__author__": "x", "payload": _WritesMarker(marker)}))
    demo = _demo()
    rc = demo.main(["--config-file", CONFIG, "--weights", str(evil), "--input", str(inputs),
                    "--output", str(tmp_path / "out"), *OVERRIDES])
    err = capsys.readouterr().err
    assert rc == 2 and str(evil) in err and "posix.system" in err and "--allow-unsafe-pickle" in err
    assert not marker.exists() and not (tmp_path / "out").exists()

    cfg = LazyConfig.apply_overrides(LazyConfig.load(CONFIG), OVERRIDES)
    torch.manual_seed(1)
    state = {k: v.numpy() for k, v in instantiate(cfg.model).state_dict().items()}
    trusted = tmp_path / "trusted.pkl"
    trusted.write_bytes(pickle.dumps({"model": state, "__author__": "me", "args": argparse.Namespace(lr=1)}))
    argv = ["--config-file", CONFIG, "--weights", str(trusted), "--input", str(inputs),
            "--output", str(tmp_path / "out"), *OVERRIDES]
    assert demo.main(argv) == 2
    assert "argparse.Namespace" in capsys.readouterr().err
    loaded = {}
    real_build = demo.build_model

    def build_and_keep(cfg):
        model = real_build(cfg)
        loaded.update(model.state_dict())
        return model

    demo.build_model = build_and_keep
    assert demo.main(argv[:4] + ["--allow-unsafe-pickle"] + argv[4:]) == 0
    assert set(loaded) == set(state)
    assert all(np.array_equal(loaded[k].numpy(), v) for k, v in state.items())


def test_demo_refuses_weights_of_another_class_count(tmp_path, capsys):
    _register_classes_once(str(tmp_path / "data"))
    inputs = _one_image(tmp_path / "inputs")
    cfg = LazyConfig.apply_overrides(LazyConfig.load(CONFIG), OVERRIDES + ["model.num_classes=4"])
    weights = str(tmp_path / "four_classes.pth")
    torch.save({"model": instantiate(cfg.model).state_dict()}, weights)
    rc = _demo().main(["--config-file", CONFIG, "--weights", weights, "--input", str(inputs),
                       "--output", str(tmp_path / "out"), *OVERRIDES])
    err = capsys.readouterr().err
    assert rc == 2 and f"{weights} does not fit the model" in err and "train.init_checkpoint_partial=True" in err


def _categories_json(path, categories):
    with open(path, "w") as f:
        json.dump({"images": [], "annotations": [], "categories": categories}, f)
    return str(path)


def _json_test_set(name, json_file, image_root):
    """The overrides of datasets/README.md that point the test set at one's own json."""
    return ["dataloader.test.dataset._target_=codetr.data.coco_json_dataset", f"dataloader.test.dataset.names={name}",
            f"dataloader.test.dataset.json_file={json_file}", f"dataloader.test.dataset.image_root={image_root}"]


def test_demo_uses_the_ids_of_a_coco_json_test_set(tmp_path, capsys):
    """A config whose test set is a coco_json_dataset node (not registered before the demo runs),
    one class with id 1: every category_id is 1 and the category is listed (before: category_id
    0, the class index, and ``categories: []``)."""
    images = tmp_path / "images"
    images.mkdir()
    json_file = _categories_json(tmp_path / "one.json", [{"id": 1, "name": "thing"}])
    overrides = _json_test_set("demo_json_one_class", json_file, images) + ["train.device=cpu", "model.num_classes=1"]
    cfg = LazyConfig.apply_overrides(LazyConfig.load(CONFIG), overrides)
    torch.manual_seed(0)
    DetectionCheckpointer(instantiate(cfg.model), save_dir=str(tmp_path)).save("model")
    out = tmp_path / "out"
    rc = _demo().main(["--config-file", CONFIG, "--weights", str(tmp_path / "model.pth"),
                       "--input", str(_one_image(tmp_path / "inputs")), "--output", str(out), *overrides])
    assert rc == 0, capsys.readouterr().err
    results = json.loads((out / "coco_results.json").read_text())
    assert len(results) == 20 and {r["category_id"] for r in results} == {1}
    assert json.loads((out / "coco_images.json").read_text())["categories"] == [{"id": 1, "name": "thing"}]


def test_demo_refuses_unknown_or_mismatched_category_ids(tmp_path, capsys):
    """No way to find the dataset's ids (a name that is not registered, no json): exit 2 naming the
    dataset and the ways out; --class-index-ids writes the class indices. A dataset with another
    class count than the model: exit 2 with both counts."""
    inputs = _one_image(tmp_path / "inputs")
    cfg = LazyConfig.apply_overrides(LazyConfig.load(CONFIG), OVERRIDES)
    weights = str(tmp_path / "model.pth")
    torch.save({"model": instantiate(cfg.model).state_dict()}, weights)
    demo = _demo()
    argv = ["--config-file", CONFIG, "--weights", weights, "--input", str(inputs), "--output", str(tmp_path / "out"),
            "train.device=cpu"]
    assert demo.main(argv + ["dataloader.test.dataset.names=demo_never_registered"]) == 2
    err = capsys.readouterr().err
    assert "test dataset 'demo_never_registered' is not registered" in err and "--class-index-ids" in err
    assert not (tmp_path / "out").exists()

    unregistered = ["dataloader.test.dataset.names=demo_never_registered"]
    assert demo.main(argv[:4] + ["--class-index-ids"] + argv[4:] + unregistered) == 0
    results = json.loads((tmp_path / "out" / "coco_results.json").read_text())
    assert results and {r["category_id"] for r in results} <= {0, 1}
    info = json.loads((tmp_path / "out" / "coco_images.json").read_text())
    assert [c["id"] for c in info["categories"]] == [0, 1]

    json_file = _categories_json(tmp_path / "three.json", [{"id": i, "name": f"c{i}"} for i in (1, 2, 3)])
    (tmp_path / "images").mkdir()
    assert demo.main(argv + _json_test_set("demo_json_three", json_file, tmp_path / "images")) == 2
    err = capsys.readouterr().err
    assert "test dataset 'demo_json_three' has 3 categories (ids [1, 2, 3]) but the model has num_classes=2" in err
