"""Necks: backbone maps -> the feature levels a detector reads (backbones are Detectron2's, e.g. ``ResNet``)."""
from .channel_mapper import ChannelMapper, downsample_mask, masked_group_norm
from .input_proj import InputProjection

__all__ = ["ChannelMapper", "InputProjection", "downsample_mask", "masked_group_norm"]
