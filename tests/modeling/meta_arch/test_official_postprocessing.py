"""Each detector's post-processing follows its official code (``codetr.modeling.postprocess``), on
hand-built predictions: boxes beyond the border, boxes empty once clipped, overlapping boxes near
the border.

- Co-DETR (Sense-X ``CoDeformDETRHead._get_bboxes_single``, MMDetection 3
  ``CoDINOHead._predict_by_feat_single``): boxes clamped to the image, then Soft-NMS; nothing
  dropped afterwards.
- TOOD (MMDetection ``TOODHead``): NMS on unclipped boxes, no clipping, nothing dropped.
- DEQDet / AdaMixer (MCG-NJU ``DEQDetRoIHead.predict``): the top-k, unclipped, all returned; the
  backbone and neck under fp16 autocast on CUDA (``eqdet.py`` ``DEQDet.predict``).
- Conditional DETR / DAB-DETR / DN-DETR (official ``PostProcess``): the top-k, unclipped.
Detectron2's clipping stays available (``detectron2_postprocess=True``, the class default).
"""
import math
import os

import pytest
import torch
from detectron2.config import LazyConfig
from detectron2.structures import Boxes, Instances

from codetr.modeling.heads.dense import dense_detections
from codetr.modeling.meta_arch import DEQDet
from support.adamixer import Q as DEQ_Q, randomise, tiny_adamixer
from support.dino import tiny_dino
from support.models import make_input
from support.one_stage import tiny_tood

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))),
                       "configs")


def logit(p):
    return math.log(p / (1 - p))


def cxcywh(x0, y0, x1, y1, w, h):
    """Absolute xyxy -> cxcywh normalised by a w x h frame."""
    return [(x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h]


# three class-0 predictions in a 80 x 100 (h, w) image: A crosses the right border, B lies at the
# border inside A's clipped part, C is entirely right of the image (empty once clipped)
A, B, C = (95.0, 10.0, 140.0, 50.0), (94.0, 10.0, 100.0, 50.0), (120.0, 10.0, 140.0, 50.0)
SCORES = (0.9, 0.6, 0.5)


def border_predictions(frame_w=100, frame_h=80, num_classes=3):
    logits = torch.full((1, 3, num_classes), -10.0)  # sigmoid(-10) = 4.5e-5 < Soft-NMS's min_score 1e-3
    for q, p in enumerate(SCORES):
        logits[0, q, 0] = logit(p)
    boxes = torch.tensor([[cxcywh(*b, frame_w, frame_h) for b in (A, B, C)]])
    return logits, boxes


def co_dino_style(official=True):
    model = tiny_dino().eval()
    model.nms, model.nms_iou_threshold, model.nms_pre_topk = "soft_nms", 0.8, 900
    model.clip_before_nms, model.detectron2_postprocess = official, not official
    return model


def test_co_detr_clamps_before_soft_nms_and_drops_nothing():
    model = co_dino_style()
    logits, boxes = border_predictions()
    (r,) = model.inference(logits, boxes, [(80, 100)])
    (out,) = model.postprocess([r], [{"height": 80, "width": 100}])
    inst = out["instances"]
    # clamped: A -> (95, 10, 100, 50), C -> (100, 10, 100, 50) (empty); IoU(A, B) = 200 / 240 >= 0.8
    # decays B by (1 - 5/6); C overlaps nothing. Order by the decayed scores: A, C, B.
    expected_boxes = torch.tensor([[95.0, 10.0, 100.0, 50.0], [100.0, 10.0, 100.0, 50.0], list(B)])
    torch.testing.assert_close(inst.pred_boxes.tensor, expected_boxes)
    torch.testing.assert_close(inst.scores, torch.tensor([0.9, 0.5, 0.6 * (1 - 200 / 240)]))
    assert inst.pred_classes.tolist() == [0, 0, 0]


def test_detectron2_clipping_is_still_available_for_co_detr():
    """The class default (detrex): Soft-NMS on the unclipped boxes (IoU(A, B) = 200 / 1840, no
    decay), then ``detector_postprocess`` clips and drops C."""
    model = co_dino_style(official=False)
    logits, boxes = border_predictions()
    (r,) = model.inference(logits, boxes, [(80, 100)])
    inst = model.postprocess([r], [{"height": 80, "width": 100}])[0]["instances"]
    torch.testing.assert_close(inst.pred_boxes.tensor, torch.tensor([[95.0, 10.0, 100.0, 50.0], list(B)]))
    torch.testing.assert_close(inst.scores, torch.tensor([0.9, 0.6]))


def test_co_detr_clamps_to_the_padded_frame_when_padding_is_image():
    """LSJ (official ``with_attn_mask=False`` sets ``img_shape`` to the padded batch shape): the
    boxes, normalised by the padded 80 x 128 frame, are clamped to it, not to the 80 x 100 image."""
    model = co_dino_style()
    logits, boxes = border_predictions(frame_w=128)
    (r,) = model.inference(logits, boxes, [(80, 100)], [(80, 128)])
    inst = model.postprocess([r], [{"height": 160, "width": 200}])[0]["instances"]  # x2 to the original size
    # A -> (95, 10, 128, 50), C -> (120, 10, 128, 50); IoU(A, B) = 200 / 1320 < 0.8: no decay
    expected = torch.tensor([[95.0, 10.0, 128.0, 50.0], list(B), [120.0, 10.0, 128.0, 50.0]]) * 2
    torch.testing.assert_close(inst.pred_boxes.tensor, expected)
    torch.testing.assert_close(inst.scores, torch.tensor(SCORES))


def top_k_brute_force(logits, boxes, k, w, h):
    """Independent top-k over (query, class) pairs: sorted list of (score, query, class)."""
    pairs = []
    for q in range(logits.shape[1]):
        for c in range(logits.shape[2]):
            pairs.append((1 / (1 + math.exp(-float(logits[0, q, c]))), q, c))
    pairs.sort(key=lambda t: -t[0])
    out = []
    for s, q, c in pairs[:k]:
        cx, cy, bw, bh = boxes[0, q].tolist()
        out.append((s, c, [(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h]))
    return out


def test_deqdet_returns_its_top_k_unclipped():
    """MCG-NJU ``DEQDetRoIHead.predict``: top ``max_per_img`` pairs, boxes / scale_factor, none
    clipped or dropped (Detectron2's ``detector_postprocess`` would drop those right of the image)."""
    model = tiny_adamixer().eval()
    model.detectron2_postprocess = False
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(1, DEQ_Q, 3, generator=g)
    boxes = torch.rand(1, DEQ_Q, 4, generator=g) * torch.tensor([1.6, 1.0, 0.5, 0.5])  # centres up to 1.6 w
    (r,) = model.inference(logits, boxes, [(40, 60)])
    inst = model.postprocess([r], [{"height": 80, "width": 120}])[0]["instances"]
    expected = top_k_brute_force(logits, boxes, DEQ_Q, 60, 40)
    assert len(inst) == DEQ_Q == model.select_box_nums_for_evaluation
    assert any(b[0] >= 60 for _, _, b in expected)  # some boxes lie entirely right of the image
    torch.testing.assert_close(inst.scores, torch.tensor([s for s, _, _ in expected]))
    assert inst.pred_classes.tolist() == [c for _, c, _ in expected]
    torch.testing.assert_close(inst.pred_boxes.tensor, torch.tensor([b for _, _, b in expected]) * 2)


def test_deqdet_inference_autocast_is_cuda_only_and_checked():
    model = randomise(tiny_adamixer()).eval()
    inputs = [make_input(64, 96, seed=4)]
    with torch.no_grad():
        fp32 = model(inputs)[0]["instances"]
        model.inference_autocast = "float16"  # the official autocast is for CUDA: nothing changes on the CPU
        autocast = model(inputs)[0]["instances"]
    assert torch.equal(fp32.pred_boxes.tensor, autocast.pred_boxes.tensor) and torch.equal(fp32.scores, autocast.scores)
    with pytest.raises(ValueError, match=r"inference_autocast='fp16'; expected one of \[None, 'float16', 'bfloat16'\]"):
        DEQDet(backbone=model.backbone, neck=model.neck, queries=model.queries, decoder=model.decoder,
               criterion=model.criterion, inference_autocast="fp16")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_deqdet_backbone_runs_in_float16_at_inference_on_cuda():
    model = randomise(tiny_adamixer()).cuda().eval()
    model.inference_autocast = "float16"
    seen = []
    model.backbone.register_forward_hook(lambda m, i, out: seen.append({k: v.dtype for k, v in out.items()}))
    inputs = [make_input(64, 96, seed=4)]
    with torch.no_grad():
        images = model.preprocess_image(inputs)
        enc = model.encode(images)
        fp16 = model(inputs)[0]["instances"]
        model.inference_autocast = None
        fp32 = model(inputs)[0]["instances"]
    assert set(seen[0].values()) == {torch.float16} and set(seen[-1].values()) == {torch.float32}
    assert all(f.dtype == torch.float32 for f in enc.features)
    torch.testing.assert_close(fp16.scores, fp32.scores, atol=5e-3, rtol=0)
    model.train()
    seen.clear()
    model.encode(model.preprocess_image(inputs))
    assert set(seen[0].values()) == {torch.float32}  # training: no autocast


# ---------------------------------------------------------------------------- TOOD
def border_candidates():
    """Two class-0 candidates of one level: A (0.9) and B (0.6) of ``border_predictions``."""
    scores = torch.tensor([[0.9, 0.0], [0.6, 0.0]])
    boxes = torch.tensor([A, B])
    return [(scores, lambda idx: boxes[idx])]


def test_tood_nms_on_unclipped_boxes():
    """MMDetection's ``TOODHead`` never clips: IoU(A, B) = 200 / 1840 < 0.6, both kept, A unclipped.
    Clipped first (mmdet's ATSS, the class default) A becomes (95, 10, 100, 50) and suppresses B."""
    official = dense_detections((80, 100), border_candidates(), 0.05, 1000, 0.6, 100, clip_before_nms=False)
    torch.testing.assert_close(official.pred_boxes.tensor, torch.tensor([A, B]))
    torch.testing.assert_close(official.scores, torch.tensor([0.9, 0.6]))
    clipped = dense_detections((80, 100), border_candidates(), 0.05, 1000, 0.6, 100)
    torch.testing.assert_close(clipped.pred_boxes.tensor, torch.tensor([[95.0, 10.0, 100.0, 50.0]]))


def test_tood_head_and_detector_keep_boxes_beyond_the_border(monkeypatch):
    model = tiny_tood().eval()
    model.head.test_clip_before_nms, model.detectron2_postprocess = False, False
    monkeypatch.setattr(model.head, "candidates", lambda b, anchors, predictions: border_candidates())
    inputs = [{"image": torch.zeros(3, 80, 100, dtype=torch.uint8), "height": 160, "width": 200}]
    with torch.no_grad():
        inst = model(inputs)[0]["instances"]
    assert inst.image_size == (160, 200)
    torch.testing.assert_close(inst.pred_boxes.tensor, torch.tensor([A, B]) * 2)  # rescaled, never clipped
    torch.testing.assert_close(inst.scores, torch.tensor([0.9, 0.6]))

    model.detectron2_postprocess = True  # Detectron2's: clipped at the output size
    with torch.no_grad():
        inst = model(inputs)[0]["instances"]
    clipped = torch.tensor([[190.0, 20.0, 200.0, 100.0], [188.0, 20.0, 200.0, 100.0]])
    torch.testing.assert_close(inst.pred_boxes.tensor, clipped)


def test_tood_detector_drops_nothing_without_detectron2_postprocess(monkeypatch):
    """A detection left of the image (empty once clipped) survives, as in mmdet."""
    model = tiny_tood().eval()
    model.detectron2_postprocess = False
    r = Instances((80, 100))
    r.pred_boxes = Boxes(torch.tensor([[10.0, 10.0, 50.0, 40.0], [-30.0, 5.0, -2.0, 20.0]]))
    r.scores, r.pred_classes = torch.tensor([0.8, 0.7]), torch.tensor([1, 2])
    monkeypatch.setattr(model, "forward_inference", lambda images, features, predictions: [r])
    with torch.no_grad():
        inst = model([{"image": torch.zeros(3, 80, 100, dtype=torch.uint8)}])[0]["instances"]
    torch.testing.assert_close(inst.pred_boxes.tensor, r.pred_boxes.tensor.new_tensor([[10.0, 10.0, 50.0, 40.0],
                                                                                      [-30.0, 5.0, -2.0, 20.0]]))
    model.detectron2_postprocess = True
    with torch.no_grad():
        assert len(model([{"image": torch.zeros(3, 80, 100, dtype=torch.uint8)}])[0]["instances"]) == 1


# ---------------------------------------------------------------------------- the configs
def config(name):
    return LazyConfig.load(os.path.join(CONFIGS, name))


@pytest.mark.parametrize("name", ["co_dino/co_dino_5scale_r50_12ep.py", "co_dino/co_dino_5scale_lsj_r50_12ep.py",
                                  "co_deformable_detr/co_deformable_detr_r50_12ep.py", "co_dino/co_dino_r18_shapes.py"])
def test_co_detr_configs_clamp_before_soft_nms(name):
    det = config(name).model.detector
    assert det.clip_before_nms is True and det.detectron2_postprocess is False


def test_co_dino_config_soft_nms_settings():
    det = config("co_dino/co_dino_5scale_r50_12ep.py").model.detector
    assert (det.nms, det.nms_iou_threshold, det.nms_pre_topk, det.select_box_nums_for_evaluation) == (
        "soft_nms", 0.8, 900, 300)


@pytest.mark.parametrize("name", ["tood/tood_r50_fpn_1x.py", "tood/tood_r18_shapes.py"])
def test_tood_configs_never_clip(name):
    model = config(name).model
    assert model.head.test_clip_before_nms is False and model.detectron2_postprocess is False


@pytest.mark.parametrize("name, autocast", [("deqdet/deqdet_r50_1x.py", "float16"),
                                            ("deqdet/deqdet_r50_2x.py", "float16"),
                                            ("adamixer/adamixer_r50_1x.py", None)])
def test_adamixer_family_configs(name, autocast):
    model = config(name).model
    assert model.get("clip_before_nms", False) is False and model.detectron2_postprocess is False
    assert model.inference_autocast == autocast


@pytest.mark.parametrize("name, num", [("conditional_detr/conditional_detr_r50_50ep.py", 100),
                                       ("dab_detr/dab_detr_r50_50ep.py", 300), ("dn_detr/dn_detr_r50_50ep.py", 300)])
def test_single_scale_detr_configs_follow_the_official_post_process(name, num):
    """Official PostProcess: top 100 (Conditional DETR) / ``num_select`` 300 (DAB, DN-DETR), boxes
    scaled, none clipped or dropped."""
    model = config(name).model
    assert model.select_box_nums_for_evaluation == num and model.detectron2_postprocess is False


def test_dino_configs_keep_detrex_post_processing():
    model = config("dino/dino_r50_4scale_12ep.py").model
    assert "clip_before_nms" not in model and "detectron2_postprocess" not in model  # the class defaults
