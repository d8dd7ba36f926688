"""Necks: backbone maps -> the feature levels a detector reads (backbones are Detectron2's, e.g. ``ResNet``)."""
from .channel_mapper import ChannelMapper, masked_group_norm, padding_mask_at_stride

__all__ = ["ChannelMapper", "padding_mask_at_stride", "masked_group_norm"]
