"""DETR sources: the facebookresearch/detr releases (``detr-r50-e632da11.pth``, ...) into
``configs/detr/detr_r50_500ep.py``.

The same code base as Conditional DETR (``conditional_detr.py``) and this project's DETR keeps
the official attribute names, so the mapping moves prefixes (``i``: layer index):

===================================================  ==============================================
official (facebookresearch/detr ``models/``)          codetr
===================================================  ==============================================
``backbone.0.body.*`` (torchvision, FrozenBN)         ``backbone.{stem,res2..5}.*`` (``resnet.py``)
``input_proj.*`` (1x1 conv 2048 -> 256)               ``neck.proj.*``
``transformer.encoder.layers.i.{self_attn.*,          same
linear1/2, norm1/2}``
``transformer.decoder.layers.i.{self_attn.*,          same
multihead_attn.*, linear1/2, norm1-3}``
``transformer.decoder.norm.*``                        same
``query_embed.weight`` (100, 256)                     ``transformer.queries.query_embed.weight``
``class_embed.*`` (92 = 91 COCO ids + "no object")    ``transformer.decoder.class_embed.*`` (81 rows:
                                                      the 80 ids in Detectron2's order, then 91)
``bbox_embed.layers.k.*``                             ``transformer.decoder.bbox_embed.layers.k.*``
===================================================  ==============================================

Nothing is dropped (the release holds FrozenBN statistics without step counters, and no
training-only weight); a key of another layout (e.g. a segmentation head, ``bbox_attention``) is
an unknown-key error. DC5 releases have the same keys: convert them, then evaluate with
``model.backbone.stages.res5_dilation=2`` and a stride-16 neck input.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Tuple

from torch import Tensor

from .coco import coco92_to_81
from .core import DroppedKey, KeyMapper, register_source
from .resnet import map_resnet

__all__ = ["convert_detr_official"]

WB = r"(weight|bias)"
DETR_CONFIG = "configs/detr/detr_r50_500ep.py"
ATTENTION = r"(in_proj_weight|in_proj_bias|out_proj\.weight|out_proj\.bias)"


def _convert(state_dict: Mapping[str, Tensor], source: str) -> Tuple[Dict[str, Tensor], List[DroppedKey]]:
    m = KeyMapper(state_dict, source)
    map_resnet(m, "backbone.0.body.", "backbone.")
    m.rename_all(rf"input_proj\.{WB}", r"neck.proj.\1")
    m.rename_all(rf"transformer\.encoder\.layers\.(\d+)\.(self_attn\.{ATTENTION}|(linear1|linear2|norm1|norm2)\.{WB})",
                 r"transformer.encoder.layers.\1.\2")
    m.rename_all(rf"transformer\.decoder\.layers\.(\d+)\.((self_attn|multihead_attn)\.{ATTENTION}"
                 rf"|(linear1|linear2|norm1|norm2|norm3)\.{WB})", r"transformer.decoder.layers.\1.\2")
    m.rename_all(rf"transformer\.decoder\.norm\.{WB}", r"transformer.decoder.norm.\1")
    m.move("query_embed.weight", "transformer.queries.query_embed.weight")
    for p in ("weight", "bias"):
        m.move(f"class_embed.{p}", f"transformer.decoder.class_embed.{p}",
               lambda v, p=p: coco92_to_81(v, f"class_embed.{p}"))
    m.rename_all(rf"bbox_embed\.layers\.(\d+)\.{WB}", r"transformer.decoder.bbox_embed.layers.\1.\2")
    return m.finish()


@register_source(
    "detr-official",
    "facebookresearch/detr releases (detr-r50-e632da11.pth, detr-r50-dc5-*.pth; 91 COCO ids + no object)",
    configs=(DETR_CONFIG,),
)
def convert_detr_official(
    state_dict: Mapping[str, Tensor], drop_training_weights: bool = False
) -> Tuple[Dict[str, Tensor], List[DroppedKey]]:
    return _convert(state_dict, "detr-official")
