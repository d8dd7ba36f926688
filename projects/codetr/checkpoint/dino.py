"""DINO sources: detrex's DINO checkpoints and the IDEA-Research/DINO releases, into
``configs/dino/dino_r50_{4,5}scale_12ep.py``.

Key mapping (``i``: layer index, ``X``: ``sampling_offsets|attention_weights|value_proj|output_proj``):

=====================================================  =================================================
detrex (``projects/dino``)                             codetr
=====================================================  =================================================
``backbone.{stem,res2..5}.*`` (Detectron2 ResNet)      same
``neck.{convs,extra_convs}.k.{conv,norm}.*``           same
``transformer.level_embeds``                           same
``transformer.encoder.layers.i.attentions.0.X``        ``transformer.encoder.layers.i.self_attn.X``
``...encoder.layers.i.ffns.0.layers.0.0`` / ``.1``     ``...encoder.layers.i.ffn.linear1`` / ``linear2``
``...encoder.layers.i.norms.{0,1}``                    ``...encoder.layers.i.norm{1,2}``
``...decoder.layers.i.attentions.0.attn.*``            ``...decoder.layers.i.self_attn.*`` (fused in_proj)
``...decoder.layers.i.attentions.1.X``                 ``...decoder.layers.i.cross_attn.X``
``...decoder.layers.i.norms.{0,1,2}``                  ``...decoder.layers.i.norm{1,2,3}``
``transformer.decoder.{ref_point_head,norm}.*``        same
``transformer.{enc_output,enc_output_norm,tgt_embed}`` same
``class_embed.i`` / ``bbox_embed.i`` (i < 6)           ``transformer.decoder.class_embed.i`` / ``bbox_embed.i``
``class_embed.6`` / ``bbox_embed.6`` (encoder head)    ``transformer.enc_class_embed`` / ``enc_bbox_embed``
``transformer.decoder.{class,bbox}_embed.i``           dropped: tied copies of ``{class,bbox}_embed.i``
``label_enc.weight`` (80, 256)                         ``denoising.label_embedding.weight``
=====================================================  =================================================

=====================================================  =================================================
IDEA-Research/DINO (``models/dino``)                   codetr
=====================================================  =================================================
``backbone.0.body.{conv1,bn1,layerN...}`` (torchvision) ``backbone.{stem,resN+1}`` (see ``resnet.py``)
``input_proj.k.{0,1}`` (1x1 conv, GN)                  ``neck.convs.k.{conv,norm}``
``input_proj.k.{0,1}`` (3x3 stride-2 conv, GN)         ``neck.extra_convs.(k - #backbone levels).{conv,norm}``
``transformer.level_embed``                            ``transformer.level_embeds``
``...encoder.layers.i.{self_attn.X,norm1,norm2}``      same
``...encoder.layers.i.linear{1,2}``                    ``...encoder.layers.i.ffn.linear{1,2}``
``...decoder.layers.i.self_attn.*`` / ``cross_attn.X`` same
``...decoder.layers.i.norm2`` (after self-attn)        ``...decoder.layers.i.norm1``
``...decoder.layers.i.norm1`` (after cross-attn)       ``...decoder.layers.i.norm2``
``...decoder.layers.i.norm3``, ``linear{1,2}``         ``norm3``, ``ffn.linear{1,2}``
``class_embed.i`` (91 COCO ids) / ``bbox_embed.i``     ``transformer.decoder.class_embed.i`` (80) / ``bbox_embed.i``
``transformer.enc_out_{class,bbox}_embed``             ``transformer.enc_{class,bbox}_embed`` (class: 91 -> 80)
``transformer.decoder.{class,bbox}_embed.i``           dropped: tied copies
``label_enc.weight`` (92 = dn_labelbook_size + 1)      ``denoising.label_embedding.weight`` (rows of the 80 ids)
=====================================================  =================================================

The DINO repository shares one class/box head across the decoder layers
(``dec_pred_*_embed_share=True``); its state dict still lists ``class_embed.0..5`` and the
per-layer copies here reproduce the shared head exactly. Its position embedding has no -0.5
offset and temperature 20 (``pe_temperatureH/W``), hence the config overrides of the
``dino-official`` source. ``--drop-training-weights`` drops the denoising label embedding
(used only to build denoising queries); load such a checkpoint with ``model.denoising=null``.
"""
from __future__ import annotations

import re
from typing import Dict, List, Mapping, Tuple

from torch import Tensor

from .coco import coco91_to_80
from .core import DroppedKey, KeyMapper, MissingKeyError, iter_layer_indices, register_source
from .resnet import map_resnet

__all__ = ["convert_detrex_dino", "convert_dino_official", "dino_config_for", "map_mmcv_transformer_layers"]

MSDA = r"(sampling_offsets|attention_weights|value_proj|output_proj)\.(weight|bias)"
WB = r"(weight|bias)"
DROPPED_OVERRIDES = ("model.denoising=null",)
DINO_CONFIGS = ("configs/dino/dino_r50_4scale_12ep.py", "configs/dino/dino_r50_5scale_12ep.py")


def dino_config_for(state_dict: Mapping[str, Tensor]) -> str:
    """The DINO-R50 config matching a converted state dict (4 or 5 feature levels)."""
    levels = state_dict["transformer.level_embeds"].shape[0]
    if levels not in (4, 5):
        raise ValueError(f"no DINO-R50 config with {levels} feature levels (have 4 and 5)")
    return DINO_CONFIGS[levels - 4]


def _num_layers(m: KeyMapper, prefix: str) -> int:
    idx = iter_layer_indices(m.keys(), prefix)
    if not idx or idx != list(range(len(idx))):
        raise MissingKeyError(f"{m.source}: no contiguous layers under {prefix!r} (found {idx})", [prefix])
    return len(idx)


def _heads(m: KeyMapper, num_dec: int, enc_class: str, enc_box: str, class_fn=None) -> None:
    """Decoder heads ``{class,bbox}_embed.i`` (i < num_dec) and the encoder head, plus the
    decoder's tied copies."""
    fix = class_fn or (lambda v, k: v)
    for i in range(num_dec):
        for p in ("weight", "bias"):
            k = f"class_embed.{i}.{p}"
            m.put(f"transformer.decoder.class_embed.{i}.{p}", fix(m.take(k), k))
            m.drop_alias(f"transformer.decoder.class_embed.{i}.{p}", k)
        for k in m.match(rf"bbox_embed\.{i}\.layers\.\d+\.{WB}"):
            m.move(k, "transformer.decoder." + k)
            m.drop_alias("transformer.decoder." + k, k)
    for p in ("weight", "bias"):
        k = f"{enc_class}.{p}"
        m.put(f"transformer.enc_class_embed.{p}", fix(m.take(k), k))
    m.rename_all(rf"{re.escape(enc_box)}\.layers\.(\d+)\.{WB}", r"transformer.enc_bbox_embed.layers.\1.\2")


def _label_embedding(m: KeyMapper, drop_training_weights: bool, fix=None) -> None:
    key = "label_enc.weight"
    if drop_training_weights:
        m.drop(key, "training only: denoising label embedding")
    else:
        value = m.take(key)
        m.put("denoising.label_embedding.weight", fix(value, key) if fix else value)


def map_mmcv_transformer_layers(m: KeyMapper, src: str, dst: str) -> int:
    """Encoder / decoder layers in mmcv's ``BaseTransformerLayer`` naming (detrex, mmdet 2/3:
    ``attentions.k``, ``ffns.0.layers.{0.0,1}``, ``norms.k`` in operation order, post-norm) under
    ``src + "encoder.layers."`` / ``src + "decoder.layers."`` -> codetr's layers under ``dst``.
    Returns the number of decoder layers."""
    s = re.escape(src)
    enc, dec = dst + "encoder.layers.", dst + "decoder.layers."
    _num_layers(m, src + "encoder.layers.")
    num_dec = _num_layers(m, src + "decoder.layers.")
    e = s + r"encoder\.layers\.(\d+)\."
    m.rename_all(e + r"attentions\.0\." + MSDA, enc + r"\1.self_attn.\2.\3")
    m.rename_all(e + rf"ffns\.0\.layers\.0\.0\.{WB}", enc + r"\1.ffn.linear1.\2")
    m.rename_all(e + rf"ffns\.0\.layers\.1\.{WB}", enc + r"\1.ffn.linear2.\2")
    m.rename_all(e + rf"norms\.0\.{WB}", enc + r"\1.norm1.\2")
    m.rename_all(e + rf"norms\.1\.{WB}", enc + r"\1.norm2.\2")
    d = s + r"decoder\.layers\.(\d+)\."
    m.rename_all(d + r"attentions\.0\.attn\.(in_proj_weight|in_proj_bias|out_proj\.weight|out_proj\.bias)",
                 dec + r"\1.self_attn.\2")
    m.rename_all(d + r"attentions\.1\." + MSDA, dec + r"\1.cross_attn.\2.\3")
    m.rename_all(d + rf"ffns\.0\.layers\.0\.0\.{WB}", dec + r"\1.ffn.linear1.\2")
    m.rename_all(d + rf"ffns\.0\.layers\.1\.{WB}", dec + r"\1.ffn.linear2.\2")
    for i in range(3):  # self-attn, cross-attn, FFN
        m.rename_all(d + rf"norms\.{i}\.{WB}", dec + rf"\1.norm{i + 1}.\2")
    return num_dec


@register_source(
    "detrex-dino",
    "detrex DINO checkpoints (IDEA-Research/detrex projects/dino, e.g. dino_r50_4scale_12ep_49_2AP.pth)",
    configs=DINO_CONFIGS,
    overrides_when_dropped=DROPPED_OVERRIDES,
    select_config=dino_config_for,
)
def convert_detrex_dino(
    state_dict: Mapping[str, Tensor], drop_training_weights: bool = False
) -> Tuple[Dict[str, Tensor], List[DroppedKey]]:
    m = KeyMapper(state_dict, "detrex-dino")
    m.drop_matching(r"backbone\..*\.num_batches_tracked", "BatchNorm step counter; FrozenBN has none")
    m.rename_all(r"backbone\.(stem|res[2-5])\.(.+)", r"backbone.\1.\2")
    m.rename_all(rf"neck\.(convs|extra_convs)\.(\d+)\.(conv|norm)\.{WB}", r"neck.\1.\2.\3.\4")
    m.move("transformer.level_embeds", "transformer.level_embeds")
    num_dec = map_mmcv_transformer_layers(m, "transformer.", "transformer.")
    m.rename_all(rf"transformer\.decoder\.(ref_point_head\.layers\.\d+|norm)\.{WB}", r"transformer.decoder.\1.\2")
    m.rename_all(rf"transformer\.(enc_output|enc_output_norm)\.{WB}", r"transformer.\1.\2")
    m.move("transformer.tgt_embed.weight", "transformer.tgt_embed.weight")
    _heads(m, num_dec, f"class_embed.{num_dec}", f"bbox_embed.{num_dec}")
    for k in m.match(rf"transformer\.decoder\.(class_embed\.{num_dec}\.{WB}|bbox_embed\.{num_dec}\..+)"):
        m.drop_alias(k, k[len("transformer.decoder."):])
    _label_embedding(m, drop_training_weights)
    return m.finish()


def _split_input_proj(m: KeyMapper) -> None:
    """DINO's ``input_proj``: 1x1 convs on backbone levels first, then 3x3 stride-2 extras."""
    idx = iter_layer_indices(m.keys(), "input_proj.")
    extra_start = None
    for k in idx:
        kernel = m.shape(f"input_proj.{k}.0.weight")[-1]
        if kernel == 1:
            if extra_start is not None:
                raise MissingKeyError(f"{m.source}: 1x1 input_proj.{k} after an extra (3x3) level", [f"input_proj.{k}"])
            dst = f"neck.convs.{k}."
        else:
            extra_start = k if extra_start is None else extra_start
            dst = f"neck.extra_convs.{k - extra_start}."
        for p in ("weight", "bias"):
            m.move(f"input_proj.{k}.0.{p}", dst + "conv." + p)
            m.move(f"input_proj.{k}.1.{p}", dst + "norm." + p)


@register_source(
    "dino-official",
    "IDEA-Research/DINO releases (checkpoint0011_4scale.pth, checkpoint0011_5scale.pth, ...; R50, 91 COCO ids)",
    configs=DINO_CONFIGS,
    config_overrides=("model.position_embedding.temperature=20", "model.position_embedding.offset=0.0"),
    overrides_when_dropped=DROPPED_OVERRIDES,
    select_config=dino_config_for,
)
def convert_dino_official(
    state_dict: Mapping[str, Tensor], drop_training_weights: bool = False
) -> Tuple[Dict[str, Tensor], List[DroppedKey]]:
    m = KeyMapper(state_dict, "dino-official")
    map_resnet(m, "backbone.0.body.", "backbone.")
    _split_input_proj(m)
    m.move("transformer.level_embed", "transformer.level_embeds")
    enc, dec = "transformer.encoder.layers.", "transformer.decoder.layers."
    _num_layers(m, enc)
    num_dec = _num_layers(m, dec)
    e = r"transformer\.encoder\.layers\.(\d+)\."
    m.rename_all(e + r"self_attn\." + MSDA, enc + r"\1.self_attn.\2.\3")
    m.rename_all(e + rf"linear(1|2)\.{WB}", enc + r"\1.ffn.linear\2.\3")
    m.rename_all(e + rf"norm(1|2)\.{WB}", enc + r"\1.norm\2.\3")
    d = r"transformer\.decoder\.layers\.(\d+)\."
    m.rename_all(d + r"self_attn\.(in_proj_weight|in_proj_bias|out_proj\.weight|out_proj\.bias)",
                 dec + r"\1.self_attn.\2")
    m.rename_all(d + r"cross_attn\." + MSDA, dec + r"\1.cross_attn.\2.\3")
    m.rename_all(d + rf"linear(1|2)\.{WB}", dec + r"\1.ffn.linear\2.\3")
    # DINO: norm2 follows self-attention, norm1 cross-attention; codetr numbers them in order.
    m.rename_all(d + rf"norm2\.{WB}", dec + r"\1.norm1.\2")
    m.rename_all(d + rf"norm1\.{WB}", dec + r"\1.norm2.\2")
    m.rename_all(d + rf"norm3\.{WB}", dec + r"\1.norm3.\2")
    m.rename_all(rf"transformer\.decoder\.(ref_point_head\.layers\.\d+|norm)\.{WB}", r"transformer.decoder.\1.\2")
    m.rename_all(rf"transformer\.(enc_output|enc_output_norm)\.{WB}", r"transformer.\1.\2")
    m.move("transformer.tgt_embed.weight", "transformer.tgt_embed.weight")
    _heads(m, num_dec, "transformer.enc_out_class_embed", "transformer.enc_out_bbox_embed",
           class_fn=lambda v, k: coco91_to_80(v, k))
    _label_embedding(m, drop_training_weights, fix=lambda v, k: coco91_to_80(v, k))
    return m.finish()
