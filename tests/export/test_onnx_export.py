"""ONNX export: ONNX Runtime's detections equal PyTorch's (tiny DINO, Co-DINO, TOOD on rendered
shapes images, a dynamic-size export run at a size that is not a multiple of 32), the two ONNX
forms of ms_deform_attn against the reference op, and the errors."""
import os
import sys

import numpy as np
import pytest
import torch

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from codetr.checkpoint import CheckpointMismatchError  # noqa: E402
from codetr.export import UnsupportedModelError, exportable  # noqa: E402
from codetr.export.onnx_export import export_onnx  # noqa: E402
from codetr.export.onnx_ops import ms_deform_attn_translation  # noqa: E402
from codetr.export.weights import load_inference_weights  # noqa: E402
from codetr.layers.ms_deform_attn import ms_deform_attn, ms_deform_attn_reference  # noqa: E402
from support.deformable import deformable_transformer  # noqa: E402
from support.detr import tiny_conditional_detr, tiny_detr  # noqa: E402
from support.dino import tiny_co_detr, tiny_dino  # noqa: E402
from support.export import assert_same_detections, shapes_image  # noqa: E402
from support.models import PatchBackbone  # noqa: E402
from support.one_stage import tiny_tood  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def pytorch_detections(model, image):
    with torch.no_grad():
        r = model([{"image": image}])[0]["instances"]
    return r.pred_classes.numpy(), r.pred_boxes.tensor.numpy(), r.scores.numpy()


def check_parity(model, path, sizes, dynamic):
    if dynamic:
        export_onnx(model, path, sizes[0], dynamic=True)
    for i, (h, w) in enumerate(sizes):
        if not dynamic:
            export_onnx(model, path, (h, w))
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        image = shapes_image(i, h, w)
        assert_same_detections(session.run(None, {"image": image[None].numpy()}), pytorch_detections(model, image))
    return session


class CeilPatchBackbone(PatchBackbone):
    """The test DINO's patch backbone with each patch conv's input padded by (stride - 1) zeros on
    the right and bottom: ceil(size / stride) maps, as a ResNet gives, so any image size fits the
    padding masks (and multiples of the strides give the same maps as PatchBackbone)."""

    def forward(self, x):
        def patch(conv, y):
            s = conv.stride[0]
            return conv(torch.nn.functional.pad(y, (0, s - 1, 0, s - 1))).relu()

        r3 = patch(self.res3, x)
        r4 = patch(self.res4, r3)
        return {"res3": r3, "res4": r4, "res5": patch(self.res5, r4)}


def test_dino_dynamic_size(tmp_path):
    model = tiny_dino().eval()
    backbone = CeilPatchBackbone()
    backbone.load_state_dict(model.backbone.state_dict())
    model.backbone = backbone
    # traced at 128 x 160, run there and at 130 x 99 (neither side a multiple of 32)
    check_parity(model, str(tmp_path / "dino.onnx"), [(128, 160), (130, 99)], dynamic=True)


@pytest.mark.parametrize("variant", ["conditional", "dab"])
def test_single_scale_family_fixed_size(tmp_path, variant):
    """Conditional DETR and DAB-DETR (issue 11's QueryDetectors: standard attention, no custom op)
    go through the same adapter. (DEQDet exports too, checked by hand: 72 s to trace its 21
    refinement steps, too slow for CI.)"""
    model = tiny_conditional_detr(variant).eval()
    check_parity(model, str(tmp_path / f"{variant}.onnx"), [(128, 160)], dynamic=False)


def test_detr_fixed_size(tmp_path):
    """DETR's own inference (per-query softmax argmax, its ``topk_pairs``) goes through the same
    adapter."""
    model = tiny_detr(select=10).eval()
    check_parity(model, str(tmp_path / "detr.onnx"), [(128, 160)], dynamic=False)


def test_co_dino_exports_its_dino_without_soft_nms(tmp_path):
    """Co-DINO's graph is its DINO's (the two-size dynamic case is DINO's test; a dynamic export
    costs ~3x a fixed one): one fixed size."""
    model = tiny_co_detr(5).eval()  # Faster R-CNN + ATSS aux heads, Soft-NMS at inference
    assert model.detector.nms == "soft_nms"
    path = str(tmp_path / "co_dino.onnx")
    export_onnx(model, path, (160, 192))
    import onnx

    meta = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
    assert meta["codetr.model"] == "CoDETR" and "soft_nms" in meta["codetr.not_exported"]
    model.detector.nms = None  # the graph is the top-k without Soft-NMS
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    image = shapes_image(3, 160, 192)
    assert_same_detections(session.run(None, {"image": image[None].numpy()}), pytorch_detections(model, image))


def test_tood_fixed_sizes(tmp_path):
    model = tiny_tood(test_score_thresh=0.02).eval()
    with torch.no_grad():  # spread the scores (the prior bias puts all of them near 0.01)
        torch.nn.init.normal_(model.head.tood_cls.weight, std=0.3)
        model.head.tood_cls.bias.fill_(-2.0)
    # 100 x 140: padded to 128 x 160 inside the graph, as by the PyTorch model
    check_parity(model, str(tmp_path / "tood.onnx"), [(128, 160), (100, 140)], dynamic=False)


@pytest.mark.parametrize("implementation", ["grid_sample", "gather"])
def test_ms_deform_attn_translations_equal_the_reference(tmp_path, implementation):
    heads, channels, points = 2, 4, 3

    class Attend(torch.nn.Module):
        """Levels from one map at strides 1, 2, 4: spatial_shapes traced from the map's size."""

        def forward(self, x, locations, weights):
            maps = [x, x[:, :, ::2, ::2], x[:, :, ::4, ::4]]
            shapes = torch.tensor([tuple(m.shape[-2:]) for m in maps], dtype=torch.long)
            sizes = shapes.prod(1)
            starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
            value = torch.cat([m.flatten(2).transpose(1, 2) for m in maps], 1)
            return ms_deform_attn(value.reshape(x.shape[0], -1, heads, channels), shapes, starts, locations, weights)

    def inputs(n, h, w, q, seed):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(n, heads * channels, h, w, generator=g)
        locations = torch.rand(n, q, heads, 3, points, 2, generator=g) * 1.4 - 0.2  # some outside the maps
        return x, locations, torch.rand(n, q, heads, 3, points, generator=g)

    path = str(tmp_path / "attend.onnx")
    torch.onnx.export(
        Attend(), inputs(2, 9, 13, 5, 0), path, dynamo=True, opset_version=19, input_names=["x", "loc", "w"],
        dynamic_shapes={"x": {0: "N", 2: "H", 3: "W"}, "locations": {0: "N", 1: "Q"}, "weights": {0: "N", 1: "Q"}},
        custom_translation_table={
            torch.ops.codetr.ms_deform_attn.default: ms_deform_attn_translation(implementation, 19)
        },
        optimize=False, verbose=False,
    )
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for n, h, w, q in [(2, 9, 13, 5), (1, 17, 6, 7)]:
        x, locations, weights = inputs(n, h, w, q, seed=h)
        maps = [x, x[:, :, ::2, ::2], x[:, :, ::4, ::4]]
        shapes = torch.tensor([tuple(m.shape[-2:]) for m in maps])
        sizes = shapes.prod(1)
        value = torch.cat([m.flatten(2).transpose(1, 2) for m in maps], 1).reshape(n, -1, heads, channels)
        expected = ms_deform_attn_reference(value, shapes, torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]]),
                                            locations, weights)
        (got,) = session.run(None, {"x": x.numpy(), "loc": locations.numpy(), "w": weights.numpy()})
        np.testing.assert_allclose(got, expected.numpy(), rtol=0, atol=1e-5)


def test_unsupported_models_are_named():
    with pytest.raises(UnsupportedModelError, match="no exporter for Linear"):
        exportable(torch.nn.Linear(2, 2))
    model = tiny_co_detr(5, heads=("atss",), eval_module="one-stage", eval_heads={"one-stage": 0})
    with pytest.raises(UnsupportedModelError, match="eval_module='one-stage'"):
        exportable(model)


def test_bad_arguments(tmp_path):
    model = tiny_dino()
    with pytest.raises(ValueError, match="opset 17 is not supported"):
        export_onnx(model, str(tmp_path / "m.onnx"), (128, 160), opset=17)
    with pytest.raises(ValueError, match="at least 2 x 2"):  # the stride-64 level would be 1 x 2
        export_onnx(model, str(tmp_path / "m.onnx"), (64, 128), dynamic=True)
    with pytest.raises(ValueError, match="TOOD needs opset >= 19"):
        export_onnx(tiny_tood(), str(tmp_path / "m.onnx"), (128, 160), opset=18)


def test_co_detr_checkpoint_loads_into_dino_dropping_aux_weights(tmp_path):
    co = tiny_co_detr(5, seed=1)
    path = str(tmp_path / "co.pth")
    torch.save({"model": co.state_dict(), "iteration": 3}, path)
    aux = [k for k in co.state_dict() if k.startswith(("aux_heads.", "positive_queries.", "downsample."))]
    assert aux
    dino = tiny_co_detr(5, seed=2).detector  # a DINO config: other weights
    assert load_inference_weights(dino, path) == aux
    for key, value in co.detector.state_dict().items():
        assert torch.equal(dino.state_dict()[key], value), key
    # the Co-DETR model itself: its detector gets the same weights
    other = tiny_co_detr(5, seed=2)
    load_inference_weights(other, path)
    assert torch.equal(other.detector.transformer.level_embeds, co.detector.transformer.level_embeds)
    # a checkpoint of another model is refused with the counts (codetr.checkpoint.Checkpointer)
    torch.save({"model": tiny_tood().state_dict()}, path)
    with pytest.raises(CheckpointMismatchError, match=f"{path} does not fit the model: .* checkpoint tensors do not "
                       "exist in the model"):
        load_inference_weights(dino, path)


def test_cli_refuses_weights_of_another_model(tmp_path, capsys):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.path.insert(0, os.path.join(root, "tools"))
    import export_onnx as cli

    weights = str(tmp_path / "tood.pth")
    torch.save({"model": tiny_tood().state_dict()}, weights)
    code = cli.main(["--config-file", os.path.join(root, "configs/dino/dino_r18_shapes.py"), "--weights", weights,
                     "--output", str(tmp_path / "m.onnx"), "--image-size", "192", "256"])
    assert code == 2
    assert f"{weights} does not fit the model" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "m.onnx")


def _export_cli():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.path.insert(0, os.path.join(root, "tools"))
    import export_onnx as cli

    return cli, os.path.join(root, "tests", "engine", "configs", "dino_r18_tiny.py")


def test_cli_refuses_weights_of_another_class_count(tmp_path, capsys):
    """As train_net.py: the file, the counts, the shapes and the opt-in (before: load_state_dict's
    raw "size mismatch" traceback)."""
    from detectron2.config import LazyConfig, instantiate

    cli, config = _export_cli()
    weights = str(tmp_path / "five_classes.pth")
    cfg = LazyConfig.apply_overrides(LazyConfig.load(config), ["model.num_classes=5"])
    torch.save({"model": instantiate(cfg.model).state_dict()}, weights)
    code = cli.main(["--config-file", config, "--weights", weights, "--output", str(tmp_path / "m.onnx"),
                     "--image-size", "64", "64"])
    err = capsys.readouterr().err
    assert code == 2 and f"{weights} does not fit the model: 9 tensors have other shapes" in err, err
    assert "(5, 128) vs (2, 128)" in err and "num_classes" in err and "train.init_checkpoint_partial=True" in err
    assert not os.path.exists(tmp_path / "m.onnx")


def test_cli_checks_the_size_before_tracing_and_records_the_config(tmp_path, capsys, monkeypatch):
    """8 x 8: the model's own error (4 encoder positions for 20 queries), before the exporter
    (before: torch.export's "Create an issue in the PyTorch GitHub repository", the cause buried).
    The config is passed to the graph's metadata."""
    cli, config = _export_cli()
    code = cli.main(["--config-file", config, "--output", str(tmp_path / "m.onnx"), "--image-size", "8", "8"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "error: export_onnx: the model cannot process a 8 x 8 image (run in PyTorch before tracing): ValueError: " \
           "DeformableTransformer: num_queries (20) exceeds the 4 encoder positions" in err
    assert not os.path.exists(tmp_path / "m.onnx")

    import codetr.export.onnx_export as onnx_export

    seen = {}
    monkeypatch.setattr(onnx_export, "export_onnx", lambda *a, **kw: seen.update(kw) or open(a[1], "w").close())
    assert cli.main(["--config-file", config, "--output", str(tmp_path / "m.onnx"), "--image-size", "64", "64"]) == 0
    assert seen["metadata"] == {"codetr.config": os.path.join("tests", "engine", "configs", "dino_r18_tiny.py")}


def test_size_checked_in_pytorch_before_tracing(tmp_path):
    model = tiny_dino(num_queries=30)  # a 32 x 32 image: 4 x 4 + 2 x 2 + 1 + 1 = 22 positions
    with pytest.raises(ValueError, match=r"cannot process a 32 x 32 image .*num_queries \(30\) exceeds the 22 encoder "
                       r"positions"):
        export_onnx(model, str(tmp_path / "m.onnx"), (32, 32))
    assert not os.path.exists(tmp_path / "m.onnx")


def test_dino_hard_nms_in_the_exported_module_equals_the_model():
    """nms="nms" is part of the graph: the exportable module (the code that is exported, run in
    PyTorch) gives the model's detections (ONNX Runtime's NonMaxSuppression: TOOD's test)."""
    model = tiny_dino().eval()
    model.nms, model.nms_pre_topk, model.nms_iou_threshold = "nms", 60, 0.02
    model.select_box_nums_for_evaluation = 60  # all 20 queries x 3 classes enter, NMS decides
    image = shapes_image(2, 128, 160)
    with torch.no_grad():
        got = [t.numpy() for t in exportable(model)(image[None])]
    expected = pytorch_detections(model, image)
    assert 5 < len(expected[2]) < 60  # the NMS removed pairs
    assert_same_detections(got, expected)


def test_deformable_detr_pp_graph(tmp_path):
    """Co-Deformable-DETR's detector (Deformable-DETR++: query positions from pos_trans, no
    decoder norm, top-k by class 0, no denoising) through the same adapter, fixed size."""
    model = tiny_dino(denoising=None).eval()
    model.transformer = deformable_transformer(num_queries=20, num_levels=4, seed=1)  # width 32, 3 classes
    check_parity(model, str(tmp_path / "ddetr_pp.onnx"), [(128, 192)], dynamic=False)


def test_dn_deformable_detr_graph(tmp_path):
    """DN-Deformable-DETR (DN denoising: the content queries' indicator channel zeroed at
    inference too), fixed size."""
    model = tiny_dino(denoising="dn").eval()
    assert not model.denoising.contrastive
    check_parity(model, str(tmp_path / "dn.onnx"), [(128, 160)], dynamic=False)


def _exported_module_detections(model, image):
    with torch.no_grad():
        return [t.numpy() for t in exportable(model)(image[None])]


# hand-built class-0 predictions for a 128 x 160 (h, w) image: A crosses the right border, B lies
# at the border inside A's clipped part (IoU(A, B) = 1 / 7 unclipped, 5 / 6 clipped), C is right of
# the image (empty once clipped)
BORDER_BOXES = torch.tensor([[155.0, 10.0, 200.0, 50.0], [154.0, 10.0, 160.0, 50.0], [170.0, 60.0, 190.0, 90.0]])
BORDER_SCORES = torch.tensor([0.9, 0.6, 0.5])


def _border_queries(num_classes):
    """forward_queries returning BORDER_BOXES / BORDER_SCORES (class 0) as its only likely pairs."""
    logits = torch.full((1, 3, num_classes), -10.0)
    logits[0, :, 0] = torch.logit(BORDER_SCORES)
    xyxy = BORDER_BOXES / torch.tensor([160.0, 128.0, 160.0, 128.0])
    boxes = torch.cat([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], -1)[None]
    return lambda enc, fixed=None: {"pred_logits": logits, "pred_boxes": boxes}


def test_co_detr_clamping_and_kept_empty_boxes_in_the_exported_module(monkeypatch):
    """Co-DETR's post-processing (``clip_before_nms``, ``detectron2_postprocess=False``) with hard
    NMS in the graph: the exportable module (the code that is exported, run in PyTorch) clamps
    before the NMS (A then suppresses B at IoU 0.8) and keeps C although it is empty, as the model."""
    model = tiny_dino().eval()
    model.nms, model.nms_pre_topk, model.nms_iou_threshold = "nms", 60, 0.8
    model.select_box_nums_for_evaluation = 2  # the 3rd is a 4.5e-5 pair of another class (hard NMS keeps it)
    model.clip_before_nms, model.detectron2_postprocess = True, False
    monkeypatch.setattr(model, "forward_queries", _border_queries(3))
    image = shapes_image(2, 128, 160)
    labels, boxes, scores = _exported_module_detections(model, image)
    np.testing.assert_allclose(boxes, [[155.0, 10.0, 160.0, 50.0], [160.0, 60.0, 160.0, 90.0]], atol=1e-4)
    np.testing.assert_allclose(scores, [0.9, 0.5], atol=1e-6)
    assert labels.tolist() == [0, 0]
    expected = pytorch_detections(model, image)
    np.testing.assert_allclose(expected[1], boxes, atol=1e-4)
    np.testing.assert_allclose(expected[2], scores, atol=1e-6)


def test_unclipped_top_k_in_the_exported_module(monkeypatch):
    """DEQDet / official DETR-family post-processing (no clipping, nothing dropped): the exported
    module returns all ``select_box_nums_for_evaluation`` pairs, boxes as predicted."""
    model = tiny_dino().eval()
    model.detectron2_postprocess = False
    model.select_box_nums_for_evaluation = 3
    monkeypatch.setattr(model, "forward_queries", _border_queries(3))
    image = shapes_image(2, 128, 160)
    labels, boxes, scores = _exported_module_detections(model, image)
    np.testing.assert_allclose(boxes, BORDER_BOXES.numpy(), atol=1e-4)
    np.testing.assert_allclose(scores, BORDER_SCORES.numpy(), atol=1e-6)
    expected = pytorch_detections(model, image)
    np.testing.assert_allclose(expected[1], boxes, atol=1e-4)


def official_tood():
    """The test TOOD with MMDetection's post-processing (no clipping anywhere, nothing dropped)
    and scores spread so that many candidates pass the threshold."""
    model = tiny_tood(test_score_thresh=0.02).eval()
    model.head.test_clip_before_nms, model.detectron2_postprocess = False, False
    with torch.no_grad():
        torch.nn.init.normal_(model.head.tood_cls.weight, std=0.3)
        model.head.tood_cls.bias.fill_(-2.0)
    return model


def test_tood_without_clipping_in_the_exported_module(monkeypatch):
    """MMDetection's TOOD: NMS (0.6) on unclipped boxes keeps A and B (IoU 1 / 7) and C, unclipped;
    clipped first, A would suppress B (IoU 5 / 6)."""
    model = official_tood()
    predict = model.head.predict

    def border_predict(feats, anchors=None):
        logits, boxes = predict(feats, anchors) if anchors is not None else predict(feats)
        logits = torch.full_like(logits, -10.0)
        logits[0, :3, 0] = torch.logit(BORDER_SCORES)  # three anchors of the first level carry A, B, C
        boxes = boxes.clone()
        boxes[0, :3] = BORDER_BOXES
        return logits, boxes

    monkeypatch.setattr(model.head, "predict", border_predict)
    image = shapes_image(1, 128, 160)
    labels, boxes, scores = _exported_module_detections(model, image)
    np.testing.assert_allclose(boxes, BORDER_BOXES.numpy(), atol=1e-4)
    np.testing.assert_allclose(scores, BORDER_SCORES.numpy(), atol=1e-6)
    expected = pytorch_detections(model, image)
    np.testing.assert_allclose(expected[1], boxes, atol=1e-4)


def test_tood_without_clipping_graph(tmp_path):
    """ONNX Runtime equals PyTorch with MMDetection's post-processing (one size; the graph with
    Detectron2's clipping is ``test_tood_fixed_sizes``); the predictions reach beyond the image."""
    model = official_tood()
    image = shapes_image(0, 100, 140)
    _, boxes, _ = pytorch_detections(model, image)
    assert (boxes[:, :2] < 0).any() or (boxes[:, 2] > 140).any() or (boxes[:, 3] > 100).any()
    check_parity(model, str(tmp_path / "tood.onnx"), [(100, 140)], dynamic=False)
