"""Sources ``deqdet-official`` (MCG-NJU/DEQDet, mmdet 3) and ``adamixer-official`` (MCG-NJU/AdaMixer,
mmdet 2): R50 / R101 checkpoints into ``configs/deqdet/deqdet_r50_{1x,2x}.py`` (picked by the number
of queries: 100 / 300) and ``configs/adamixer/adamixer_r50_1x.py`` (300-query releases with
``model.num_queries=300``; R101 with ``model.backbone.stages.depth=101``; both printed by the tool).

Key maps of the AdaMixer decoder layers of the official releases, into
``codetr.modeling.decoders.refinement.AdaMixerRefiner`` (``layers.i``, ``class_heads.i``,
``box_heads.i``).

Both MCG-NJU/DEQDet (mmdet 3, ``AdaMixerHead``, a ``DIIHead`` subclass) and MCG-NJU/AdaMixer
(mmdet 2, ``AdaMixerDecoderStage``) store one decoder layer with its heads under
``roi_head.bbox_head.i.``: DEQDet i = 0 (g) and 1 (f), AdaMixer i = 0..5. Per layer:

==============================================================  ==================================
official (under ``roi_head.bbox_head.i.``)                      codetr (under ``dst``)
==============================================================  ==================================
``attention.attn.{in_proj_weight,in_proj_bias,out_proj.*}``     ``layers.i.self_attn.*``
``attention_norm``                                              ``layers.i.norm1``
``iof_tau`` (heads,)                                            ``layers.i.iof_tau``
``sampling_n_mixing.sampling_offset_generator.0``               ``layers.i.sampling.offsets``
``sampling_n_mixing.adaptive_mixing.parameter_generator.0``     ``layers.i.mixing.parameter_generator``
``sampling_n_mixing.adaptive_mixing.out_proj``                  ``layers.i.mixing.out_proj``
``sampling_n_mixing.norm`` (after the mixing residual)          ``layers.i.norm2``
``ffn.layers.0.0`` / ``ffn.layers.1``                           ``layers.i.ffn.linear1`` / ``linear2``
``ffn_norm``                                                    ``layers.i.norm3``
``cls_fcs.k`` (Linear, LN, ReLU, ...) / ``fc_cls``              ``class_heads.i.fcs.k`` / ``fc``
``reg_fcs.k`` / ``fc_reg``                                      ``box_heads.i.fcs.k`` / ``fc``
``instance_interactive_conv.*``, ``instance_interactive_conv_norm.*``  dropped (DEQDet only: the
                                                                Sparse R-CNN dynamic conv that
                                                                ``DIIHead.__init__`` builds and
                                                                ``AdaMixerHead`` never calls)
==============================================================  ==================================

Neck (``SharedNormChannelMapper``) and initial queries (``WholeImageQueries``):

==============================================================  ==================================
``neck.convs.i.conv`` (DEQDet) / ``neck.lateral_convs.i.conv``  ``<neck>.convs.i``
(AdaMixer)
``neck.gn_out``                                                 ``<neck>.norm``
``rpn_head.init_proposal_bboxes.weight``                        ``<queries>.boxes``
``rpn_head.init_proposal_features.weight`` (DEQDet) /           ``<queries>.content``
``rpn_head.init_content_features.weight`` (AdaMixer)
==============================================================  ==================================

The layouts agree without reordering: offsets are (group, point, (dx, dy, dz)); the mixing
generator's output is per group [channel matrix (C_in x C_out), spatial matrix (P_out x P_in)];
the mixing output is flattened (group, point, channel); the classifier is 80-way in the contiguous
COCO order (mmdet's = Detectron2's).
"""
from __future__ import annotations

import re
from typing import Callable, Dict, List, Mapping, Tuple

from torch import Tensor

from .core import DroppedKey, KeyMapper, iter_layer_indices, register_source
from .resnet import map_resnet

__all__ = [
    "convert_adamixer_official",
    "convert_deqdet_official",
    "convert_deqdet_state_dict",
    "map_adamixer_layers",
    "map_adamixer_neck",
    "map_fixed_box_queries",
]

DEQDET_1X = "configs/deqdet/deqdet_r50_1x.py"
DEQDET_2X = "configs/deqdet/deqdet_r50_2x.py"
ADAMIXER_1X = "configs/adamixer/adamixer_r50_1x.py"

WB = r"(weight|bias)"

_LAYER_RENAMES = (
    (rf"attention\.attn\.(in_proj_weight|in_proj_bias|out_proj\.weight|out_proj\.bias)", r"self_attn.\1"),
    (rf"attention_norm\.{WB}", r"norm1.\1"),
    (r"iof_tau", r"iof_tau"),
    (rf"sampling_n_mixing\.sampling_offset_generator\.0\.{WB}", r"sampling.offsets.\1"),
    (rf"sampling_n_mixing\.adaptive_mixing\.parameter_generator\.0\.{WB}", r"mixing.parameter_generator.\1"),
    (rf"sampling_n_mixing\.adaptive_mixing\.out_proj\.{WB}", r"mixing.out_proj.\1"),
    (rf"sampling_n_mixing\.norm\.{WB}", r"norm2.\1"),
    (rf"ffn\.layers\.0\.0\.{WB}", r"ffn.linear1.\1"),
    (rf"ffn\.layers\.1\.{WB}", r"ffn.linear2.\1"),
    (rf"ffn_norm\.{WB}", r"norm3.\1"),
)


def map_adamixer_layers(m: KeyMapper, src: str = "roi_head.bbox_head.", dst: str = "") -> int:
    """Map every official AdaMixer layer ``src + "i."`` to ``AdaMixerRefiner`` keys under
    ``dst`` (see the module docstring); returns the number of layers. Keys of a layer that match
    no rule are left for ``KeyMapper.finish`` to report."""
    indices = iter_layer_indices(m.keys(), src)
    for i in indices:
        s = re.escape(f"{src}{i}.")
        for pattern, repl in _LAYER_RENAMES:
            m.rename_all(s + pattern, f"{dst}layers.{i}.{repl}")
        m.rename_all(s + rf"cls_fcs\.(\d+)\.{WB}", rf"{dst}class_heads.{i}.fcs.\1.\2")
        m.rename_all(s + rf"fc_cls\.{WB}", rf"{dst}class_heads.{i}.fc.\1")
        m.rename_all(s + rf"reg_fcs\.(\d+)\.{WB}", rf"{dst}box_heads.{i}.fcs.\1.\2")
        m.rename_all(s + rf"fc_reg\.{WB}", rf"{dst}box_heads.{i}.fc.\1")
        m.drop_matching(s + r"instance_interactive_conv(_norm)?\..+",
                        "DIIHead's dynamic conv, built by the parent class and never used by AdaMixerHead")
    return len(indices)


def map_adamixer_neck(m: KeyMapper, src: str = "neck.", dst: str = "neck.") -> int:
    """DEQDet's ``ChannelMapperWithGN`` (``convs.i.conv``) or AdaMixer's ``ChannelMapping``
    (``lateral_convs.i.conv``) and their shared ``gn_out`` -> ``SharedNormChannelMapper`` keys under
    ``dst``. Returns the number of levels."""
    s = re.escape(src)
    n = m.rename_all(s + rf"(?:convs|lateral_convs)\.(\d+)\.conv\.{WB}", rf"{dst}convs.\1.\2") // 2
    m.rename_all(s + rf"gn_out\.{WB}", rf"{dst}norm.\1")
    return n


def map_fixed_box_queries(m: KeyMapper, src: str = "rpn_head.", dst: str = "queries.") -> None:
    """The initial query embeddings (DEQDet ``FixPositionEmbeddingRPNHead``, AdaMixer
    ``InitialQueryGenerator``) -> ``WholeImageQueries`` keys under ``dst``."""
    s = re.escape(src)
    m.rename_all(s + r"init_proposal_bboxes\.weight", f"{dst}boxes")
    m.rename_all(s + r"init_(?:proposal|content)_features\.weight", f"{dst}content")


def convert_deqdet_state_dict(
    state_dict: Mapping[str, Tensor],
    backbone: str = "backbone.",
    neck: str = "neck.",
    queries: str = "queries.",
    decoder: str = "decoder.",
    source: str = "deqdet-official",
) -> Tuple[Dict[str, Tensor], List[DroppedKey]]:
    """A whole official DEQDet (or AdaMixer / FFNDet) R50/R101 checkpoint: mmdet ResNet
    ``backbone.*`` (torchvision layout) -> Detectron2 ResNet keys under ``backbone``, the neck, the
    initial queries and the decoder layers under the given prefixes (those of the detector that
    will load it; not registered as a ``--source`` until that detector and its configs exist).
    Every source key is mapped or dropped, else ``UnknownKeyError``."""
    m = KeyMapper(state_dict, source)
    map_resnet(m, "backbone.", backbone)
    map_adamixer_neck(m, "neck.", neck)
    map_fixed_box_queries(m, "rpn_head.", queries)
    map_adamixer_layers(m, "roi_head.bbox_head.", decoder)
    return m.finish()


def _num_queries(converted: Mapping[str, Tensor]) -> int:
    return int(converted["queries.boxes"].shape[0])


_DEPTH_BY_RES4_BLOCKS = {6: 50, 23: 101}


def _backbone_overrides(converted: Mapping[str, Tensor]) -> List[str]:
    """R101 (23 res4 blocks) needs ``depth=101``; R50 (6) nothing."""
    blocks = len({k.split(".")[2] for k in converted if k.startswith("backbone.res4.")})
    if blocks not in _DEPTH_BY_RES4_BLOCKS:
        raise ValueError(
            f"AdaMixer/DEQDet checkpoint: a ResNet with {blocks} res4 blocks; expected 6 (R50) or 23 (R101)"
        )
    depth = _DEPTH_BY_RES4_BLOCKS[blocks]
    return [] if depth == 50 else [f"model.backbone.stages.depth={depth}"]


def _deqdet_config(converted: Mapping[str, Tensor]) -> str:
    return DEQDET_2X if _num_queries(converted) == 300 else DEQDET_1X


def _overrides(config_queries: Callable[[Mapping[str, Tensor]], int]) -> Callable[[Mapping[str, Tensor]], List[str]]:
    """The overrides a converted checkpoint needs on its config: depth, and the number of queries
    when it differs from the config's ``config_queries(converted)``."""
    def overrides_for(converted: Mapping[str, Tensor]) -> List[str]:
        n = _num_queries(converted)
        extra = [] if n == config_queries(converted) else [f"model.num_queries={n}"]
        return _backbone_overrides(converted) + extra

    return overrides_for


@register_source(
    "deqdet-official",
    "MCG-NJU/DEQDet releases (mmdet 3; R50/R101 1x 100 queries, 2x 300 queries)",
    configs=(DEQDET_1X, DEQDET_2X),
    select_config=_deqdet_config,
    overrides_for=_overrides(lambda sd: 300 if _deqdet_config(sd) == DEQDET_2X else 100),
)
def convert_deqdet_official(
    state_dict: Mapping[str, Tensor], drop_training_weights: bool = False
) -> Tuple[Dict[str, Tensor], List[DroppedKey]]:
    """Every weight is used at inference (g and f): ``drop_training_weights`` drops nothing."""
    return convert_deqdet_state_dict(state_dict, source="deqdet-official")


@register_source(
    "adamixer-official",
    "MCG-NJU/AdaMixer releases (mmdet 2; 6 stages, 100 or 300 queries)",
    configs=(ADAMIXER_1X,),
    overrides_for=_overrides(lambda sd: 100),
)
def convert_adamixer_official(
    state_dict: Mapping[str, Tensor], drop_training_weights: bool = False
) -> Tuple[Dict[str, Tensor], List[DroppedKey]]:
    return convert_deqdet_state_dict(state_dict, source="adamixer-official")
