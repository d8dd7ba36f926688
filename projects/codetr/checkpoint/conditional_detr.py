"""Single-scale DETR family sources: Conditional DETR, DAB-DETR and DN-DETR (official releases
and detrex), into ``configs/conditional_detr``, ``configs/dab_detr``, ``configs/dn_detr``.

This project's layers keep the official attribute names, so the official sources mostly move
prefixes (``i``: layer index; ``P``: a decoder projection ``sa_{q,k}{content,pos}_proj``,
``sa_v_proj``, ``ca_{q,k}{content,pos}_proj``, ``ca_v_proj``, ``ca_qpos_sine_proj``):

===================================================  ==============================================
official (Atten4Vis/ConditionalDETR, DAB-DETR,        codetr
DN-DETR ``models/DN_DAB_DETR``)
===================================================  ==============================================
``backbone.0.body.*`` (torchvision, FrozenBN)         ``backbone.{stem,res2..5}.*`` (``resnet.py``)
``input_proj.*`` (1x1 conv 2048 -> 256)               ``neck.proj.*``
``transformer.encoder.layers.i.*`` (``self_attn``,    same (DAB/DN: + ``activation.weight``, PReLU)
``linear1/2``, ``norm1/2``)
``transformer.encoder.query_scale.*`` (DAB, DN)       same
``transformer.decoder.layers.i.{P, self_attn,         same; ``ca_qpos_proj`` only in layer 0
cross_attn, linear1/2, norm1-3, activation}``
``transformer.decoder.norm.*``                        same
``transformer.decoder.query_scale.*``                 ``transformer.decoder.spatial_query.query_scale.*``
``transformer.decoder.ref_anchor_head.*`` (DAB, DN)   ``transformer.decoder.spatial_query.ref_anchor_head.*``
``transformer.decoder.ref_point_head.*``              Conditional DETR (query -> point):
                                                      ``transformer.queries.ref_point_head.*``;
                                                      DAB, DN (sine(anchor) -> position):
                                                      ``transformer.decoder.ref_point_head.*``
``query_embed.weight`` (Conditional DETR)             ``transformer.queries.query_embed.weight``
``refpoint_embed.weight`` (DAB, DN)                   ``transformer.queries.refpoint_embed.weight``
``class_embed.*`` (91 COCO ids)                       ``transformer.decoder.class_embed.*`` (80 rows)
``bbox_embed.layers.k.*``                             ``transformer.decoder.bbox_embed.layers.k.*``
``transformer.decoder.bbox_embed.*`` (DAB, DN)        dropped: tied copy of ``bbox_embed``
``label_enc.weight`` (92, 255) (DN)                   ``denoising.label_embedding.weight`` (81, 255):
                                                      rows of the 80 ids + row 91 ("unknown")
===================================================  ==============================================

detrex (``projects/{conditional,dab,dn}_detr``) uses mmcv-style layer names and the Detectron2
ResNet: ``attentions.0.attn.*`` (encoder) -> ``self_attn.*``; ``ffns.0.layers.0.0`` /
``ffns.0.layers.1`` -> ``linear1`` / ``linear2``; ``ffns.0.layers.0.1.weight`` -> ``activation.weight``
(its second name ``ffns.0.activation.weight`` is dropped as a tied copy); ``norms.k`` ->
``norm{k+1}``; decoder ``attentions.0.{query,key}_{content,pos}_proj`` / ``value_proj`` / ``out_proj``
-> ``sa_*`` / ``self_attn.out_proj``, ``attentions.1.*`` -> ``ca_*`` / ``cross_attn.out_proj``
(``query_pos_sine_proj`` -> ``ca_qpos_sine_proj``); ``transformer.decoder.post_norm_layer`` ->
``norm``; ``anchor_box_embed`` -> ``refpoint_embed``; ``denoising_generator.label_encoder`` (81
rows, 80 classes + "unknown") -> ``denoising.label_embedding``. detrex's cross-attention creates
``query_pos_proj`` in every layer but only the first uses it: layers 1-5's copies are dropped.

detrex's DC5 models use ``TorchvisionResNet`` (torchvision names under ``backbone.body.``, FrozenBN)
instead of the Detectron2 ResNet: those keys are mapped like the official ones.

Not supported (a clear error): Anchor-DETR patterns (``transformer.patterns``, DAB-DETR's
``--num_patterns`` > 0 / the "3 patterns" releases). DC5 checkpoints have the C5 keys: the
converter picks the C5 config; verify and evaluate them with the DC5 config (``--config-file
configs/.../*_dc5_50ep.py``), whose res5 is dilated as torchvision's (``resnet_stages``).
"""
from __future__ import annotations

import re
from typing import Callable, Dict, List, Mapping, Optional, Tuple

from torch import Tensor

from .coco import coco91_to_80, coco92_to_81
from .core import CheckpointConversionError, DroppedKey, KeyMapper, MissingKeyError, ShapeMismatchError, register_source
from .resnet import map_resnet

__all__ = [
    "convert_conditional_detr_official",
    "convert_dab_detr_official",
    "convert_detrex_conditional_detr",
    "convert_detrex_dab_detr",
    "convert_detrex_dn_detr",
    "convert_dn_detr_official",
]

WB = r"(weight|bias)"
CONDITIONAL_CONFIGS = (
    "configs/conditional_detr/conditional_detr_r50_50ep.py",
    "configs/conditional_detr/conditional_detr_r50_dc5_50ep.py",
)
DAB_CONFIGS = ("configs/dab_detr/dab_detr_r50_50ep.py", "configs/dab_detr/dab_detr_r50_dc5_50ep.py")
DN_CONFIGS = ("configs/dn_detr/dn_detr_r50_50ep.py", "configs/dn_detr/dn_detr_r50_dc5_50ep.py")
PROJECTIONS = ("sa_qcontent_proj", "sa_qpos_proj", "sa_kcontent_proj", "sa_kpos_proj", "sa_v_proj",
               "ca_qcontent_proj", "ca_qpos_proj", "ca_kcontent_proj", "ca_kpos_proj", "ca_v_proj",
               "ca_qpos_sine_proj")
# detrex attention submodule names -> ours (attentions.0: self, attentions.1: cross)
DETREX_SELF = {"query_content_proj": "sa_qcontent_proj", "query_pos_proj": "sa_qpos_proj",
               "key_content_proj": "sa_kcontent_proj", "key_pos_proj": "sa_kpos_proj",
               "value_proj": "sa_v_proj", "out_proj": "self_attn.out_proj"}
DETREX_CROSS = {"query_content_proj": "ca_qcontent_proj", "query_pos_proj": "ca_qpos_proj",
                "key_content_proj": "ca_kcontent_proj", "key_pos_proj": "ca_kpos_proj",
                "value_proj": "ca_v_proj", "query_pos_sine_proj": "ca_qpos_sine_proj",
                "out_proj": "cross_attn.out_proj"}


def _refuse_patterns(m: KeyMapper) -> None:
    for key in ("transformer.patterns.weight",):
        if m.has(key):
            raise CheckpointConversionError(
                f"{m.source}: {key!r} (shape {m.shape(key)}): Anchor-DETR pattern embeddings (num_patterns > 0) are "
                "not supported by this project's DAB-DETR",
                [key],
            )


def _decoder_level(m: KeyMapper, anchors: bool, queries_key: str, coco91: bool) -> None:
    """The modules around the decoder layers, whose names the official and detrex releases share:
    the spatial query's MLPs, the encoder's position scaling (DAB), the position / reference-point
    head, the learned queries and the heads."""
    m.rename_all(rf"transformer\.decoder\.query_scale\.layers\.(\d+)\.{WB}",
                 r"transformer.decoder.spatial_query.query_scale.layers.\1.\2")
    if anchors:
        m.rename_all(rf"transformer\.encoder\.query_scale\.layers\.(\d+)\.{WB}",
                     r"transformer.encoder.query_scale.layers.\1.\2")
        m.rename_all(rf"transformer\.decoder\.ref_anchor_head\.layers\.(\d+)\.{WB}",
                     r"transformer.decoder.spatial_query.ref_anchor_head.layers.\1.\2")
        m.rename_all(rf"transformer\.decoder\.ref_point_head\.layers\.(\d+)\.{WB}",
                     r"transformer.decoder.ref_point_head.layers.\1.\2")
        m.move(queries_key, "transformer.queries.refpoint_embed.weight")
    else:  # Conditional DETR's ref_point_head maps the query embedding to its reference point
        m.rename_all(rf"transformer\.decoder\.ref_point_head\.layers\.(\d+)\.{WB}",
                     r"transformer.queries.ref_point_head.layers.\1.\2")
        m.move(queries_key, "transformer.queries.query_embed.weight")
    _heads(m, coco91=coco91, tied_box=anchors)


def _heads(m: KeyMapper, coco91: bool, tied_box: bool) -> None:
    """``class_embed`` (91 COCO ids -> 80 when ``coco91``) and ``bbox_embed`` -> the decoder's
    shared heads; ``tied_box``: drop the decoder's tied copy of ``bbox_embed``."""
    for p in ("weight", "bias"):
        key = f"class_embed.{p}"
        value = m.take(key)
        m.put(f"transformer.decoder.class_embed.{p}", coco91_to_80(value, key) if coco91 else value)
    for k in m.match(rf"bbox_embed\.layers\.\d+\.{WB}"):
        m.move(k, "transformer.decoder." + k)
        if tied_box:
            m.drop_alias("transformer.decoder." + k, k)


def _label_embedding(m: KeyMapper, src: str, fix: Optional[Callable[[Tensor, str], Tensor]] = None) -> None:
    """DN-DETR's label embedding; needed at inference too (the matching queries' content is its
    "unknown" row), so it is never a training-only weight."""
    value = m.take(src)
    m.put("denoising.label_embedding.weight", fix(value, src) if fix else value)


def _official_label_enc(value: Tensor, key: str) -> Tensor:
    """(92, D) indexed by COCO id (0..90) + row 91 "unknown" -> (81, D): the 80 ids, then 91."""
    if value.dim() != 2:
        raise ShapeMismatchError(f"{key!r}: expected (92, D) (91 COCO ids + unknown), got {tuple(value.shape)}", [key])
    return coco92_to_81(value, key)


# ------------------------------------------------------------------------------------- official
def _official(state_dict: Mapping[str, Tensor], source: str, anchors: bool, dn: bool) -> Tuple[Dict[str, Tensor], List[DroppedKey]]:
    m = KeyMapper(state_dict, source)
    _refuse_patterns(m)
    map_resnet(m, "backbone.0.body.", "backbone.")
    m.rename_all(rf"input_proj\.{WB}", r"neck.proj.\1")
    e = r"transformer\.encoder\.layers\.(\d+)\."
    m.rename_all(e + r"(self_attn\.(in_proj_weight|in_proj_bias|out_proj\.(weight|bias))|(linear1|linear2|norm1|norm2)"
                 rf"\.{WB}|activation\.weight)", r"transformer.encoder.layers.\1.\2")
    d = r"transformer\.decoder\.layers\.(\d+)\."
    names = "|".join(re.escape(n) for n in PROJECTIONS + ("self_attn.out_proj", "cross_attn.out_proj", "linear1",
                                                         "linear2", "norm1", "norm2", "norm3"))
    m.rename_all(d + rf"(({names})\.{WB}|activation\.weight)", r"transformer.decoder.layers.\1.\2")
    m.rename_all(rf"transformer\.decoder\.norm\.{WB}", r"transformer.decoder.norm.\1")
    _decoder_level(m, anchors, "refpoint_embed.weight" if anchors else "query_embed.weight", coco91=True)
    if dn:
        _label_embedding(m, "label_enc.weight", _official_label_enc)
    return m.finish()


# ------------------------------------------------------------------------------------- detrex
def _detrex_ffn(m: KeyMapper, src: str, dst: str) -> None:
    """``ffns.0`` of one layer (``src`` / ``dst`` end with the layer prefix)."""
    s = re.escape(src)
    m.rename_all(s + rf"ffns\.0\.layers\.0\.0\.{WB}", dst + r"linear1.\1")
    m.rename_all(s + rf"ffns\.0\.layers\.1\.{WB}", dst + r"linear2.\1")
    act, alias = src + "ffns.0.layers.0.1.weight", src + "ffns.0.activation.weight"
    if m.has(act):
        m.move(act, dst + "activation.weight")
        if m.has(alias):
            m.drop_alias(alias, act)
    elif m.has(alias):
        m.move(alias, dst + "activation.weight")


def _detrex(state_dict: Mapping[str, Tensor], source: str, anchors: bool, dn: bool) -> Tuple[Dict[str, Tensor], List[DroppedKey]]:
    m = KeyMapper(state_dict, source)
    _refuse_patterns(m)
    m.drop_matching(r"backbone\..*\.num_batches_tracked", "BatchNorm step counter; FrozenBN has none")
    if m.has("backbone.body.conv1.weight"):  # the DC5 configs' TorchvisionResNet
        map_resnet(m, "backbone.body.", "backbone.")
    m.rename_all(r"backbone\.(stem|res[2-5])\.(.+)", r"backbone.\1.\2")
    m.rename_all(rf"input_proj\.{WB}", r"neck.proj.\1")
    enc_layers = sorted({int(x) for k in m.keys() for x in re.findall(r"^transformer\.encoder\.layers\.(\d+)\.", k)})
    dec_layers = sorted({int(x) for k in m.keys() for x in re.findall(r"^transformer\.decoder\.layers\.(\d+)\.", k)})
    if not enc_layers or not dec_layers:
        raise MissingKeyError(f"{source}: no transformer.encoder.layers / transformer.decoder.layers keys",
                              ["transformer.encoder.layers", "transformer.decoder.layers"])
    for i in enc_layers:
        src, dst = f"transformer.encoder.layers.{i}.", f"transformer.encoder.layers.{i}."
        m.rename_all(re.escape(src) + r"attentions\.0\.attn\.(in_proj_weight|in_proj_bias|out_proj\.weight|out_proj\.bias)",
                     dst + r"self_attn.\1")
        for k in (0, 1):
            m.rename_all(re.escape(src) + rf"norms\.{k}\.{WB}", dst + rf"norm{k + 1}.\1")
        _detrex_ffn(m, src, dst)
    for i in dec_layers:
        src, dst = f"transformer.decoder.layers.{i}.", f"transformer.decoder.layers.{i}."
        for a, table in ((0, DETREX_SELF), (1, DETREX_CROSS)):
            for name, ours in table.items():
                if a == 1 and name == "query_pos_proj" and i > 0:
                    m.drop_matching(re.escape(f"{src}attentions.1.query_pos_proj.") + WB,
                                    "detrex creates the cross-attention query_pos_proj in every layer; only the first uses it")
                    continue
                m.rename_all(re.escape(f"{src}attentions.{a}.{name}.") + WB, dst + ours + r".\1")
        for k in (0, 1, 2):
            m.rename_all(re.escape(src) + rf"norms\.{k}\.{WB}", dst + rf"norm{k + 1}.\1")
        _detrex_ffn(m, src, dst)
    m.rename_all(rf"transformer\.decoder\.post_norm_layer\.{WB}", r"transformer.decoder.norm.\1")
    _decoder_level(m, anchors, "anchor_box_embed.weight" if anchors else "query_embed.weight", coco91=False)
    if dn:
        _label_embedding(m, "denoising_generator.label_encoder.weight")
    return m.finish()


def _register(name: str, description: str, configs: Tuple[str, ...], fn, anchors: bool, dn: bool):
    """Register ``fn(state_dict, name, anchors, dn)`` as source ``name`` (config: ``configs[0]``)."""

    @register_source(name, description, configs=configs, select_config=lambda sd: configs[0])
    def convert_source(state_dict: Mapping[str, Tensor], drop_training_weights: bool = False):
        return fn(state_dict, name, anchors=anchors, dn=dn)

    return convert_source


convert_conditional_detr_official = _register(
    "conditional-detr-official",
    "Atten4Vis/ConditionalDETR releases (ConditionalDETR_r50_epoch50.pth, ..._dc5...; 91 COCO ids)",
    CONDITIONAL_CONFIGS, _official, anchors=False, dn=False)
convert_dab_detr_official = _register(
    "dab-detr-official",
    "IDEA-Research/DAB-DETR releases (R50 / R50-DC5 checkpoint.pth without patterns; 91 COCO ids)",
    DAB_CONFIGS, _official, anchors=True, dn=False)
convert_dn_detr_official = _register(
    "dn-detr-official",
    "IDEA-Research/DN-DETR releases of DN-DAB-DETR (R50 / R50-DC5 checkpoint.pth; 91 COCO ids)",
    DN_CONFIGS, _official, anchors=True, dn=True)
convert_detrex_conditional_detr = _register(
    "detrex-conditional-detr",
    "detrex Conditional DETR checkpoints (projects/conditional_detr, e.g. converted_conditional_detr_r50_50ep.pth)",
    CONDITIONAL_CONFIGS, _detrex, anchors=False, dn=False)
convert_detrex_dab_detr = _register(
    "detrex-dab-detr",
    "detrex DAB-DETR checkpoints (projects/dab_detr, e.g. dab_detr_r50_50ep.pth; not the 3-pattern ones)",
    DAB_CONFIGS, _detrex, anchors=True, dn=False)
convert_detrex_dn_detr = _register(
    "detrex-dn-detr",
    "detrex DN-DETR checkpoints (projects/dn_detr, e.g. dn_detr_r50_50ep.pth)",
    DN_CONFIGS, _detrex, anchors=True, dn=True)
