"""Co-DINO sources: Sense-X/Co-DETR releases (mmdet 2.x, ``co-detr``) and the MMDetection 3
port (``mmdet-co-dino``), into ``configs/co_dino/co_dino_5scale_r50_12ep.py`` (or, with
``--drop-training-weights``, into ``configs/dino/dino_r50_5scale_12ep.py``: Co-DINO at inference
is DINO with Soft-NMS).

Key mapping (``D`` = ``detector.``, or nothing with ``--drop-training-weights``; [t] = training only):

- ``backbone.{conv1,bn1,layerN...}`` (mmdet ResNet, style="pytorch") -> ``D backbone.{stem,resN+1}``
  (see ``resnet.py``)
- ``neck.{convs,extra_convs}.k.conv.weight`` (mmcv ConvModule: no bias) / ``.gn.*`` ->
  ``D neck.*.conv.weight`` (+ a zero ``conv.bias``) / ``D neck.*.norm.*``
- ``query_head.transformer.level_embeds`` -> ``D transformer.level_embeds``
- ``query_head.transformer.{encoder,decoder}.layers.*`` (mmcv names) -> as for detrex
  (``dino.map_mmcv_transformer_layers``)
- ``query_head.transformer.decoder.ref_point_head.{0,2}`` -> ``D transformer.decoder.ref_point_head.layers.{0,1}``
- ``query_head.transformer.{decoder.norm,enc_output,enc_output_norm}`` -> ``D transformer.*``
- ``query_head.transformer.query_embed`` (content queries) -> ``D transformer.tgt_embed``
- ``query_head.cls_branches.i`` / ``reg_branches.i.{0,2,4}``, i < 6 -> ``D transformer.decoder.{class,bbox}_embed.i``;
  i = 6 (two-stage head) -> ``D transformer.enc_{class,bbox}_embed``
- ``query_head.label_embedding`` (mmdet 3: ``query_head.dn_generator.label_embedding``) ->
  ``D denoising.label_embedding`` [t]
- ``query_head.transformer.aux_pos_trans{,_norm}.k`` -> ``positive_queries.pos_trans{,_norm}.k`` [t]
- ``query_head.downsample.{0,1}`` (stride-128 level) -> ``downsample.{conv,norm}`` [t]
- ``rpn_head.{rpn_conv,rpn_cls,rpn_reg}`` (anchors ratio-major) ->
  ``aux_heads.0.rpn.rpn_head.{conv,objectness_logits,anchor_deltas}`` (size-major: channels permuted) [t]
- ``roi_head.0.bbox_head.{shared_fcs.0,shared_fcs.1,fc_cls,fc_reg}`` ->
  ``aux_heads.0.roi_heads.{box_head.fc1,box_head.fc2,box_predictor.cls_score,box_predictor.bbox_pred}`` [t]
- ``bbox_head.0.{cls,reg}_convs.0.{conv,gn}`` (ATSS) -> ``aux_heads.1.{cls,reg}_convs.{0,1}`` [t]
- ``bbox_head.0.{atss_cls,atss_reg,atss_centerness,scales.k.scale}`` -> ``aux_heads.1.*`` (same names) [t]

The class heads are already 80-way in the contiguous COCO order (mmdet's ``CocoDataset`` sorts
category ids), as are the RoI head's 81 logits (background last in both) and its 80 x 4
class-specific deltas. The RPN deltas use mmdet's stds (1, 1, 1, 1) and the RoI head's
(0.1, 0.1, 0.2, 0.2), which are Detectron2's ``Box2BoxTransform`` weights (1, 1, 1, 1) and
(10, 10, 5, 5) used by ``build_rcnn_aux_head``. Co-DINO's position embedding has temperature 20
and no offset, hence the config overrides. Co-Deformable-DETR checkpoints are recognised and
refused (no converter yet).
"""
from __future__ import annotations

import re
from typing import Dict, List, Mapping, Tuple

import torch
from torch import Tensor

from .core import (
    DroppedKey,
    KeyMapper,
    ShapeMismatchError,
    SourceNotImplementedError,
    iter_layer_indices,
    register_source,
)
from .dino import WB, map_mmcv_transformer_layers
from .resnet import map_resnet
from .rpn import map_mmdet_rpn_head

__all__ = ["convert_co_detr", "convert_mmdet_co_dino"]

CO_DINO_CONFIG = "configs/co_dino/co_dino_5scale_r50_12ep.py"
DINO_5SCALE_CONFIG = "configs/dino/dino_r50_5scale_12ep.py"
POSITION = ("position_embedding.temperature=20", "position_embedding.offset=0.0")
# Co-DINO's inference settings on a DINO config (configs/co_dino/models/co_dino_r50.py)
CO_DINO_AS_DINO = ("model.nms=soft_nms", "model.nms_iou_threshold=0.8", "model.nms_pre_topk=900",
                   "model.denoising=null")
RPN_SCALES, RPN_RATIOS = 3, 3  # octave_base_scale=4, scales_per_octave=3; ratios (0.5, 1, 2)


def _config_for(state_dict: Mapping[str, Tensor]) -> str:
    return CO_DINO_CONFIG if any(k.startswith("detector.") for k in state_dict) else DINO_5SCALE_CONFIG


def _overrides_for(state_dict: Mapping[str, Tensor]) -> Tuple[str, ...]:
    if _config_for(state_dict) == CO_DINO_CONFIG:
        return ()  # the Co-DINO config already has the official position embedding
    return tuple("model." + o for o in POSITION) + CO_DINO_AS_DINO


def _conv_gn(m: KeyMapper, src: str, dst: str) -> None:
    """mmcv ConvModule(conv, gn) -> codetr ConvGN(conv, norm); a bias-free conv gets a zero bias
    (identical output)."""
    weight = m.take(src + "conv.weight")
    m.put(dst + "conv.weight", weight)
    if m.has(src + "conv.bias"):
        m.move(src + "conv.bias", dst + "conv.bias")
    else:
        m.put(dst + "conv.bias", torch.zeros(weight.shape[0], dtype=weight.dtype))
    for p in ("weight", "bias"):
        m.move(f"{src}gn.{p}", f"{dst}norm.{p}")


def _training_only(m: KeyMapper, drop: bool, pattern: str, reason: str, fn) -> None:
    if drop:
        m.drop_matching(pattern, f"training only: {reason}")
    else:
        fn()


def _convert_co_dino(
    state_dict: Mapping[str, Tensor], drop_training_weights: bool, source: str, label_key: str
) -> Tuple[Dict[str, Tensor], List[DroppedKey]]:
    m = KeyMapper(state_dict, source)
    if any(k.startswith(("query_head.query_embedding.", "query_head.transformer.pos_trans.")) for k in m.keys()):
        raise SourceNotImplementedError(
            f"{source}: this is a Co-Deformable-DETR checkpoint (query_head.query_embedding / transformer.pos_trans); "
            "only Co-DINO checkpoints are converted so far"
        )
    det = "" if drop_training_weights else "detector."
    drop = drop_training_weights

    map_resnet(m, "backbone.", det + "backbone.")
    for group in ("convs", "extra_convs"):
        for i in iter_layer_indices(m.keys(), f"neck.{group}."):
            _conv_gn(m, f"neck.{group}.{i}.", f"{det}neck.{group}.{i}.")

    t = "query_head.transformer."
    m.move(t + "level_embeds", det + "transformer.level_embeds")
    num_dec = map_mmcv_transformer_layers(m, t, det + "transformer.")
    for i, j in ((0, 0), (2, 1)):
        for p in ("weight", "bias"):
            m.move(f"{t}decoder.ref_point_head.{i}.{p}", f"{det}transformer.decoder.ref_point_head.layers.{j}.{p}")
    m.rename_all(rf"query_head\.transformer\.(decoder\.norm|enc_output|enc_output_norm)\.{WB}",
                 det + r"transformer.\1.\2")
    m.move(t + "query_embed.weight", det + "transformer.tgt_embed.weight")
    for i in range(num_dec + 1):
        dst = f"{det}transformer.decoder." if i < num_dec else f"{det}transformer."
        cls, box = (f"class_embed.{i}.", f"bbox_embed.{i}.") if i < num_dec else ("enc_class_embed.", "enc_bbox_embed.")
        for p in ("weight", "bias"):
            m.move(f"query_head.cls_branches.{i}.{p}", dst + cls + p)
            for src_idx, layer in ((0, 0), (2, 1), (4, 2)):
                m.move(f"query_head.reg_branches.{i}.{src_idx}.{p}", f"{dst}{box}layers.{layer}.{p}")

    if drop:
        m.drop(label_key, "training only: denoising label embedding")
    else:
        m.move(label_key, "detector.denoising.label_embedding.weight")

    _training_only(m, drop, rf"query_head\.transformer\.aux_pos_trans(_norm)?\.\d+\.{WB}", "positive-query projections",
                   lambda: m.rename_all(rf"query_head\.transformer\.aux_pos_trans(_norm)?\.(\d+)\.{WB}",
                                        r"positive_queries.pos_trans\1.\2.\3"))
    _training_only(m, drop, rf"query_head\.downsample\.[01]\.{WB}", "extra pyramid level of the auxiliary heads",
                   lambda: [m.rename_all(rf"query_head\.downsample\.{i}\.{WB}", rf"downsample.{name}.\1")
                            for i, name in ((0, "conv"), (1, "norm"))])

    roi_heads = iter_layer_indices(m.keys(), "roi_head.")
    bbox_heads = iter_layer_indices(m.keys(), "bbox_head.")
    if m.match(r"rpn_head\..+"):
        def rpn():
            a = m.shape("rpn_head.rpn_cls.weight")[0]
            if a != RPN_SCALES * RPN_RATIOS:
                raise ShapeMismatchError(
                    f"{source}: rpn_head.rpn_cls.weight has {a} anchors per position, expected "
                    f"{RPN_SCALES * RPN_RATIOS} (3 scales x 3 ratios)", ["rpn_head.rpn_cls.weight"])
            map_mmdet_rpn_head(m, "rpn_head.", "aux_heads.0.rpn.rpn_head.", RPN_SCALES, RPN_RATIOS)
        _training_only(m, drop, r"rpn_head\..+", "auxiliary Faster R-CNN head (RPN)", rpn)
    for k in roi_heads:
        src, dst = f"roi_head.{k}.bbox_head.", f"aux_heads.{k}.roi_heads."
        pairs = (("shared_fcs.0", "box_head.fc1"), ("shared_fcs.1", "box_head.fc2"),
                 ("fc_cls", "box_predictor.cls_score"), ("fc_reg", "box_predictor.bbox_pred"))
        _training_only(m, drop, rf"roi_head\.{k}\..+", "auxiliary Faster R-CNN head (RoI)",
                       lambda: [m.move(f"{src}{a}.{p}", f"{dst}{b}.{p}") for a, b in pairs for p in ("weight", "bias")])
    for j in bbox_heads:
        src, dst = f"bbox_head.{j}.", f"aux_heads.{len(roi_heads) + j}."

        def atss(src=src, dst=dst):
            for tower in ("cls_convs", "reg_convs"):
                m.move(f"{src}{tower}.0.conv.weight", f"{dst}{tower}.0.weight")
                for p in ("weight", "bias"):
                    m.move(f"{src}{tower}.0.gn.{p}", f"{dst}{tower}.1.{p}")
            m.rename_all(rf"{re.escape(src)}(atss_cls|atss_reg|atss_centerness)\.{WB}", dst + r"\1.\2")
            m.rename_all(rf"{re.escape(src)}scales\.(\d+)\.scale", dst + r"scales.\1.scale")

        _training_only(m, drop, rf"bbox_head\.{j}\..+", "auxiliary ATSS head", atss)
    return m.finish()


@register_source(
    "co-detr",
    "Sense-X/Co-DETR releases, Co-DINO R50 (co_dino_5scale_r50_1x_coco.pth, ...; mmdet 2.x)",
    configs=(CO_DINO_CONFIG, DINO_5SCALE_CONFIG),
    select_config=_config_for,
    overrides_for=_overrides_for,
)
def convert_co_detr(
    state_dict: Mapping[str, Tensor], drop_training_weights: bool = False
) -> Tuple[Dict[str, Tensor], List[DroppedKey]]:
    return _convert_co_dino(state_dict, drop_training_weights, "co-detr", "query_head.label_embedding.weight")


@register_source(
    "mmdet-co-dino",
    "MMDetection 3 projects/CO-DETR weights (co_dino_5scale_r50_1x_coco-7481f903.pth, ...)",
    configs=(CO_DINO_CONFIG, DINO_5SCALE_CONFIG),
    select_config=_config_for,
    overrides_for=_overrides_for,
)
def convert_mmdet_co_dino(
    state_dict: Mapping[str, Tensor], drop_training_weights: bool = False
) -> Tuple[Dict[str, Tensor], List[DroppedKey]]:
    return _convert_co_dino(
        state_dict, drop_training_weights, "mmdet-co-dino", "query_head.dn_generator.label_embedding.weight"
    )
