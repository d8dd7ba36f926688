"""ATSS detector: registration, a training step whose losses are the head's on the backbone's
pyramid, inference in original image coordinates, and the shapes config equal to TOOD's but for
the head."""
import os

import torch
from detectron2.config import LazyConfig
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.modeling.meta_arch.dense_detector import DenseDetector

from codetr.modeling.meta_arch import ATSS, TOOD, OneStageDetector

from support.one_stage import one_stage_batch, random_input, tiny_atss

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def test_registered():
    assert META_ARCH_REGISTRY.get("ATSS") is ATSS
    assert issubclass(ATSS, OneStageDetector) and issubclass(ATSS, DenseDetector)
    assert issubclass(TOOD, OneStageDetector) and not issubclass(ATSS, TOOD)


def test_training_losses_are_the_head_losses_on_the_pyramid():
    model = tiny_atss().train()
    inputs = one_stage_batch()
    losses = model(inputs)
    assert set(losses) == {"loss_cls", "loss_bbox", "loss_centerness"}
    assert all(torch.isfinite(v) for v in losses.values()) and losses["loss_bbox"] > 0
    # the same losses from the head's own call on the backbone's pyramid of the padded batch
    images = model.preprocess_image(inputs)
    features = model.backbone(images.tensor)
    gts = [x["instances"] for x in inputs]
    expected, _ = model.head(images, features, gts)
    for k in losses:
        torch.testing.assert_close(losses[k], expected[k])
    assert images.tensor.shape[-2:] == (64, 96)  # padded to a multiple of 32
    sum(losses.values()).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []


def test_bfloat16_autocast_training_step():
    model = tiny_atss().train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model(one_stage_batch())
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()


def test_inference_in_original_image_coordinates():
    model = tiny_atss()
    with torch.no_grad():  # raise the class scores above the 0.05 threshold
        model.head.atss_cls.bias.fill_(1.0)
    model.eval()
    inputs = [random_input(64, 96, [], [], height=128, width=192), random_input(64, 80, [], [])]
    with torch.no_grad():
        out = model(inputs)
        images = model.preprocess_image(inputs)
        raw = model.head(images, model.backbone(images.tensor))
    first = out[0]["instances"]
    assert first.image_size == (128, 192) and 0 < len(first) <= 100
    assert set(first.get_fields()) == {"pred_boxes", "scores", "pred_classes"}
    assert first.scores.tolist() == sorted(first.scores.tolist(), reverse=True)
    box = first.pred_boxes.tensor
    assert (box >= 0).all() and (box[:, 0::2] <= 192).all() and (box[:, 1::2] <= 128).all()
    torch.testing.assert_close(box, raw[0].pred_boxes.tensor * 2)
    torch.testing.assert_close(first.scores, raw[0].scores)
    assert out[1]["instances"].image_size == (64, 80)


def test_shapes_config_is_tood_s_but_for_the_head():
    """A fair comparison: every setting but the head (and the output folder) is TOOD's."""
    def flat(cfg, prefix=""):
        out = {}
        for k, v in cfg.items():
            if hasattr(v, "items"):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[prefix + k] = v
        return out

    load = lambda name: flat(LazyConfig.load(os.path.join(REPO, name)))  # noqa: E731
    atss, tood = load("configs/atss/atss_r18_shapes.py"), load("configs/tood/tood_r18_shapes.py")
    differ = {k for k in set(atss) | set(tood) if atss.get(k, "<absent>") != tood.get(k, "<absent>")}
    # (the evaluator writes into train.output_dir)
    assert {k for k in differ if not k.startswith("model.head.")} == {"model._target_", "train.output_dir",
                                                                      "dataloader.evaluator.output_dir"}
    assert atss["model.head.stacked_convs"] == tood["model.head.stacked_convs"] == 4
    for key in ("num_classes", "in_channels", "feat_channels", "anchor_scale", "test_score_thresh", "test_nms_thresh"):
        assert atss[f"model.head.{key}"] == tood[f"model.head.{key}"], key
