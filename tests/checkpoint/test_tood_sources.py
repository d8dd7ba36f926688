"""mmdet-tood / tood-official: exact-format TOOD-R50-FPN state dicts (ckpt_source_formats)
convert into configs/tood/tood_r50_fpn_1x.py; values land where the source uses them."""
import os

import pytest
import torch
import torch.nn.functional as F
from detectron2.config import LazyConfig, instantiate

from codetr.checkpoint import UnknownKeyError, convert

from ckpt_source_formats import atss, meta_shapes, tood

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs/tood/tood_r50_fpn_1x.py")
SOURCES = {"mmdet-tood": False, "tood-official": True}


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_exact_format_converts_to_tood_config(source):
    sd = tood(values="zeros", official=SOURCES[source])
    result = convert(source, sd, target=meta_shapes(CONFIG))
    assert {d.key for d in result.dropped} == {k for k in sd if k.endswith("num_batches_tracked")}


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_tood_values_land_where_the_source_uses_them(source):
    official = SOURCES[source]
    sd = tood(values="random", seed=6, official=official, stacked_convs=2, feat=32)
    out = convert(source, sd).state_dict
    pairs = {
        "backbone.fpn_lateral3.weight": "neck.lateral_convs.0.conv.weight",
        "backbone.fpn_output5.bias": "neck.fpn_convs.2.conv.bias",
        "backbone.top_block.p6.weight": "neck.fpn_convs.3.conv.weight",
        "backbone.top_block.p7.bias": "neck.fpn_convs.4.conv.bias",
        "backbone.bottom_up.res3.1.conv2.norm.running_var": "backbone.layer2.1.bn2.running_var",
        "head.inter_convs.1.0.weight": "bbox_head.inter_convs.1.conv.weight",
        "head.inter_convs.0.1.bias": "bbox_head.inter_convs.0.gn.bias",
        "head.reg_decomp.layer_attention.2.weight":
            "bbox_head.reg_decomp." + ("la_conv2" if official else "layer_attention.2") + ".weight",
        "head.cls_decomp.reduction_conv.weight": "bbox_head.cls_decomp.reduction_conv.conv.weight",
        "head.cls_decomp.norm.weight": "bbox_head.cls_decomp.reduction_conv.gn.weight",
        "head.cls_prob_module.2.bias": "bbox_head." + ("cls_prob_conv2" if official else "cls_prob_module.2") + ".bias",
        "head.reg_offset_module.0.weight":
            "bbox_head." + ("reg_offset_conv1" if official else "reg_offset_module.0") + ".weight",
        "head.scales.4.scale": "bbox_head.scales.4.scale",
    }
    for ours, theirs in pairs.items():
        assert torch.equal(out[ours], sd[theirs]), ours


def test_tood_head_with_deformable_convs_is_refused():
    sd = tood(values="zeros", stacked_convs=2, feat=32)
    sd["bbox_head.inter_convs.0.conv.conv_offset.weight"] = torch.zeros(27, 32, 3, 3)
    with pytest.raises(UnknownKeyError, match=r"inter_convs\.0\.conv\.conv_offset\.weight"):
        convert("mmdet-tood", sd)


def test_converted_fpn_computes_mmdet_fpn():
    """Our FPN (Detectron2 FPN + P6/P7 top block) loaded from the converted tensors equals
    mmdet's FPN (start_level=1, add_extra_convs="on_output", no ReLU before P7) evaluated
    from the source tensors on the same C3..C5."""
    sd = tood(values="random", seed=7)
    out = convert("mmdet-tood", sd).state_dict
    backbone = instantiate(LazyConfig.load(CONFIG).model.backbone).eval()
    backbone.load_state_dict({k[len("backbone."):]: v for k, v in out.items() if k.startswith("backbone.")})
    x = torch.randn(1, 3, 128, 96)
    with torch.no_grad():
        ours = backbone(x)
        c = backbone.bottom_up(x)
        def conv(name, v, pad=0, stride=1):
            return F.conv2d(v, sd[f"neck.{name}.conv.weight"], sd[f"neck.{name}.conv.bias"], stride, pad)

        lat = [conv(f"lateral_convs.{i}", c[f"res{i + 3}"]) for i in range(3)]
        for i in (2, 1):  # top-down: nearest x2 upsampling, sum
            lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], size=lat[i - 1].shape[-2:], mode="nearest")
        outs = [conv(f"fpn_convs.{i}", lat[i], 1) for i in range(3)]
        p6 = conv("fpn_convs.3", outs[2], 1, 2)
        p7 = conv("fpn_convs.4", p6, 1, 2)
    for name, expected in zip(["p3", "p4", "p5", "p6", "p7"], outs + [p6, p7]):
        torch.testing.assert_close(ours[name], expected, atol=1e-4, rtol=1e-4)


ATSS_CONFIG = os.path.join(REPO, "configs/atss/atss_r50_fpn_1x.py")


def test_mmdet_atss_exact_format_converts_to_the_atss_config_and_loads():
    sd = atss(values="zeros")
    result = convert("mmdet-atss", sd, target=meta_shapes(ATSS_CONFIG))
    assert {d.key for d in result.dropped} == {k for k in sd if k.endswith("num_batches_tracked")}
    sd = atss(values="random", seed=7)
    out = convert("mmdet-atss", sd).state_dict
    model = instantiate(LazyConfig.load(ATSS_CONFIG).model)
    model.load_state_dict(out, strict=True)
    pairs = {
        "backbone.fpn_lateral4.weight": "neck.lateral_convs.1.conv.weight",
        "backbone.top_block.p7.weight": "neck.fpn_convs.4.conv.weight",
        "head.cls_convs.0.weight": "bbox_head.cls_convs.0.conv.weight",
        "head.cls_convs.9.weight": "bbox_head.cls_convs.3.conv.weight",
        "head.reg_convs.4.bias": "bbox_head.reg_convs.1.gn.bias",
        "head.reg_convs.10.weight": "bbox_head.reg_convs.3.gn.weight",
        "head.atss_centerness.bias": "bbox_head.atss_centerness.bias",
        "head.atss_cls.weight": "bbox_head.atss_cls.weight",
        "head.scales.3.scale": "bbox_head.scales.3.scale",
    }
    msd = model.state_dict()
    for ours, theirs in pairs.items():
        assert torch.equal(msd[ours], sd[theirs]), ours
    # the converted tower computes mmdet's ConvModule stack (conv, GN, ReLU) x 4
    head = model.head
    x = torch.randn(1, 256, 5, 6)
    ref = x
    for i in range(4):
        ref = F.relu(F.group_norm(F.conv2d(ref, sd[f"bbox_head.reg_convs.{i}.conv.weight"], padding=1), 32,
                                  sd[f"bbox_head.reg_convs.{i}.gn.weight"], sd[f"bbox_head.reg_convs.{i}.gn.bias"]))
    torch.testing.assert_close(head.reg_convs(x), ref, rtol=1e-4, atol=1e-5)
