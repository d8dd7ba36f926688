"""Start-of-run dataset checks (codetr.data.checks): image files, class counts, invalid boxes,
boxes per image vs the model's queries / detections; and that train_net.py runs them before the
first iteration."""
import json
import logging
import os
import subprocess
import sys

import pytest
from detectron2.config import LazyConfig, instantiate

from codetr.data.checks import (
    check_class_count,
    check_datasets_for_model,
    check_image_files,
    check_image_headers,
    check_invalid_boxes,
    check_objects_per_image,
    model_num_classes,
    model_output_limits,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(ROOT, "tests", "engine", "configs")


def _dicts(counts, root=None):
    """One dict per entry of ``counts``: that many 10x10 boxes, class i % 2, 100x100 images."""
    return [
        {
            "file_name": os.path.join(root or "/nonexistent", f"{i}.png"),
            "height": 100,
            "width": 100,
            "annotations": [{"bbox": [j, j, 10, 10], "category_id": j % 2, "iscrowd": 0} for j in range(n)],
        }
        for i, n in enumerate(counts)
    ]


def test_missing_and_empty_images_listed(tmp_path):
    dicts = _dicts([1] * 9, root=str(tmp_path))
    for d in dicts[:2]:
        open(d["file_name"], "wb").write(b"\x89PNG")
    open(dicts[2]["file_name"], "wb").close()  # empty
    with pytest.raises(FileNotFoundError) as err:
        check_image_files(dicts, "my_val", max_listed=3)
    msg = str(err.value)
    assert "'my_val': 7 of 9 image files" in msg
    listed = [line.strip() for line in msg.splitlines()[1:]]
    assert listed == [d["file_name"] for d in dicts[2:5]] + ["..."]
    for d in dicts:
        open(d["file_name"], "wb").write(b"x")
    check_image_files(dicts, "my_val")


def _image_files(root):
    """Images with known defects (name -> (dict, expected problem or None)), 60 x 40 unless said."""
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    cases = {}

    def add(name, data=None, size=(60, 40), problem=None, **save):
        path = os.path.join(root, name)
        if data is None:
            Image.fromarray(pixels).save(path, **save)
        else:
            open(path, "wb").write(data)
        cases[name] = ({"file_name": path, "width": size[0], "height": size[1]}, problem)
        return path

    jpeg = open(add("ok.jpg"), "rb").read()
    png = open(add("ok.png"), "rb").read()
    add("truncated.jpg", jpeg[: len(jpeg) // 2], problem="image file is truncated")
    add("truncated.png", png[:-40], problem="truncated")
    add("trailing.jpg", jpeg + b"\0" * 3000)  # bytes after the end marker: decodes, not refused
    add("text.jpg", b"not an image at all", problem="not a readable image")
    add("small.png", size=(64, 40), problem="the image is 60 x 40 (width x height, EXIF orientation applied) "
        "but the dataset says 64 x 40")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated by 90 degrees: the mapper reads it as 40 x 60
    add("rotated.jpg", size=(40, 60), exif=exif.tobytes())
    add("rotated_wrong.jpg", size=(60, 40), exif=exif.tobytes(), problem="the image is 40 x 60")
    cases["no_size.png"] = ({"file_name": os.path.join(root, "ok.png")}, None)  # no width / height: not compared
    return cases


def test_image_headers_find_corrupt_truncated_and_mis_sized_images(tmp_path):
    """Each defect is found, named with its file; complete images of the right size (after the
    EXIF rotation, or with bytes after the JPEG end marker) are not refused. Before the check the
    test mapper failed on them at the evaluation after training."""
    cases = _image_files(str(tmp_path))
    check_image_headers([d for d, problem in cases.values() if problem is None], "good")
    bad = {name: problem for name, (_, problem) in cases.items() if problem}
    with pytest.raises(OSError) as err:
        check_image_headers([d for d, _ in cases.values()], "my_val", max_listed=len(cases))
    lines = str(err.value).splitlines()
    assert lines[0].startswith(f"dataset 'my_val': {len(bad)} of {len(cases)} images are corrupt, truncated or of "
                               "another size") and "train.verify_test_images=False" in lines[0]
    listed = {os.path.basename(line.strip().split(": ", 1)[0]): line for line in lines[1:]}
    assert set(listed) == set(bad)
    for name, problem in bad.items():
        assert problem in listed[name], listed[name]


def test_class_count():
    dicts = _dicts([3, 2])  # labels 0, 1
    check_class_count(dicts, "d", ["a", "b"], 2)
    with pytest.raises(ValueError, match=r"'d' has 2 classes \(\['a', 'b'\]\) but the model has num_classes=1"):
        check_class_count(dicts, "d", ["a", "b"], 1)
    with pytest.raises(ValueError, match=r"'d' has 2 classes .* num_classes=80.*class count to 2"):
        check_class_count(dicts, "d", ["a", "b"], 80)
    with pytest.raises(ValueError, match=r"'d' has labels up to 1 but the model has num_classes=1"):
        check_class_count(dicts, "d", None, 1)
    check_class_count(dicts, "d", None, 5)  # no metadata: only the labels can be checked
    check_class_count(dicts, "d", ["a", "b"], None)  # unknown model: nothing to compare


def test_invalid_boxes_counted(caplog):
    dicts = _dicts([2, 1])
    dicts[0]["annotations"][0]["bbox"] = [5, 5, 0, 4]
    dicts[1]["annotations"][0]["bbox"] = [200, 5, 10, 4]  # right of the 100 px image
    dicts[0]["annotations"][1]["bbox"] = [5, 5, -1, 4]
    dicts[0]["annotations"][1]["iscrowd"] = 1  # crowd: not a training box, not counted
    with caplog.at_level(logging.WARNING, logger="codetr"):
        assert check_invalid_boxes(dicts, "d") == 2
    assert "'d': 2 boxes are invalid" in caplog.text


def test_objects_per_image(caplog):
    dicts = _dicts([3, 25, 150, 120, 0])
    limits = {"queries": 20, "detections": 30}
    with caplog.at_level(logging.WARNING, logger="codetr"):
        lines = check_objects_per_image(dicts, "trees", limits, train=True)
    assert lines == [caplog.records[0].getMessage()]
    assert "'trees': 3 of 5 images have more than 20 ground-truth boxes (at most 150 in one image)" in lines[0]
    test_lines = check_objects_per_image(dicts, "trees", limits, train=False)
    assert len(test_lines) == 2
    assert "2 of 5 images have more than 30" in test_lines[0] and "detections per image" in test_lines[0]
    assert "2 of 5 images have more than 100" in test_lines[1] and "maxDets" in test_lines[1]
    assert check_objects_per_image(_dicts([20, 3]), "ok", limits, train=True) == []
    # a dense detector has no queries: nothing to say about training
    assert check_objects_per_image(dicts, "d", {"queries": None, "detections": 200}, train=True) == []


@pytest.mark.parametrize(
    "config,num_classes,queries,detections",
    [
        ("dino_r18_tiny.py", 2, 20, 20),
        ("co_dino_r18_tiny.py", 2, 20, 20),
        ("co_deformable_detr_tiny.py", 2, 20, 20),
        ("tood_r18_tiny.py", 2, None, 100),
        ("tiny_retinanet.py", 2, None, 100),
    ],
)
def test_model_limits_from_configs(config, num_classes, queries, detections):
    """The values the configs set (tests/engine/configs/*; TOOD's head and RetinaNet keep the
    defaults of 100 detections per image) are found on the built models."""
    cfg = LazyConfig.load(os.path.join(TINY, config))
    model = instantiate(cfg.model)
    assert model_num_classes(model) == num_classes
    assert model_output_limits(model) == {"queries": queries, "detections": detections}


def test_model_limits_of_co_detr_evaluating_an_aux_head():
    """Co-DINO evaluated with its one-stage (ATSS) head outputs what that head keeps (its
    ``test_detections_per_image``, set here to 37), not the DETR decoder's 20."""
    cfg = LazyConfig.load(os.path.join(TINY, "co_dino_r18_tiny.py"))
    cfg.model.eval_module = "one-stage"
    cfg.model.aux_heads[cfg.model.eval_heads["one-stage"]].test_detections_per_image = 37
    model = instantiate(cfg.model)
    assert model_output_limits(model) == {"queries": 20, "detections": 37}


def _tiny_coco(root):
    os.makedirs(os.path.join(root, "images"))
    from PIL import Image

    for split, n in (("train", 2), ("val", 2)):
        images, annotations = [], []
        for i in range(n):
            Image.new("RGB", (64, 64), (30, 30, 30)).save(os.path.join(root, "images", f"{split}{i}.png"))
            images.append({"id": i + 1, "file_name": f"{split}{i}.png", "width": 64, "height": 64})
            for j, cat in enumerate((1, 2)):
                annotations.append({"id": 2 * i + j + 1, "image_id": i + 1, "category_id": cat,
                                    "bbox": [8 + 20 * j, 8, 16, 16], "area": 256, "iscrowd": 0})
        categories = [{"id": 1, "name": "red"}, {"id": 2, "name": "green"}]
        with open(os.path.join(root, f"{split}.json"), "w") as f:
            json.dump({"images": images, "annotations": annotations, "categories": categories}, f)


def _train_net(data_root, out, config, *overrides):
    env = dict(os.environ, CODETR_TINY_COCO=data_root, OMP_NUM_THREADS="1", CODETR_CACHE=os.path.join(out, "cache"))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (os.path.join(ROOT, "projects"), env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, os.path.join(ROOT, "train_net.py"), "--config-file", os.path.join(TINY, config),
           "train.device=cpu", f"train.output_dir={out}", "train.max_iter=2", "train.log_period=1", *overrides]
    return subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)


def test_train_net_fails_at_start_on_missing_val_image(tmp_path):
    """Fails before the fix: the run trains, then dies in the evaluation (FileNotFoundError from
    the test loader) after all iterations."""
    root = str(tmp_path / "data")
    _tiny_coco(root)
    os.remove(os.path.join(root, "images", "val1.png"))
    proc = _train_net(root, str(tmp_path / "out"), "tiny_retinanet.py")
    assert proc.returncode != 0
    assert "'tiny_val': 1 of 2 image files are missing" in proc.stdout, proc.stdout[-3000:]
    assert os.path.join(root, "images", "val1.png") in proc.stdout
    assert "Starting training" not in proc.stdout and "iter: 0" not in proc.stdout


def test_train_net_fails_at_start_on_truncated_val_image(tmp_path):
    """Fails before the fix: the run trains, then the evaluation dies on the truncated file
    ("image file is truncated") after all iterations. train.verify_test_images=False skips the
    check (and the run then fails in the evaluation, as before)."""
    from PIL import Image

    root = str(tmp_path / "data")
    _tiny_coco(root)
    path = os.path.join(root, "images", "val1.png")
    Image.open(path).convert("RGB").save(str(tmp_path / "val1.jpg"))  # the same pixels as a JPEG
    data = open(tmp_path / "val1.jpg", "rb").read()
    open(path, "wb").write(data[: len(data) - 20])  # (PIL reads the format from the content)
    proc = _train_net(root, str(tmp_path / "out"), "tiny_retinanet.py")
    assert proc.returncode != 0
    assert "'tiny_val': 1 of 2 images are corrupt, truncated or of another size" in proc.stdout, proc.stdout[-3000:]
    assert f"{path}: image file is truncated" in proc.stdout
    assert "Starting training" not in proc.stdout and "iter: 0" not in proc.stdout
    proc = _train_net(root, str(tmp_path / "out2"), "tiny_retinanet.py", "train.verify_test_images=False")
    assert proc.returncode != 0 and "Starting training" in proc.stdout, proc.stdout[-3000:]
    assert "image file is truncated" in proc.stdout


def test_train_net_class_count_mismatch(tmp_path):
    """Fails before the fix: DINO with num_classes=1 on 2-class data dies with an IndexError in
    the denoising module's label embedding during the first iteration."""
    root = str(tmp_path / "data")
    _tiny_coco(root)
    proc = _train_net(root, str(tmp_path / "out"), "dino_r18_tiny.py", "model.num_classes=1")
    assert proc.returncode != 0
    assert "dataset 'tiny_train' has 2 classes (['red', 'green']) but the model has num_classes=1" in proc.stdout, proc.stdout[-3000:]
    assert "IndexError" not in proc.stdout and "Starting training" not in proc.stdout


def test_check_datasets_for_model_on_configs(tmp_path, monkeypatch, caplog):
    """The whole check on a config's dataloader: warns that 2 boxes per image exceed 1 query."""
    root = str(tmp_path / "data")
    _tiny_coco(root)
    monkeypatch.setenv("CODETR_CACHE", str(tmp_path / "cache"))

    class OneQuery:  # what every codetr detector says of itself
        num_classes = 2
        num_queries = 1
        detections_per_image = 1

    from detectron2.config import LazyCall as L
    from codetr.data import coco_json_dataset

    dataloader = {
        "train": {"dataset": L(coco_json_dataset)(names="chk_train", json_file=f"{root}/train.json", image_root=f"{root}/images")},
        "test": {"dataset": L(coco_json_dataset)(names="chk_val", json_file=f"{root}/val.json", image_root=f"{root}/images", filter_empty=False)},
    }
    with caplog.at_level(logging.WARNING, logger="codetr"):
        check_datasets_for_model(dataloader, OneQuery(), train=True)
    assert "'chk_train': 2 of 2 images have more than 1 ground-truth boxes" in caplog.text
    assert "'chk_val': 2 of 2 images have more than 1 ground-truth boxes" in caplog.text
    with pytest.raises(ValueError, match="'chk_val' has 2 classes"):
        OneQuery.num_classes = 3
        check_datasets_for_model(dataloader, OneQuery(), train=False)
