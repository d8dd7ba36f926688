"""``OnnxRuntimeDetector`` (what ``tools/eval_onnx.py`` evaluates): an exported graph behind
Detectron2's model interface gives the PyTorch model's instances, rescaled to the original size."""
import json
import os
import sys

import numpy as np
import pytest
import torch

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from codetr.export.onnx_export import INPUT_NAMES, OUTPUT_NAMES, export_onnx  # noqa: E402
from codetr.export.onnx_runtime import INPUT_NAMES as RUN_INPUT_NAMES  # noqa: E402
from codetr.export.onnx_runtime import OUTPUT_NAMES as RUN_OUTPUT_NAMES  # noqa: E402
from codetr.export.onnx_runtime import GraphInputSizeError, OnnxRuntimeDetector  # noqa: E402
from support.dino import tiny_dino  # noqa: E402
from support.export import assert_same_detections, shapes_image  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.mark.parametrize("detectron2_postprocess", [True, False])
def test_instances_equal_pytorch_rescaled_to_the_original_size(tmp_path, detectron2_postprocess):
    """Rescaled as the PyTorch model does: Detectron2's ``detector_postprocess`` (clip, drop empty
    boxes), or (``detectron2_postprocess=False``, the official DETR-family / DEQDet / Co-DETR
    post-processing) every detection kept and only scaled, as the graph's metadata says."""
    assert (RUN_INPUT_NAMES, RUN_OUTPUT_NAMES) == (INPUT_NAMES, OUTPUT_NAMES)
    model = tiny_dino().eval()
    model.detectron2_postprocess = detectron2_postprocess
    path = str(tmp_path / "dino.onnx")
    export_onnx(model, path, (128, 160), metadata={"codetr.config": "configs/x.py"})
    detector = OnnxRuntimeDetector(path, num_threads=1)
    assert detector.metadata["codetr.detectron2_postprocess"] == str(detectron2_postprocess)
    assert detector.detectron2_postprocess is detectron2_postprocess
    # the metadata eval_onnx checks: the class count (tiny DINO: 3), the config, the fixed size
    assert detector.num_classes == 3 and detector.fixed_size == (128, 160)
    assert detector.metadata["codetr.config"] == "configs/x.py" and detector.metadata["codetr.image_size"] == "128 160"
    image = shapes_image(2, 128, 160)
    # the mapper resized a 200 x 250 original to 128 x 160: boxes go back to 200 x 250
    inputs = [{"image": image, "height": 200, "width": 250}]
    r = detector(inputs)[0]["instances"]
    with torch.no_grad():
        t = model(inputs)[0]["instances"]
    assert r.image_size == t.image_size == (200, 250)
    assert float(r.pred_boxes.tensor[:, 2].max()) > 160  # rescaled, not at the input's size
    assert_same_detections(
        (r.pred_classes.numpy(), r.pred_boxes.tensor.numpy(), r.scores.numpy()),
        (t.pred_classes.numpy(), t.pred_boxes.tensor.numpy(), t.scores.numpy()),
        box_tol=2e-3,  # 1e-3 px at the input size, x 1.5625 after rescaling
    )
    assert r.pred_classes.dtype == torch.int64 and r.scores.dtype == torch.float32
    if not detectron2_postprocess:
        assert len(r) == model.select_box_nums_for_evaluation

    with pytest.raises(ValueError, match="graph expects RGB images, but the inputs are BGR"):
        OnnxRuntimeDetector(path, input_format="BGR")
    with pytest.raises(ValueError, match=r"expected a \(3, H, W\) uint8 image, got \(3, 128, 160\) torch.float32"):
        detector([{"image": image.float()}])
    # another size than the fixed one: said, with the way out (before: ONNX Runtime's "Got: 160 Expected: 128")
    with pytest.raises(GraphInputSizeError, match=r"dino.onnx was exported for 128 x 160 images \(a fixed-size graph\) "
                       r"but got a 160 x 128 image; export it with tools/export_onnx.py --dynamic"):
        detector([{"image": image.transpose(1, 2).contiguous()}])


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _eval_tool():
    sys.path.insert(0, os.path.join(REPO, "tools"))
    import eval_onnx

    return eval_onnx


def constant_graph(path, size=("h", "w"), metadata=None):
    """A graph with export_onnx's interface (``image`` (1, 3, H, W) uint8 -> labels, boxes, scores)
    that returns one fixed detection (class 0, box (4, 4, 20, 20), score 0.9) whatever the image:
    eval_onnx's checks without an export. ``size``: ints for a fixed-size graph, names for any."""
    import onnx
    from onnx import TensorProto, helper

    def const(name, array):
        return helper.make_node("Constant", [], [name], value=onnx.numpy_helper.from_array(array, name))

    nodes = [const("labels", np.zeros(1, np.int64)), const("boxes", np.array([[4, 4, 20, 20]], np.float32)),
             const("scores", np.array([0.9], np.float32))]
    graph = helper.make_graph(
        nodes, "constant", [helper.make_tensor_value_info("image", TensorProto.UINT8, [1, 3, *size])],
        [helper.make_tensor_value_info("labels", TensorProto.INT64, [1]),
         helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 4]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    helper.set_model_props(model, dict(metadata or {}))
    onnx.save(model, path)
    return path


def one_image_json_set(root, name, num_categories, size=(64, 64)):
    """A COCO json (``num_categories`` classes, one w x h image with one box) and the overrides that
    make it the test set of tests/engine/configs/dino_r18_tiny.py (datasets/README.md)."""
    from PIL import Image

    os.makedirs(os.path.join(root, "images"))
    Image.new("RGB", size, (90, 90, 90)).save(os.path.join(root, "images", "a.png"))
    data = {"images": [{"id": 1, "file_name": "a.png", "width": size[0], "height": size[1]}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 4, 16, 16], "area": 256,
                             "iscrowd": 0}],
            "categories": [{"id": i + 1, "name": f"c{i}"} for i in range(num_categories)]}
    with open(os.path.join(root, "val.json"), "w") as f:
        json.dump(data, f)
    return ["dataloader.test.dataset._target_=codetr.data.coco_json_dataset", f"dataloader.test.dataset.names={name}",
            f"dataloader.test.dataset.json_file={root}/val.json", f"dataloader.test.dataset.image_root={root}/images",
            "dataloader.test.dataset.filter_empty=False", f"train.output_dir={root}/out"]


TINY_CONFIG = os.path.join(REPO, "tests", "engine", "configs", "dino_r18_tiny.py")


def test_eval_tool_refuses_another_class_count(tmp_path, capsys, caplog):
    """A 1-class graph on a 2-class test set: refused with both counts (before: evaluated, AP 0,
    no warning); the same graph on a 1-class set is evaluated."""
    eval_onnx = _eval_tool()
    graph = constant_graph(str(tmp_path / "one.onnx"), metadata={"codetr.num_classes": "1",
                                                                 "codetr.config": "configs/x/one_class.py"})
    overrides = one_image_json_set(str(tmp_path / "two"), "onnx_two_classes", 2)
    assert eval_onnx.main(["--config-file", TINY_CONFIG, "--onnx", graph, *overrides]) == 2
    out = capsys.readouterr()
    assert (f"error: {graph} was exported for 1 classes (config configs/x/one_class.py) but the test dataset "
            "'onnx_two_classes' has 2 (['c0', 'c1'])") in out.err
    assert "the graph was exported from configs/x/one_class.py, evaluated here with" in out.out + caplog.text
    overrides = one_image_json_set(str(tmp_path / "one"), "onnx_one_class", 1)
    assert eval_onnx.main(["--config-file", TINY_CONFIG, "--onnx", graph, *overrides]) == 0
    assert "AP50" in capsys.readouterr().out


def test_eval_tool_warns_about_a_graph_without_its_class_count(tmp_path, capsys, caplog):
    eval_onnx = _eval_tool()
    graph = constant_graph(str(tmp_path / "old.onnx"))
    overrides = one_image_json_set(str(tmp_path / "two"), "onnx_no_count", 2)
    assert eval_onnx.main(["--config-file", TINY_CONFIG, "--onnx", graph, *overrides]) == 0
    out = capsys.readouterr().out + caplog.text  # (Detectron2's logger writes to the first test's stdout)
    assert f"{graph} has no codetr.num_classes metadata" in out and "(2 classes)" in out and "AP 0" in out


def test_eval_tool_says_to_export_with_dynamic(tmp_path, capsys):
    """A fixed 64 x 64 graph, a 64 x 48 test image (the mapper keeps 64 x 48): exit 2 saying to
    export with --dynamic (before: ONNX Runtime's "Got: 48 Expected: 64" traceback)."""
    eval_onnx = _eval_tool()
    graph = constant_graph(str(tmp_path / "fixed.onnx"), size=(64, 64), metadata={"codetr.num_classes": "2"})
    overrides = one_image_json_set(str(tmp_path / "data"), "onnx_other_size", 2, size=(64, 48))
    assert eval_onnx.main(["--config-file", TINY_CONFIG, "--onnx", graph, *overrides]) == 2
    assert (f"error: {graph} was exported for 64 x 64 images (a fixed-size graph) but got a 48 x 64 image; export it "
            "with tools/export_onnx.py --dynamic") in capsys.readouterr().err


def test_eval_tool_refuses_a_missing_graph(tmp_path, capsys):
    eval_onnx = _eval_tool()
    repo = REPO

    missing = str(tmp_path / "missing.onnx")
    config = os.path.join(repo, "configs/co_dino/co_dino_r18_shapes.py")
    assert eval_onnx.main(["--config-file", config, "--onnx", missing]) == 2
    assert f"--onnx {missing!r} is not a file" in capsys.readouterr().err
