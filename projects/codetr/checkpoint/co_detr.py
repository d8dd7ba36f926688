"""Co-DETR sources: Sense-X/Co-DETR releases (mmdet 2.x, ``co-detr``: Co-DINO and
Co-Deformable-DETR) and the MMDetection 3 port (``mmdet-co-dino``: Co-DINO only).

- Co-DINO -> ``configs/co_dino/co_dino_5scale_r50_12ep.py`` (or, with
  ``--drop-training-weights``, ``configs/dino/dino_r50_5scale_12ep.py``: Co-DINO at inference is
  DINO with Soft-NMS);
- Co-Deformable-DETR (recognised by ``query_head.query_embedding`` / ``transformer.pos_trans``)
  -> ``configs/co_deformable_detr/co_deformable_detr_r50_12ep.py`` (or, with
  ``--drop-training-weights``, ``configs/dino/dino_r50_4scale_12ep.py`` with overrides that turn
  it into Deformable-DETR++: ``pos_trans`` query positions, no final decoder norm, ...).

Key mapping (``D`` = ``detector.``, or nothing with ``--drop-training-weights``; [t] = training only):

- ``backbone.{conv1,bn1,layerN...}`` (mmdet ResNet, style="pytorch") -> ``D backbone.{stem,resN+1}``
  (see ``resnet.py``)
- ``neck.{convs,extra_convs}.k.conv.weight`` (mmcv ConvModule: no bias) / ``.gn.*`` ->
  ``D neck.*.conv.weight`` (+ a zero ``conv.bias``) / ``D neck.*.norm.*``
- ``query_head.transformer.level_embeds`` -> ``D transformer.level_embeds``
- ``query_head.transformer.{encoder,decoder}.layers.*`` (mmcv names) -> as for detrex
  (``dino.map_mmcv_transformer_layers``)
- ``query_head.transformer.{enc_output,enc_output_norm}`` -> ``D transformer.*``
- ``query_head.cls_branches.i`` / ``reg_branches.i.{0,2,4}``, i < 6 -> ``D transformer.decoder.{class,bbox}_embed.i``;
  i = 6 (two-stage head) -> ``D transformer.enc_{class,bbox}_embed``
- ``query_head.downsample.{0,1}`` (stride-128 level) -> ``downsample.{conv,norm}`` [t]
- ``rpn_head.{rpn_conv,rpn_cls,rpn_reg}`` (anchors ratio-major) ->
  ``aux_heads.0.rpn.rpn_head.{conv,objectness_logits,anchor_deltas}`` (size-major: channels permuted) [t]
- ``roi_head.0.bbox_head.{shared_fcs.0,shared_fcs.1,fc_cls,fc_reg}`` ->
  ``aux_heads.0.roi_heads.{box_head.fc1,box_head.fc2,box_predictor.cls_score,box_predictor.bbox_pred}`` [t]
- ``bbox_head.0.{cls,reg}_convs.0.{conv,gn}`` (ATSS) -> ``aux_heads.1.{cls,reg}_convs.{0,1}`` [t]
- ``bbox_head.0.{atss_cls,atss_reg,atss_centerness,scales.k.scale}`` -> ``aux_heads.1.*`` (same names) [t]

Co-DINO only:

- ``query_head.transformer.decoder.ref_point_head.{0,2}`` -> ``D transformer.decoder.ref_point_head.layers.{0,1}``
- ``query_head.transformer.decoder.norm`` -> ``D transformer.decoder.norm``
- ``query_head.transformer.query_embed`` (content queries) -> ``D transformer.tgt_embed``
- ``query_head.label_embedding`` (mmdet 3: ``query_head.dn_generator.label_embedding``) ->
  ``D denoising.label_embedding`` [t]
- ``query_head.transformer.aux_pos_trans{,_norm}.k`` (512 -> 256) -> ``positive_queries.pos_trans{,_norm}.k`` [t]

Co-Deformable-DETR only (no ``ref_point_head``, no decoder ``norm``, no denoising):

- ``query_head.query_embedding`` (300, 256) (mixed selection: content queries) -> ``D transformer.tgt_embed``
- ``query_head.transformer.{pos_trans,pos_trans_norm}`` (512 -> 512) -> ``D transformer.*``
- ``query_head.transformer.aux_pos_trans{,_norm}.k`` (512 -> 512) -> ``positive_queries.pos_trans{,_norm}.k`` [t]
- ``query_head.transformer.pos_feats_trans.k`` / ``pos_feats_norm.k`` ->
  ``positive_queries.feat_trans.k`` / ``feat_trans_norm.k`` [t]
- ``query_head.transformer.head_pos_embed.weight`` (2, 1) -> ``positive_queries.head_pos_embed.weight`` [t]

The class heads are already 80-way in the contiguous COCO order (mmdet's ``CocoDataset`` sorts
category ids; no 91 -> 80 remapping is needed, unlike the DINO repository's releases), as are
the RoI head's 81 logits (background last in both) and its 80 x 4 class-specific deltas. The RPN
deltas use mmdet's stds (1, 1, 1, 1) and the RoI head's (0.1, 0.1, 0.2, 0.2), which are
Detectron2's ``Box2BoxTransform`` weights (1, 1, 1, 1) and (10, 10, 5, 5) used by
``build_rcnn_aux_head``. Co-DINO's position embedding has temperature 20 and no offset, hence
the config overrides; Co-Deformable-DETR's (temperature 10000, offset -0.5) is our default.
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
CO_DEFORMABLE_CONFIG = "configs/co_deformable_detr/co_deformable_detr_r50_12ep.py"
DINO_5SCALE_CONFIG = "configs/dino/dino_r50_5scale_12ep.py"
DINO_4SCALE_CONFIG = "configs/dino/dino_r50_4scale_12ep.py"
POSITION = ("position_embedding.temperature=20", "position_embedding.offset=0.0")
# Co-DINO's inference settings on a DINO config (configs/co_dino/models/co_dino_r50.py)
CO_DINO_AS_DINO = ("model.nms=soft_nms", "model.nms_iou_threshold=0.8", "model.nms_pre_topk=900",
                   "model.denoising=null")
# Co-Deformable-DETR's detector on a DINO 4-scale config (configs/co_deformable_detr/...)
CO_DEFORMABLE_AS_DINO = (
    "model.num_queries=300", "model.denoising=null", "model.select_box_nums_for_evaluation=100",
    "model.transformer.select_by=first_class", "model.transformer.enc_outputs=all",
    "model.transformer.decoder.ref_point_head=False",
    "model.transformer.decoder.post_norm=False",
    "model.criterion.binary_enc_loss=True", "model.criterion.weight_class=2.0",
)
RPN_SCALES, RPN_RATIOS = 3, 3  # octave_base_scale=4, scales_per_octave=3; ratios (0.5, 1, 2)
CO_DEFORMABLE_KEYS = ("query_head.query_embedding.", "query_head.transformer.pos_trans.")


def _is_co_deformable(keys) -> bool:
    return any(k.startswith(CO_DEFORMABLE_KEYS) for k in keys)


def _config_for(state_dict: Mapping[str, Tensor]) -> str:
    deformable = any(k.endswith("transformer.pos_trans.weight") for k in state_dict)
    if any(k.startswith("detector.") for k in state_dict):
        return CO_DEFORMABLE_CONFIG if deformable else CO_DINO_CONFIG
    return DINO_4SCALE_CONFIG if deformable else DINO_5SCALE_CONFIG


def _overrides_for(state_dict: Mapping[str, Tensor]) -> Tuple[str, ...]:
    config = _config_for(state_dict)
    if config in (CO_DINO_CONFIG, CO_DEFORMABLE_CONFIG):
        return ()  # these configs have the official position embeddings and settings
    if config == DINO_4SCALE_CONFIG:
        return CO_DEFORMABLE_AS_DINO  # Co-Deformable-DETR's position embedding is the DINO default
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


def _convert_co_detr(
    state_dict: Mapping[str, Tensor], drop_training_weights: bool, source: str, label_key: str,
    allow_co_deformable: bool = True,
) -> Tuple[Dict[str, Tensor], List[DroppedKey]]:
    m = KeyMapper(state_dict, source)
    deformable = _is_co_deformable(m.keys())
    if deformable and not allow_co_deformable:
        raise SourceNotImplementedError(
            f"{source}: this is a Co-Deformable-DETR checkpoint (query_head.query_embedding / transformer.pos_trans), "
            "which this source does not have (the MMDetection 3 port is Co-DINO only); Sense-X/Co-DETR's "
            "Co-Deformable-DETR releases convert with --source co-detr"
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
    m.rename_all(rf"query_head\.transformer\.(enc_output|enc_output_norm)\.{WB}", det + r"transformer.\1.\2")
    if deformable:  # Deformable-DETR++: pos_trans query positions, mixed-selection content queries
        embed_dim = m.shape(t + "level_embeds")[-1]
        m.check_shape(t + "pos_trans.weight", (2 * embed_dim, 2 * embed_dim), "Linear 2C -> 2C")
        m.rename_all(rf"query_head\.transformer\.(pos_trans|pos_trans_norm)\.{WB}", det + r"transformer.\1.\2")
        m.move("query_head.query_embedding.weight", det + "transformer.tgt_embed.weight")
    else:
        for i, j in ((0, 0), (2, 1)):
            for p in ("weight", "bias"):
                m.move(f"{t}decoder.ref_point_head.{i}.{p}", f"{det}transformer.decoder.ref_point_head.layers.{j}.{p}")
        m.rename_all(rf"query_head\.transformer\.decoder\.norm\.{WB}", det + r"transformer.decoder.norm.\1")
        m.move(t + "query_embed.weight", det + "transformer.tgt_embed.weight")
    for i in range(num_dec + 1):
        dst = f"{det}transformer.decoder." if i < num_dec else f"{det}transformer."
        cls, box = (f"class_embed.{i}.", f"bbox_embed.{i}.") if i < num_dec else ("enc_class_embed.", "enc_bbox_embed.")
        for p in ("weight", "bias"):
            m.move(f"query_head.cls_branches.{i}.{p}", dst + cls + p)
            for src_idx, layer in ((0, 0), (2, 1), (4, 2)):
                m.move(f"query_head.reg_branches.{i}.{src_idx}.{p}", f"{dst}{box}layers.{layer}.{p}")

    if not deformable:  # Co-Deformable-DETR has no denoising
        if drop:
            m.drop(label_key, "training only: denoising label embedding")
        else:
            m.move(label_key, "detector.denoising.label_embedding.weight")

    _training_only(m, drop, rf"query_head\.transformer\.aux_pos_trans(_norm)?\.\d+\.{WB}", "positive-query projections",
                   lambda: m.rename_all(rf"query_head\.transformer\.aux_pos_trans(_norm)?\.(\d+)\.{WB}",
                                        r"positive_queries.pos_trans\1.\2.\3"))
    if deformable:
        _training_only(m, drop, rf"query_head\.transformer\.pos_feats_(trans|norm)\.\d+\.{WB}",
                       "positive-query feature projections",
                       lambda: [m.rename_all(rf"query_head\.transformer\.pos_feats_{a}\.(\d+)\.{WB}",
                                             rf"positive_queries.{b}.\1.\2")
                                for a, b in (("trans", "feat_trans"), ("norm", "feat_trans_norm"))])
        if m.has(t + "head_pos_embed.weight"):
            _training_only(m, drop, re.escape(t + "head_pos_embed.weight"), "per-head positive-query position",
                           lambda: m.move(t + "head_pos_embed.weight", "positive_queries.head_pos_embed.weight"))
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
    "Sense-X/Co-DETR releases, Co-DINO and Co-Deformable-DETR R50 (co_dino_5scale_r50_1x_coco.pth, "
    "co_deformable_detr_r50_1x_coco.pth, ...; mmdet 2.x)",
    configs=(CO_DINO_CONFIG, DINO_5SCALE_CONFIG, CO_DEFORMABLE_CONFIG, DINO_4SCALE_CONFIG),
    select_config=_config_for,
    overrides_for=_overrides_for,
)
def convert_co_detr(
    state_dict: Mapping[str, Tensor], drop_training_weights: bool = False
) -> Tuple[Dict[str, Tensor], List[DroppedKey]]:
    return _convert_co_detr(state_dict, drop_training_weights, "co-detr", "query_head.label_embedding.weight")


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
    return _convert_co_detr(
        state_dict, drop_training_weights, "mmdet-co-dino", "query_head.dn_generator.label_embedding.weight",
        allow_co_deformable=False,
    )
