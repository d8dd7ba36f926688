"""Backbones and necks. Backbones are Detectron2's (e.g. ``detectron2.modeling.ResNet``)."""
from .channel_mapper import ChannelMapper, downsample_mask, masked_group_norm

__all__ = ["ChannelMapper", "downsample_mask", "masked_group_norm"]
