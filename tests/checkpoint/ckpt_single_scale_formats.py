"""State dicts of the single-scale DETR family in the *source* formats, generated from a
description of each source architecture (written from the source code of Atten4Vis/ConditionalDETR
models/{conditional_detr,transformer,attention}.py, IDEA-Research/DAB-DETR models/DAB_DETR,
IDEA-Research/DN-DETR models/DN_DAB_DETR and IDEA-Research/detrex projects/{conditional,dab,dn}_detr
+ detrex/layers/{attention,mlp}.py; not from our converters): exact key names and shapes.

- official: torchvision ResNet under ``backbone.0.body.``; the custom attention has only
  ``out_proj`` (no in-projections); ``ca_qpos_proj`` exists in decoder layer 0 only (set to None in
  the others); DAB/DN: PReLU ``activation.weight`` (1,) in every layer, the encoder's
  ``query_scale``, the tied ``transformer.decoder.bbox_embed`` copy; DN: ``label_enc`` (92, D-1).
- detrex: Detectron2 ResNet; mmcv-style layers; the cross-attention's ``query_pos_proj`` in every
  layer; the FFN's activation under two names (``ffns.0.activation`` and ``ffns.0.layers.0.1``).
"""
from dataclasses import dataclass
from typing import Dict

import torch

from ckpt_source_formats import _gen, _linear, _mlp, _norm, d2_resnet50, torchvision_resnet


@dataclass
class SingleDims:
    enc_layers: int = 6
    dec_layers: int = 6
    d: int = 256
    ffn: int = 2048
    queries: int = 300


OFFICIAL_PROJ = ("sa_qcontent_proj", "sa_qpos_proj", "sa_kcontent_proj", "sa_kpos_proj", "sa_v_proj",
                 "ca_qcontent_proj", "ca_kcontent_proj", "ca_kpos_proj", "ca_v_proj", "ca_qpos_sine_proj")
DETREX_SELF = ("query_content_proj", "query_pos_proj", "key_content_proj", "key_pos_proj", "value_proj", "out_proj")
DETREX_CROSS = DETREX_SELF + ("query_pos_sine_proj",)


def _prelu(t):
    return 0.25 + t(1)


def official(kind: str, dims: SingleDims = SingleDims(), values: str = "random", seed: int = 0) -> Dict[str, torch.Tensor]:
    """kind: "conditional" (Atten4Vis), "dab" (DAB-DETR), "dn" (DN-DETR's DN_DAB_DETR)."""
    t = _gen(values, seed)
    d, dab = dims.d, kind in ("dab", "dn")
    sd = torchvision_resnet("resnet50", "backbone.0.body.", t)
    sd["input_proj.weight"] = t(d, 2048, 1, 1)
    sd["input_proj.bias"] = t(d)
    for i in range(dims.enc_layers):
        p = f"transformer.encoder.layers.{i}."
        sd[p + "self_attn.in_proj_weight"] = t(3 * d, d)
        sd[p + "self_attn.in_proj_bias"] = t(3 * d)
        _linear(sd, p + "self_attn.out_proj.", d, d, t)
        _linear(sd, p + "linear1.", dims.ffn, d, t)
        _linear(sd, p + "linear2.", d, dims.ffn, t)
        _norm(sd, p + "norm1.", d, t)
        _norm(sd, p + "norm2.", d, t)
        if dab:
            sd[p + "activation.weight"] = _prelu(t)
    if dab:
        _mlp(sd, "transformer.encoder.query_scale.", [d, d, d], t)
    for i in range(dims.dec_layers):
        p = f"transformer.decoder.layers.{i}."
        for name in OFFICIAL_PROJ + (("ca_qpos_proj",) if i == 0 else ()):
            _linear(sd, f"{p}{name}.", d, d, t)
        _linear(sd, p + "self_attn.out_proj.", d, d, t)
        _linear(sd, p + "cross_attn.out_proj.", d, d, t)
        _linear(sd, p + "linear1.", dims.ffn, d, t)
        _linear(sd, p + "linear2.", d, dims.ffn, t)
        for k in (1, 2, 3):
            _norm(sd, f"{p}norm{k}.", d, t)
        if dab:
            sd[p + "activation.weight"] = _prelu(t)
    _norm(sd, "transformer.decoder.norm.", d, t)
    _mlp(sd, "transformer.decoder.query_scale.", [d, d, d], t)
    if dab:
        _mlp(sd, "transformer.decoder.ref_point_head.", [2 * d, d, d], t)
        _mlp(sd, "transformer.decoder.ref_anchor_head.", [d, d, 2], t)
        sd["refpoint_embed.weight"] = t(dims.queries, 4)
    else:
        _mlp(sd, "transformer.decoder.ref_point_head.", [d, d, 2], t)
        sd["query_embed.weight"] = t(dims.queries, d)
    _linear(sd, "class_embed.", 91, d, t)
    _mlp(sd, "bbox_embed.", [d, d, d, 4], t)
    if dab:  # DAB's decoder holds the shared box head too
        for k in [k for k in sd if k.startswith("bbox_embed.")]:
            sd["transformer.decoder." + k] = sd[k]
    if kind == "dn":
        sd["label_enc.weight"] = t(92, d - 1)
    return sd


def _detrex_ffn(sd, p, d, ffn, t, prelu):
    if prelu:  # the FFN registers its activation as ``activation`` and inside ``layers.0``
        sd[p + "ffns.0.activation.weight"] = _prelu(t)
    _linear(sd, p + "ffns.0.layers.0.0.", ffn, d, t)
    if prelu:
        sd[p + "ffns.0.layers.0.1.weight"] = sd[p + "ffns.0.activation.weight"]
    _linear(sd, p + "ffns.0.layers.1.", d, ffn, t)


def detrex(kind: str, dims: SingleDims = SingleDims(), values: str = "random", seed: int = 0,
           dc5: bool = False) -> Dict[str, torch.Tensor]:
    """kind: "conditional", "dab" or "dn" (detrex projects/{conditional,dab,dn}_detr, 80 classes);
    ``dc5``: the DC5 configs' backbone, ``TorchvisionResNet`` (torchvision names under
    ``backbone.body.``, FrozenBN)."""
    t = _gen(values, seed)
    d, dab = dims.d, kind in ("dab", "dn")
    sd = torchvision_resnet("resnet50", "backbone.body.", t) if dc5 else d2_resnet50("backbone.", t)
    sd["input_proj.weight"] = t(d, 2048, 1, 1)
    sd["input_proj.bias"] = t(d)
    for i in range(dims.enc_layers):
        p = f"transformer.encoder.layers.{i}."
        sd[p + "attentions.0.attn.in_proj_weight"] = t(3 * d, d)
        sd[p + "attentions.0.attn.in_proj_bias"] = t(3 * d)
        _linear(sd, p + "attentions.0.attn.out_proj.", d, d, t)
        _detrex_ffn(sd, p, d, dims.ffn, t, dab)
        _norm(sd, p + "norms.0.", d, t)
        _norm(sd, p + "norms.1.", d, t)
    if dab:
        _mlp(sd, "transformer.encoder.query_scale.", [d, d, d], t)
    for i in range(dims.dec_layers):
        p = f"transformer.decoder.layers.{i}."
        for name in DETREX_SELF:
            _linear(sd, f"{p}attentions.0.{name}.", d, d, t)
        for name in DETREX_CROSS:
            _linear(sd, f"{p}attentions.1.{name}.", d, d, t)
        _detrex_ffn(sd, p, d, dims.ffn, t, dab)
        for k in range(3):
            _norm(sd, f"{p}norms.{k}.", d, t)
    _mlp(sd, "transformer.decoder.query_scale.", [d, d, d], t)
    if dab:
        _mlp(sd, "transformer.decoder.ref_point_head.", [2 * d, d, d], t)
        _mlp(sd, "transformer.decoder.ref_anchor_head.", [d, d, 2], t)
    else:
        _mlp(sd, "transformer.decoder.ref_point_head.", [d, d, 2], t)
    _norm(sd, "transformer.decoder.post_norm_layer.", d, t)
    if kind == "dn":
        sd["denoising_generator.label_encoder.weight"] = t(81, d - 1)
    if dab:
        sd["anchor_box_embed.weight"] = t(dims.queries, 4)
    else:
        sd["query_embed.weight"] = t(dims.queries, d)
    _linear(sd, "class_embed.", 80, d, t)
    _mlp(sd, "bbox_embed.", [d, d, d, 4], t)
    if dab:
        for k in [k for k in sd if k.startswith("bbox_embed.")]:
            sd["transformer.decoder." + k] = sd[k]
    return sd


def detr_official(dims: SingleDims = SingleDims(queries=100), values: str = "random", seed: int = 0,
                  num_classes: int = 91) -> Dict[str, torch.Tensor]:
    """facebookresearch/detr ``DETR`` (models/detr.py, transformer.py, backbone.py): the Joiner's
    torchvision ResNet under ``backbone.0.body.`` (FrozenBatchNorm2d: no step counters, no fc),
    ``nn.MultiheadAttention`` ``self_attn`` / ``multihead_attn`` with packed in-projections,
    ``class_embed`` of ``num_classes + 1`` rows (COCO: 91 ids + "no object"), the 3-layer
    ``bbox_embed``, ``query_embed`` (num_queries, d), the 1x1 ``input_proj``."""
    t = _gen(values, seed)
    d = dims.d
    sd = torchvision_resnet("resnet50", "backbone.0.body.", t)

    def attention(p):
        sd[p + "in_proj_weight"] = t(3 * d, d)
        sd[p + "in_proj_bias"] = t(3 * d)
        _linear(sd, p + "out_proj.", d, d, t)

    for i in range(dims.enc_layers):
        p = f"transformer.encoder.layers.{i}."
        attention(p + "self_attn.")
        _linear(sd, p + "linear1.", dims.ffn, d, t)
        _linear(sd, p + "linear2.", d, dims.ffn, t)
        _norm(sd, p + "norm1.", d, t)
        _norm(sd, p + "norm2.", d, t)
    for i in range(dims.dec_layers):
        p = f"transformer.decoder.layers.{i}."
        attention(p + "self_attn.")
        attention(p + "multihead_attn.")
        _linear(sd, p + "linear1.", dims.ffn, d, t)
        _linear(sd, p + "linear2.", d, dims.ffn, t)
        for k in (1, 2, 3):
            _norm(sd, f"{p}norm{k}.", d, t)
    _norm(sd, "transformer.decoder.norm.", d, t)
    _linear(sd, "class_embed.", num_classes + 1, d, t)
    _mlp(sd, "bbox_embed.", [d, d, d, 4], t)
    sd["query_embed.weight"] = t(dims.queries, d)
    sd["input_proj.weight"] = t(d, 2048, 1, 1)
    sd["input_proj.bias"] = t(d)
    return sd
