"""State dicts in the *source* formats, generated from a description of each source architecture
(written from the source code of IDEA-Research/detrex projects/dino and IDEA-Research/DINO
models/dino, not from our converters): exact key names and shapes, values random (or zeros
where only names and shapes matter).

``Dims`` describes a DINO; ``detrex_dino(dims)`` / ``dino_official(dims)`` return the state dict
the respective repository's ``model.state_dict()`` has for it. Tied modules (a head shared by
``DINO.class_embed`` and ``transformer.decoder.class_embed``) appear under both names with
identical values, as ``state_dict()`` lists them.
"""
from dataclasses import dataclass
from typing import Callable, Dict

import torch
import torchvision


@dataclass
class Dims:
    levels: int = 4
    enc_layers: int = 6
    dec_layers: int = 6
    d: int = 256
    ffn: int = 2048
    heads: int = 8
    points: int = 4
    queries: int = 900
    num_classes: int = 80
    resnet: str = "resnet50"

    @property
    def backbone_channels(self):
        c = [256, 512, 1024, 2048] if self.resnet == "resnet50" else [64, 128, 256, 512]
        return c[-(self.levels - 1):] if self.levels <= 4 else c  # 4 levels: C3..C5 + 1 extra


def _gen(kind: str, seed: int) -> Callable:
    g = torch.Generator().manual_seed(seed)
    if kind == "zeros":  # names and shapes only: a stride-0 view costs no memory
        return lambda *shape: torch.zeros(()).expand(*shape)
    return lambda *shape: torch.rand(*shape, generator=g) * 0.1 - 0.05


def _msda(sd, prefix, dims: Dims, t):
    hlp = dims.heads * dims.levels * dims.points
    sd[prefix + "sampling_offsets.weight"] = t(hlp * 2, dims.d)
    sd[prefix + "sampling_offsets.bias"] = t(hlp * 2)
    sd[prefix + "attention_weights.weight"] = t(hlp, dims.d)
    sd[prefix + "attention_weights.bias"] = t(hlp)
    for p in ("value_proj", "output_proj"):
        sd[f"{prefix}{p}.weight"] = t(dims.d, dims.d)
        sd[f"{prefix}{p}.bias"] = t(dims.d)


def _linear(sd, prefix, out_dim, in_dim, t):
    sd[prefix + "weight"] = t(out_dim, in_dim)
    sd[prefix + "bias"] = t(out_dim)


def _norm(sd, prefix, dim, t):
    sd[prefix + "weight"] = 1 + t(dim)
    sd[prefix + "bias"] = t(dim)


def _bn(sd, prefix, dim, t):
    sd[prefix + "weight"] = 1 + t(dim)
    sd[prefix + "bias"] = t(dim)
    sd[prefix + "running_mean"] = t(dim)
    sd[prefix + "running_var"] = 1 + t(dim).abs()


def _mlp(sd, prefix, dims_list, t):
    for i, (o, n) in enumerate(zip(dims_list[1:], dims_list[:-1])):
        _linear(sd, f"{prefix}layers.{i}.", o, n, t)


def d2_resnet50(prefix: str, t) -> Dict[str, torch.Tensor]:
    """Detectron2 ResNet-50 (BasicStem + BottleneckBlock, FrozenBN) state dict."""
    sd = {}
    sd[prefix + "stem.conv1.weight"] = t(64, 3, 7, 7)
    _bn(sd, prefix + "stem.conv1.norm.", 64, t)
    in_ch = 64
    for stage, (blocks, width) in enumerate(zip([3, 4, 6, 3], [64, 128, 256, 512])):
        out_ch = width * 4
        for j in range(blocks):
            p = f"{prefix}res{stage + 2}.{j}."
            if j == 0:
                sd[p + "shortcut.weight"] = t(out_ch, in_ch, 1, 1)
                _bn(sd, p + "shortcut.norm.", out_ch, t)
            sd[p + "conv1.weight"] = t(width, in_ch if j == 0 else out_ch, 1, 1)
            _bn(sd, p + "conv1.norm.", width, t)
            sd[p + "conv2.weight"] = t(width, width, 3, 3)
            _bn(sd, p + "conv2.norm.", width, t)
            sd[p + "conv3.weight"] = t(out_ch, width, 1, 1)
            _bn(sd, p + "conv3.norm.", out_ch, t)
        in_ch = out_ch
    return sd


def torchvision_resnet(name: str, prefix: str, t) -> Dict[str, torch.Tensor]:
    """torchvision ``resnetXX`` key names and shapes (module built on the meta device) under
    DETR's FrozenBatchNorm2d (no ``num_batches_tracked``) and without the ImageNet ``fc``
    (DETR's IntermediateLayerGetter stops at layer4); values from ``t``, BN variances positive."""
    with torch.device("meta"):
        net = getattr(torchvision.models, name)(weights=None)
    sd = {}
    for k, v in net.state_dict().items():
        if k.startswith("fc.") or k.endswith("num_batches_tracked"):
            continue
        value = t(*v.shape)
        positive = k.endswith(("running_var", "bn1.weight", "bn2.weight", "bn3.weight"))
        sd[prefix + k] = 1 + value.abs() if positive else value
    return sd


_SHAPES_CACHE = {}


def meta_shapes(config_file: str, overrides=()) -> Dict[str, tuple]:
    """{key: shape} of a config's model, built once on the meta device (cached)."""
    from detectron2.config import LazyConfig, instantiate

    key = (config_file, tuple(overrides))
    if key not in _SHAPES_CACHE:
        cfg = LazyConfig.apply_overrides(LazyConfig.load(config_file), list(overrides))
        with torch.device("meta"):
            model = instantiate(cfg.model)
        _SHAPES_CACHE[key] = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    return _SHAPES_CACHE[key]


def _neck_in_channels(dims: Dims):
    return dims.backbone_channels


def _mmcv_layers(sd, prefix, dims: Dims, t):
    """Encoder/decoder layers in mmcv's BaseTransformerLayer naming (detrex, mmdet 2/3):
    attentions.k (decoder self-attention: nn.MultiheadAttention under .attn), ffns.0.layers.{0.0,1},
    norms.k in operation order."""
    for i in range(dims.enc_layers):
        p = f"{prefix}encoder.layers.{i}."
        _msda(sd, p + "attentions.0.", dims, t)
        _linear(sd, p + "ffns.0.layers.0.0.", dims.ffn, dims.d, t)
        _linear(sd, p + "ffns.0.layers.1.", dims.d, dims.ffn, t)
        for n in range(2):
            _norm(sd, f"{p}norms.{n}.", dims.d, t)
    for i in range(dims.dec_layers):
        p = f"{prefix}decoder.layers.{i}."
        sd[p + "attentions.0.attn.in_proj_weight"] = t(3 * dims.d, dims.d)
        sd[p + "attentions.0.attn.in_proj_bias"] = t(3 * dims.d)
        _linear(sd, p + "attentions.0.attn.out_proj.", dims.d, dims.d, t)
        _msda(sd, p + "attentions.1.", dims, t)
        _linear(sd, p + "ffns.0.layers.0.0.", dims.ffn, dims.d, t)
        _linear(sd, p + "ffns.0.layers.1.", dims.d, dims.ffn, t)
        for n in range(3):
            _norm(sd, f"{p}norms.{n}.", dims.d, t)


def detrex_dino(dims: Dims, values: str = "random", seed: int = 0) -> Dict[str, torch.Tensor]:
    """``projects/dino/modeling/dino.py`` DINO (detrex): Detectron2 ResNet, ChannelMapper
    (ConvNormAct: conv/norm), DINOTransformer with BaseTransformerLayer (attentions / ffns /
    norms), 7 class/box heads owned by DINO and aliased in transformer.decoder, label_enc."""
    t = _gen(values, seed)
    sd = {}
    if dims.resnet != "resnet50":
        raise ValueError("detrex format generator: ResNet-50 only")
    sd.update(d2_resnet50("backbone.", t))
    chans = _neck_in_channels(dims)
    for i, c in enumerate(chans):
        sd[f"neck.convs.{i}.conv.weight"] = t(dims.d, c, 1, 1)
        sd[f"neck.convs.{i}.conv.bias"] = t(dims.d)
        _norm(sd, f"neck.convs.{i}.norm.", dims.d, t)
    sd["neck.extra_convs.0.conv.weight"] = t(dims.d, chans[-1], 3, 3)
    sd["neck.extra_convs.0.conv.bias"] = t(dims.d)
    _norm(sd, "neck.extra_convs.0.norm.", dims.d, t)
    sd["transformer.level_embeds"] = t(dims.levels, dims.d)
    _mmcv_layers(sd, "transformer.", dims, t)
    _mlp(sd, "transformer.decoder.ref_point_head.", [2 * dims.d, dims.d, dims.d], t)
    _norm(sd, "transformer.decoder.norm.", dims.d, t)
    sd["transformer.tgt_embed.weight"] = t(dims.queries, dims.d)
    _linear(sd, "transformer.enc_output.", dims.d, dims.d, t)
    _norm(sd, "transformer.enc_output_norm.", dims.d, t)
    for i in range(dims.dec_layers + 1):  # 6 decoder heads + the two-stage (encoder) head
        _linear(sd, f"class_embed.{i}.", dims.num_classes, dims.d, t)
        _mlp(sd, f"bbox_embed.{i}.", [dims.d, dims.d, dims.d, 4], t)
    for k in [k for k in sd if k.startswith(("class_embed.", "bbox_embed."))]:
        sd["transformer.decoder." + k] = sd[k]  # tied: self.transformer.decoder.class_embed = self.class_embed
    sd["label_enc.weight"] = t(dims.num_classes, dims.d)
    return sd


def dino_official(
    dims: Dims, values: str = "random", seed: int = 0, shared_heads: bool = True
) -> Dict[str, torch.Tensor]:
    """``models/dino/dino.py`` DINO (IDEA-Research/DINO, config DINO_4scale/5scale): Joiner
    (backbone.0.body = torchvision ResNet with FrozenBN), input_proj Sequential(conv, GN),
    DeformableTransformer (encoder/decoder layers with norm1..3, linear1/2), class heads with
    num_classes=91 (COCO ids), shared decoder heads (dec_pred_*_embed_share=True), unshared
    two-stage heads (two_stage_*_embed_share=False), label_enc of dn_labelbook_size + 1 = 92."""
    t = _gen(values, seed)
    sd = torchvision_resnet(dims.resnet, "backbone.0.body.", t)
    chans = _neck_in_channels(dims)
    for i, c in enumerate(chans):
        sd[f"input_proj.{i}.0.weight"] = t(dims.d, c, 1, 1)
        sd[f"input_proj.{i}.0.bias"] = t(dims.d)
        _norm(sd, f"input_proj.{i}.1.", dims.d, t)
    k = len(chans)
    sd[f"input_proj.{k}.0.weight"] = t(dims.d, chans[-1], 3, 3)
    sd[f"input_proj.{k}.0.bias"] = t(dims.d)
    _norm(sd, f"input_proj.{k}.1.", dims.d, t)
    sd["transformer.level_embed"] = t(dims.levels, dims.d)
    for i in range(dims.enc_layers):
        p = f"transformer.encoder.layers.{i}."
        _msda(sd, p + "self_attn.", dims, t)
        _norm(sd, p + "norm1.", dims.d, t)
        _linear(sd, p + "linear1.", dims.ffn, dims.d, t)
        _linear(sd, p + "linear2.", dims.d, dims.ffn, t)
        _norm(sd, p + "norm2.", dims.d, t)
    for i in range(dims.dec_layers):
        p = f"transformer.decoder.layers.{i}."
        _msda(sd, p + "cross_attn.", dims, t)
        _norm(sd, p + "norm1.", dims.d, t)
        sd[p + "self_attn.in_proj_weight"] = t(3 * dims.d, dims.d)
        sd[p + "self_attn.in_proj_bias"] = t(3 * dims.d)
        _linear(sd, p + "self_attn.out_proj.", dims.d, dims.d, t)
        _norm(sd, p + "norm2.", dims.d, t)
        _linear(sd, p + "linear1.", dims.ffn, dims.d, t)
        _linear(sd, p + "linear2.", dims.d, dims.ffn, t)
        _norm(sd, p + "norm3.", dims.d, t)
    _norm(sd, "transformer.decoder.norm.", dims.d, t)
    _mlp(sd, "transformer.decoder.ref_point_head.", [2 * dims.d, dims.d, dims.d], t)
    sd["transformer.tgt_embed.weight"] = t(dims.queries, dims.d)
    _linear(sd, "transformer.enc_output.", dims.d, dims.d, t)
    _norm(sd, "transformer.enc_output_norm.", dims.d, t)
    _mlp(sd, "transformer.enc_out_bbox_embed.", [dims.d, dims.d, dims.d, 4], t)
    _linear(sd, "transformer.enc_out_class_embed.", 91, dims.d, t)
    for i in range(dims.dec_layers):
        if i == 0 or not shared_heads:
            _linear(sd, f"class_embed.{i}.", 91, dims.d, t)
            _mlp(sd, f"bbox_embed.{i}.", [dims.d, dims.d, dims.d, 4], t)
        else:  # one module listed under every index
            for k in [k for k in sd if k.startswith(("class_embed.0.", "bbox_embed.0."))]:
                sd[k.replace(".0.", f".{i}.", 1)] = sd[k]
    for k in [k for k in sd if k.startswith(("class_embed.", "bbox_embed."))]:
        sd["transformer.decoder." + k] = sd[k]
    sd["label_enc.weight"] = t(92, dims.d)
    return sd



def co_dino_official(
    dims: Dims, values: str = "random", seed: int = 0, mmdet3: bool = False
) -> Dict[str, torch.Tensor]:
    """Sense-X/Co-DETR ``CoDETR`` with ``co_dino_5scale_r50_1x_coco.py`` (mmdet 2.x; with
    ``mmdet3`` the MMDetection 3 port, whose label embedding lives in ``dn_generator``): mmdet
    ResNet (torchvision names + ``num_batches_tracked``), ChannelMapper of ConvModules (bias-free
    conv + ``gn``), CoDINOHead (cls/reg_branches, 7 = 6 decoder + 1 two-stage, reg branch
    Sequential(Linear, ReLU, Linear, ReLU, Linear)), CoDinoTransformer (level_embeds, enc_output,
    query_embed, aux_pos_trans for 2 co-heads, mmcv layers, ref_point_head = build_MLP Sequential),
    RPNHead (9 anchors), Shared2FCBBoxHead, ATSS head (stacked_convs=1, ConvModule conv + gn)."""
    t = _gen(values, seed)
    d = dims.d
    sd = _mmdet_resnet_and_neck(dims, t)
    q = "query_head."
    sd[q + "transformer.level_embeds"] = t(dims.levels, d)
    _linear(sd, q + "transformer.enc_output.", d, d, t)
    _norm(sd, q + "transformer.enc_output_norm.", d, t)
    sd[q + "transformer.query_embed.weight"] = t(dims.queries, d)
    for k in range(2):
        _linear(sd, f"{q}transformer.aux_pos_trans.{k}.", d, 2 * d, t)
        _norm(sd, f"{q}transformer.aux_pos_trans_norm.{k}.", d, t)
    _mmcv_layers(sd, q + "transformer.", dims, t)
    _linear(sd, q + "transformer.decoder.ref_point_head.0.", d, 2 * d, t)
    _linear(sd, q + "transformer.decoder.ref_point_head.2.", d, d, t)
    _norm(sd, q + "transformer.decoder.norm.", d, t)
    for i in range(dims.dec_layers + 1):
        _linear(sd, f"{q}cls_branches.{i}.", dims.num_classes, d, t)
        for j, o in ((0, d), (2, d), (4, 4)):
            _linear(sd, f"{q}reg_branches.{i}.{j}.", o, d, t)
    label = q + ("dn_generator.label_embedding.weight" if mmdet3 else "label_embedding.weight")
    sd[label] = t(dims.num_classes, d)
    _co_detr_aux_heads(sd, dims, t, num_pyramid_levels=dims.levels + 1)
    return sd


def _mmdet_resnet_and_neck(dims: Dims, t) -> Dict[str, torch.Tensor]:
    """mmdet ResNet (torchvision names + ``num_batches_tracked``) and ChannelMapper of
    ConvModules (bias-free conv + ``gn``), one extra 3x3 stride-2 level on the last input."""
    d = dims.d
    sd = torchvision_resnet(dims.resnet, "backbone.", t)
    for k in [k for k in sd if k.endswith("running_var")]:
        sd[k[: -len("running_var")] + "num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    chans = dims.backbone_channels
    for i, c in enumerate(chans):
        sd[f"neck.convs.{i}.conv.weight"] = t(d, c, 1, 1)
        _norm(sd, f"neck.convs.{i}.gn.", d, t)
    sd["neck.extra_convs.0.conv.weight"] = t(d, chans[-1], 3, 3)
    _norm(sd, "neck.extra_convs.0.gn.", d, t)
    return sd


def _co_detr_aux_heads(sd, dims: Dims, t, num_pyramid_levels: int) -> None:
    """``query_head.downsample`` (Conv2d 3x3 s2 + GroupNorm), RPNHead (9 anchors),
    Shared2FCBBoxHead, CoATSSHead (stacked_convs=1, one ``Scale`` per pyramid level)."""
    d, q = dims.d, "query_head."
    sd[q + "downsample.0.weight"] = t(d, d, 3, 3)
    sd[q + "downsample.0.bias"] = t(d)
    _norm(sd, q + "downsample.1.", d, t)
    sd["rpn_head.rpn_conv.weight"], sd["rpn_head.rpn_conv.bias"] = t(d, d, 3, 3), t(d)
    sd["rpn_head.rpn_cls.weight"], sd["rpn_head.rpn_cls.bias"] = t(9, d, 1, 1), t(9)
    sd["rpn_head.rpn_reg.weight"], sd["rpn_head.rpn_reg.bias"] = t(36, d, 1, 1), t(36)
    r = "roi_head.0.bbox_head."
    _linear(sd, r + "shared_fcs.0.", 1024, d * 7 * 7, t)
    _linear(sd, r + "shared_fcs.1.", 1024, 1024, t)
    _linear(sd, r + "fc_cls.", dims.num_classes + 1, 1024, t)
    _linear(sd, r + "fc_reg.", dims.num_classes * 4, 1024, t)
    b = "bbox_head.0."
    for tower in ("cls_convs", "reg_convs"):
        sd[f"{b}{tower}.0.conv.weight"] = t(d, d, 3, 3)
        _norm(sd, f"{b}{tower}.0.gn.", d, t)
    for name, o in (("atss_cls", dims.num_classes), ("atss_reg", 4), ("atss_centerness", 1)):
        sd[f"{b}{name}.weight"], sd[f"{b}{name}.bias"] = t(o, d, 3, 3), t(o)
    for k in range(num_pyramid_levels):
        sd[f"{b}scales.{k}.scale"] = 1 + t(1)[0]


def co_deformable_detr_official(dims: Dims, values: str = "random", seed: int = 0) -> Dict[str, torch.Tensor]:
    """Sense-X/Co-DETR ``CoDETR`` with ``co_deformable_detr_r50_1x_coco.py`` (use
    ``Dims(levels=4, queries=300)``): mmdet ResNet C3..C5 (all four stages are built), ChannelMapper
    [512, 1024, 2048] -> 256 (+1 extra level), ``CoDeformDETRHead`` (``query_embedding`` (Q, d) for
    mixed selection, cls/reg_branches 6 decoder + 1 two-stage, ``downsample``),
    ``CoDeformableDetrTransformer(num_co_heads=2)`` = mmdet ``DeformableDetrTransformer`` with
    ``as_two_stage`` (level_embeds, enc_output(_norm), pos_trans Linear(2d, 2d) + pos_trans_norm
    LN(2d); no ``reference_points``) + ``head_pos_embed`` ``nn.Embedding(2, 1, 1, d)`` (weight
    (2, 1)), ``aux_pos_trans.k`` Linear(2d, 2d) + ``aux_pos_trans_norm.k`` LN(2d),
    ``pos_feats_trans.k`` Linear(d, d) + ``pos_feats_norm.k`` LN(d) (``with_coord_feat``);
    mmcv encoder / ``CoDeformableDetrTransformerDecoder`` layers (no decoder norm, no
    ref_point_head); RPN, 2-fc RoI head, ATSS head with 5 scales (strides 8..128)."""
    t = _gen(values, seed)
    d = dims.d
    sd = _mmdet_resnet_and_neck(dims, t)
    q = "query_head."
    sd[q + "query_embedding.weight"] = t(dims.queries, d)
    for i in range(dims.dec_layers + 1):
        _linear(sd, f"{q}cls_branches.{i}.", dims.num_classes, d, t)
        for j, o in ((0, d), (2, d), (4, 4)):
            _linear(sd, f"{q}reg_branches.{i}.{j}.", o, d, t)
    tr = q + "transformer."
    _mmcv_layers(sd, tr, dims, t)
    sd[tr + "level_embeds"] = t(dims.levels, d)
    _linear(sd, tr + "enc_output.", d, d, t)
    _norm(sd, tr + "enc_output_norm.", d, t)
    _linear(sd, tr + "pos_trans.", 2 * d, 2 * d, t)
    _norm(sd, tr + "pos_trans_norm.", 2 * d, t)
    sd[tr + "head_pos_embed.weight"] = t(2, 1)
    for k in range(2):
        _linear(sd, f"{tr}aux_pos_trans.{k}.", 2 * d, 2 * d, t)
        _norm(sd, f"{tr}aux_pos_trans_norm.{k}.", 2 * d, t)
        _linear(sd, f"{tr}pos_feats_trans.{k}.", d, d, t)
        _norm(sd, f"{tr}pos_feats_norm.{k}.", d, t)
    _co_detr_aux_heads(sd, dims, t, num_pyramid_levels=dims.levels + 1)
    return sd


def _mmdet_resnet50_fpn(t, feat: int) -> Dict[str, torch.Tensor]:
    """mmdet ResNet-50 (BN with step counters) and FPN (start_level=1, add_extra_convs="on_output",
    5 outputs of ``feat`` channels): TOOD's and ATSS's backbone and neck."""
    sd = torchvision_resnet("resnet50", "backbone.", t)
    for k in [k for k in sd if k.endswith("running_var")]:
        sd[k[: -len("running_var")] + "num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    for i, c in enumerate([512, 1024, 2048]):
        sd[f"neck.lateral_convs.{i}.conv.weight"], sd[f"neck.lateral_convs.{i}.conv.bias"] = t(feat, c, 1, 1), t(feat)
    for i in range(5):
        sd[f"neck.fpn_convs.{i}.conv.weight"], sd[f"neck.fpn_convs.{i}.conv.bias"] = t(feat, feat, 3, 3), t(feat)
    return sd


def atss(values: str = "random", seed: int = 0, num_classes: int = 80, stacked_convs: int = 4,
         feat: int = 256) -> Dict[str, torch.Tensor]:
    """ATSS-R50-FPN 1x: mmdet ``ATSSHead`` (2.x / 3.x names: ``{cls,reg}_convs.i.{conv,gn}``
    ConvModules without conv bias, ``atss_cls`` / ``atss_reg`` / ``atss_centerness`` 3x3 convs,
    one anchor per location, ``scales.k.scale`` 0-d) on mmdet's ResNet-50 + FPN."""
    t = _gen(values, seed)
    sd = _mmdet_resnet50_fpn(t, feat)
    h = "bbox_head."
    for tower in ("cls_convs", "reg_convs"):
        for i in range(stacked_convs):
            sd[f"{h}{tower}.{i}.conv.weight"] = t(feat, feat, 3, 3)
            _norm(sd, f"{h}{tower}.{i}.gn.", feat, t)
    for name, o in (("atss_cls", num_classes), ("atss_reg", 4), ("atss_centerness", 1)):
        sd[f"{h}{name}.weight"], sd[f"{h}{name}.bias"] = t(o, feat, 3, 3), t(o)
    for k in range(5):
        sd[f"{h}scales.{k}.scale"] = 1 + t(1)[0]
    return sd


def tood(values: str = "random", seed: int = 0, official: bool = False, num_classes: int = 80,
         stacked_convs: int = 6, feat: int = 256) -> Dict[str, torch.Tensor]:
    """TOOD-R50-FPN 1x: mmdet ``TOODHead`` (``official=False``: mmdet 2.x / 3.x names) or
    fcjian/TOOD's (``official=True``: ``la_conv1/2``, ``cls_prob_conv1/2``, ``reg_offset_conv1/2``);
    mmdet ResNet-50 and FPN (start_level=1, add_extra_convs="on_output", 5 outputs)."""
    t = _gen(values, seed)
    sd = _mmdet_resnet50_fpn(t, feat)
    h = "bbox_head."
    for i in range(stacked_convs):
        sd[f"{h}inter_convs.{i}.conv.weight"] = t(feat, feat, 3, 3)
        _norm(sd, f"{h}inter_convs.{i}.gn.", feat, t)
    cat = feat * stacked_convs
    for dec in ("cls_decomp", "reg_decomp"):
        la = (f"{h}{dec}.la_conv1.", f"{h}{dec}.la_conv2.") if official else \
            (f"{h}{dec}.layer_attention.0.", f"{h}{dec}.layer_attention.2.")
        hidden = cat // (stacked_convs * 8)  # la_down_rate = 8 * stacked_convs
        sd[la[0] + "weight"], sd[la[0] + "bias"] = t(hidden, cat, 1, 1), t(hidden)
        sd[la[1] + "weight"], sd[la[1] + "bias"] = t(stacked_convs, hidden, 1, 1), t(stacked_convs)
        sd[f"{h}{dec}.reduction_conv.conv.weight"] = t(feat, cat, 1, 1)
        _norm(sd, f"{h}{dec}.reduction_conv.gn.", feat, t)
    sd[h + "tood_cls.weight"], sd[h + "tood_cls.bias"] = t(num_classes, feat, 3, 3), t(num_classes)
    sd[h + "tood_reg.weight"], sd[h + "tood_reg.bias"] = t(4, feat, 3, 3), t(4)
    names = (("cls_prob_conv1", "cls_prob_conv2", "reg_offset_conv1", "reg_offset_conv2") if official else
             ("cls_prob_module.0", "cls_prob_module.2", "reg_offset_module.0", "reg_offset_module.2"))
    shapes = ((feat // 4, cat, 1), (1, feat // 4, 3), (feat // 4, cat, 1), (8, feat // 4, 3))
    for name, (o, i, k) in zip(names, shapes):
        sd[f"{h}{name}.weight"], sd[f"{h}{name}.bias"] = t(o, i, k, k), t(o)
    for k in range(5):
        sd[f"{h}scales.{k}.scale"] = 1 + t(1)[0]
    return sd
