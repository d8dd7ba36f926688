"""TOOD sources: MMDetection's TOOD (``mmdet-tood``, mmdet 2.x and 3.x share the names) and the
fcjian/TOOD releases (``tood-official``, an mmdet 2.x fork with older head names), into
``configs/tood/tood_r50_fpn_1x.py``; MMDetection's ATSS (``mmdet-atss``, its baseline, the same
backbone and neck) into ``configs/atss/atss_r50_fpn_1x.py``.

Key mapping:

- ``backbone.{conv1,bn1,layerN...}`` (mmdet ResNet, style="pytorch") -> ``backbone.bottom_up.{stem,resN+1}``
- ``neck.lateral_convs.i.conv`` (mmdet FPN, start_level=1) -> ``backbone.fpn_lateral{i+3}``
- ``neck.fpn_convs.i.conv``, i < 3 -> ``backbone.fpn_output{i+3}``; i = 3, 4 (``add_extra_convs="on_output"``)
  -> ``backbone.top_block.p6``, ``backbone.top_block.p7``
- ``bbox_head.inter_convs.i.{conv,gn}`` (ConvModule) -> ``head.inter_convs.i.{0,1}``
- ``bbox_head.{cls,reg}_decomp.layer_attention.{0,2}`` (fcjian/TOOD: ``la_conv1``, ``la_conv2``) ->
  ``head.{cls,reg}_decomp.layer_attention.{0,2}``
- ``bbox_head.{cls,reg}_decomp.reduction_conv.{conv,gn}`` -> ``head.{cls,reg}_decomp.{reduction_conv,norm}``
- ``bbox_head.{tood_cls,tood_reg}`` -> ``head.{tood_cls,tood_reg}``
- ``bbox_head.cls_prob_module.{0,2}`` / ``reg_offset_module.{0,2}`` (fcjian/TOOD: ``cls_prob_conv{1,2}`` /
  ``reg_offset_conv{1,2}``) -> ``head.cls_prob_module.{0,2}`` / ``head.reg_offset_module.{0,2}``
- ``bbox_head.scales.k.scale`` -> ``head.scales.k.scale``
- ATSS: ``bbox_head.{cls,reg}_convs.i.{conv,gn}`` (ConvModule) -> ``head.{cls,reg}_convs.{3i,3i+1}``
  (one ``nn.Sequential`` of conv, GN, ReLU blocks), ``bbox_head.{atss_cls,atss_reg,atss_centerness}``
  -> ``head.*``, ``bbox_head.scales.k.scale`` -> ``head.scales.k.scale``

The classification conv is 80-way in the contiguous COCO order; TOOD has one anchor per
position, so no anchor reordering. Heads with deformable convolutions (``num_dcn > 0``) have
extra ``conv_offset`` keys and are refused as unknown keys. Every weight is used at inference:
``--drop-training-weights`` drops nothing.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Tuple

from torch import Tensor

from .core import DroppedKey, KeyMapper, iter_layer_indices, register_source
from .dino import WB
from .resnet import map_resnet

__all__ = ["convert_mmdet_atss", "convert_mmdet_tood", "convert_tood_official"]

TOOD_CONFIG = "configs/tood/tood_r50_fpn_1x.py"
ATSS_CONFIG = "configs/atss/atss_r50_fpn_1x.py"


def _resnet_fpn(m: KeyMapper) -> None:
    """mmdet ResNet + FPN (start_level=1, extra convs "on_output") -> Detectron2 FPN names."""
    map_resnet(m, "backbone.", "backbone.bottom_up.")
    lateral = iter_layer_indices(m.keys(), "neck.lateral_convs.")
    first_stage = 6 - len(lateral)  # the last input level is res5
    for i in lateral:
        m.rename_all(rf"neck\.lateral_convs\.{i}\.conv\.{WB}", rf"backbone.fpn_lateral{first_stage + i}.\1")
    for i in iter_layer_indices(m.keys(), "neck.fpn_convs."):
        dst = f"fpn_output{first_stage + i}" if i < len(lateral) else f"top_block.p{6 + i - len(lateral)}"
        m.rename_all(rf"neck\.fpn_convs\.{i}\.conv\.{WB}", rf"backbone.{dst}.\1")


def _convert_tood(
    state_dict: Mapping[str, Tensor], source: str, official: bool
) -> Tuple[Dict[str, Tensor], List[DroppedKey]]:
    m = KeyMapper(state_dict, source)
    _resnet_fpn(m)

    h = r"bbox_head\."
    m.rename_all(h + r"inter_convs\.(\d+)\.conv\.weight", r"head.inter_convs.\1.0.weight")
    m.rename_all(h + rf"inter_convs\.(\d+)\.gn\.{WB}", r"head.inter_convs.\1.1.\2")
    for dec in ("cls_decomp", "reg_decomp"):
        if official:
            for src, dst in (("la_conv1", 0), ("la_conv2", 2)):
                m.rename_all(h + rf"{dec}\.{src}\.{WB}", rf"head.{dec}.layer_attention.{dst}.\1")
        else:
            m.rename_all(h + rf"{dec}\.layer_attention\.([02])\.{WB}", rf"head.{dec}.layer_attention.\1.\2")
        m.move(f"bbox_head.{dec}.reduction_conv.conv.weight", f"head.{dec}.reduction_conv.weight")
        m.rename_all(h + rf"{dec}\.reduction_conv\.gn\.{WB}", rf"head.{dec}.norm.\1")
    m.rename_all(h + rf"(tood_cls|tood_reg)\.{WB}", r"head.\1.\2")
    if official:
        for src, dst in (("cls_prob_conv1", "cls_prob_module.0"), ("cls_prob_conv2", "cls_prob_module.2"),
                         ("reg_offset_conv1", "reg_offset_module.0"), ("reg_offset_conv2", "reg_offset_module.2")):
            m.rename_all(h + rf"{src}\.{WB}", rf"head.{dst}.\1")
    else:
        m.rename_all(h + rf"(cls_prob_module|reg_offset_module)\.([02])\.{WB}", r"head.\1.\2.\3")
    m.rename_all(h + r"scales\.(\d+)\.scale", r"head.scales.\1.scale")
    return m.finish()


@register_source(
    "mmdet-tood",
    "MMDetection TOOD weights (tood_r50_fpn_1x_coco_*.pth; mmdet 2.x or 3.x)",
    configs=(TOOD_CONFIG,),
)
def convert_mmdet_tood(
    state_dict: Mapping[str, Tensor], drop_training_weights: bool = False
) -> Tuple[Dict[str, Tensor], List[DroppedKey]]:
    return _convert_tood(state_dict, "mmdet-tood", official=False)


@register_source(
    "tood-official",
    "fcjian/TOOD releases (README model zoo; mmdet 2.x fork with la_conv / cls_prob_conv head names)",
    configs=(TOOD_CONFIG,),
)
def convert_tood_official(
    state_dict: Mapping[str, Tensor], drop_training_weights: bool = False
) -> Tuple[Dict[str, Tensor], List[DroppedKey]]:
    return _convert_tood(state_dict, "tood-official", official=True)


@register_source(
    "mmdet-atss",
    "MMDetection ATSS weights (atss_r50_fpn_1x_coco_*.pth; mmdet 2.x or 3.x)",
    configs=(ATSS_CONFIG,),
)
def convert_mmdet_atss(
    state_dict: Mapping[str, Tensor], drop_training_weights: bool = False
) -> Tuple[Dict[str, Tensor], List[DroppedKey]]:
    m = KeyMapper(state_dict, "mmdet-atss")
    _resnet_fpn(m)
    h = r"bbox_head\."
    m.rename_all(h + r"(cls_convs|reg_convs)\.(\d+)\.conv\.weight", lambda x: f"head.{x[1]}.{3 * int(x[2])}.weight")
    m.rename_all(h + rf"(cls_convs|reg_convs)\.(\d+)\.gn\.{WB}", lambda x: f"head.{x[1]}.{3 * int(x[2]) + 1}.{x[3]}")
    m.rename_all(h + rf"(atss_cls|atss_reg|atss_centerness)\.{WB}", r"head.\1.\2")
    m.rename_all(h + r"scales\.(\d+)\.scale", r"head.scales.\1.scale")
    return m.finish()
