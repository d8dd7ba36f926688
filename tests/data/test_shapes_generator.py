"""The synthetic shapes generator: determinism, statistics, COCO validity, atomic writes, CLI."""
import importlib.util
import json
import os

import numpy as np
import pytest
from PIL import Image

from codetr.data import shapes
from codetr.data.shapes import SHAPE_CLASSES, generate_shapes_dataset, generate_split, render_image

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load(split_dir):
    with open(os.path.join(split_dir, "annotations.json")) as f:
        return json.load(f)


def _pixels(split_dir, file_name):
    return np.asarray(Image.open(os.path.join(split_dir, "images", file_name)).convert("RGB"))


@pytest.fixture(scope="module")
def stats_split(tmp_path_factory):
    """A 60-image val split (about a second to render)."""
    root = tmp_path_factory.mktemp("shapes_stats")
    return generate_split(str(root), "val", 60, seed=3, workers=1)


def test_same_seed_identical_json_and_pixels(tmp_path):
    a = generate_shapes_dataset(str(tmp_path / "a"), num_train=4, num_val=2, seed=7, workers=1)
    b = generate_shapes_dataset(str(tmp_path / "b"), num_train=4, num_val=2, seed=7, workers=1)
    for split in ("train", "val"):
        with open(a[split]["json_file"], "rb") as fa, open(b[split]["json_file"], "rb") as fb:
            assert fa.read() == fb.read()
        names = sorted(os.listdir(a[split]["image_root"]))
        assert names == sorted(os.listdir(b[split]["image_root"]))
        for n in names:
            pa = np.asarray(Image.open(os.path.join(a[split]["image_root"], n)))
            pb = np.asarray(Image.open(os.path.join(b[split]["image_root"], n)))
            assert np.array_equal(pa, pb)


def test_different_seed_or_split_differs():
    img0, objs0 = render_image(0, "train", 0)
    img1, objs1 = render_image(1, "train", 0)
    imgv, _ = render_image(0, "val", 0)
    assert img0.shape != img1.shape or not np.array_equal(img0, img1)
    assert img0.shape != imgv.shape or not np.array_equal(img0, imgv)
    # seeds are not shifted copies of each other: image 1 of seed 0 != image 0 of seed 1
    img01, _ = render_image(0, "train", 1)
    assert img01.shape != img1.shape or not np.array_equal(img01, img1)


def test_files_match_render_image(tmp_path):
    """What is on disk is exactly render_image(seed, split, index) (PNG is lossless)."""
    d = generate_split(str(tmp_path), "train", 3, seed=11, workers=1)
    data = _load(d)
    for im in data["images"]:
        index = im["id"] - 1
        ref, objs = render_image(11, "train", index)
        assert np.array_equal(_pixels(d, im["file_name"]), ref)
        anns = [a for a in data["annotations"] if a["image_id"] == im["id"]]
        assert [a["bbox"] for a in anns] == [o["bbox"] for o in objs]


def test_statistics(stats_split):
    data = _load(stats_split)
    assert [c["name"] for c in data["categories"]] == list(SHAPE_CLASSES)
    assert len(SHAPE_CLASSES) >= 6
    assert len(data["images"]) == 60
    used = {a["category_id"] for a in data["annotations"]}
    assert len(used) >= 6
    per_image = {im["id"]: 0 for im in data["images"]}
    sizes = {im["id"]: (im["width"], im["height"]) for im in data["images"]}
    for a in data["annotations"]:
        per_image[a["image_id"]] += 1
        x, y, w, h = a["bbox"]
        iw, ih = sizes[a["image_id"]]
        assert x >= 0 and y >= 0 and x + w <= iw + 0.011 and y + h <= ih + 0.011  # rounding to 0.01
        assert 8.0 - 0.011 <= max(w, h) <= min(iw, ih) / 2 + 0.011
        assert a["area"] > 0 and a["iscrowd"] == 0
    counts = np.array(list(per_image.values()))
    assert counts.min() >= 1 and counts.max() <= 12
    assert counts.mean() > 3  # not a toy: several objects per image on average
    short = np.array([min(s) for s in sizes.values()])
    aspect = np.array([w / h for w, h in sizes.values()])
    assert short.min() >= 192 and short.max() <= 288
    assert aspect.min() >= 0.6 - 0.01 and aspect.max() <= 1.6 + 0.01
    assert len(set(sizes.values())) > 30  # sizes vary
    for im in data["images"][:5]:
        arr = _pixels(stats_split, im["file_name"])
        assert arr.shape == (im["height"], im["width"], 3)
        assert arr.std() > 10  # a textured image, not a flat colour


def test_pycocotools_loads(stats_split):
    from pycocotools.coco import COCO

    coco = COCO(os.path.join(stats_split, "annotations.json"))
    assert len(coco.getImgIds()) == 60
    assert len(coco.getCatIds()) == len(SHAPE_CLASSES)
    assert len(coco.getAnnIds()) == len(_load(stats_split)["annotations"])


def test_every_image_has_boxes_and_boxes_overlap():
    """The last-drawn object is never occluded, so no image is empty; objects do overlap."""
    overlaps = 0
    for i in range(30):
        _, objs = render_image(5, "train", i)
        assert len(objs) >= 1
        boxes = np.array([[o["bbox"][0], o["bbox"][1], o["bbox"][0] + o["bbox"][2], o["bbox"][1] + o["bbox"][3]] for o in objs])
        for j in range(len(boxes)):
            for k in range(j + 1, len(boxes)):
                iw = min(boxes[j, 2], boxes[k, 2]) - max(boxes[j, 0], boxes[k, 0])
                ih = min(boxes[j, 3], boxes[k, 3]) - max(boxes[j, 1], boxes[k, 1])
                overlaps += iw > 0 and ih > 0
    assert overlaps > 0


def test_interrupted_generation_is_redone(tmp_path, monkeypatch):
    root = str(tmp_path)
    calls = {"n": 0}
    real = shapes._render_to_file

    def flaky(args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # simulated Ctrl-C in the middle of the split
        return real(args)

    monkeypatch.setattr(shapes, "_render_to_file", flaky)
    with pytest.raises(KeyboardInterrupt):
        generate_split(root, "train", 5, seed=0, workers=1)
    assert not os.path.exists(os.path.join(root, "shapes_train"))
    assert not [n for n in os.listdir(root) if n.startswith(".tmp-")]
    monkeypatch.setattr(shapes, "_render_to_file", real)

    # leftovers of a killed run (dead pid) and a final folder without json are not trusted
    os.makedirs(os.path.join(root, ".tmp-shapes-train-999999999-deadbeef", "images"))
    os.makedirs(os.path.join(root, "shapes_train", "images"))
    d = generate_split(root, "train", 5, seed=0, workers=1)
    assert len(_load(d)["images"]) == 5 and len(os.listdir(os.path.join(d, "images"))) == 5
    assert not [n for n in os.listdir(root) if n.startswith(".tmp-")]


def test_reuse_and_regenerate_on_other_parameters(tmp_path):
    root = str(tmp_path)
    d = generate_split(root, "val", 3, seed=0, workers=1)
    stamp = os.stat(os.path.join(d, "annotations.json")).st_mtime_ns
    assert generate_split(root, "val", 3, seed=0, workers=1) == d
    assert os.stat(os.path.join(d, "annotations.json")).st_mtime_ns == stamp  # reused
    generate_split(root, "val", 4, seed=0, workers=1)  # other size -> regenerated
    assert len(_load(d)["images"]) == 4
    generate_split(root, "val", 4, seed=1, workers=1)
    assert _load(d)["info"]["seed"] == 1


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="split"):
        generate_split(str(tmp_path), "test", 3)
    with pytest.raises(ValueError, match="num_images"):
        generate_split(str(tmp_path), "val", 0)


def test_cli(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("prepare_shapes", os.path.join(REPO, "datasets", "prepare_shapes.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--output", str(tmp_path), "--seed", "2", "--num-train", "3", "--num-val", "2", "--workers", "1"]) == 0
    assert len(_load(str(tmp_path / "shapes_train"))["images"]) == 3
    assert len(_load(str(tmp_path / "shapes_val"))["images"]) == 2
    assert "shapes_train" in capsys.readouterr().out


def test_worker_processes_give_the_same_dataset(tmp_path):
    """Rendering in 2 processes (used from 64 images on) writes exactly what 1 process writes."""
    one = generate_split(str(tmp_path / "one"), "val", 64, seed=4, workers=1)
    two = generate_split(str(tmp_path / "two"), "val", 64, seed=4, workers=2)
    with open(os.path.join(one, "annotations.json"), "rb") as f1, open(os.path.join(two, "annotations.json"), "rb") as f2:
        assert f1.read() == f2.read()
    for name in ("000000.png", "000031.png", "000063.png"):
        assert np.array_equal(_pixels(one, name), _pixels(two, name))
