"""``OnnxRuntimeDetector`` (what ``tools/eval_onnx.py`` evaluates): an exported graph behind
Detectron2's model interface gives the PyTorch model's instances, rescaled to the original size."""
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
from codetr.export.onnx_runtime import OnnxRuntimeDetector  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_onnx_export import assert_same_detections, shapes_image, tiny_dino  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("detectron2_postprocess", [True, False])
def test_instances_equal_pytorch_rescaled_to_the_original_size(tmp_path, detectron2_postprocess):
    """Rescaled as the PyTorch model does: Detectron2's ``detector_postprocess`` (clip, drop empty
    boxes), or (``detectron2_postprocess=False``, the official DETR-family / DEQDet / Co-DETR
    post-processing) every detection kept and only scaled, as the graph's metadata says."""
    assert (RUN_INPUT_NAMES, RUN_OUTPUT_NAMES) == (INPUT_NAMES, OUTPUT_NAMES)
    model = tiny_dino().eval()
    model.detectron2_postprocess = detectron2_postprocess
    path = str(tmp_path / "dino.onnx")
    export_onnx(model, path, (128, 160))
    detector = OnnxRuntimeDetector(path, num_threads=1)
    assert detector.metadata["codetr.detectron2_postprocess"] == str(detectron2_postprocess)
    assert detector.detectron2_postprocess is detectron2_postprocess
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


def test_eval_tool_refuses_a_missing_graph(tmp_path, capsys):
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.path.insert(0, os.path.join(repo, "tools"))
    import eval_onnx

    missing = str(tmp_path / "missing.onnx")
    config = os.path.join(repo, "configs/co_dino/co_dino_r18_shapes.py")
    assert eval_onnx.main(["--config-file", config, "--onnx", missing]) == 2
    assert f"--onnx {missing!r} is not a file" in capsys.readouterr().err
