"""Necks: backbone maps -> the feature levels a detector reads (backbones are Detectron2's, e.g. ``ResNet``)."""
from .channel_mapper import ChannelMapper, downsample_mask, masked_group_norm
from .input_proj import InputProjection
from .single_scale_adapter import SingleScalePyramidAdapter

__all__ = ["ChannelMapper", "InputProjection", "SingleScalePyramidAdapter", "downsample_mask", "masked_group_norm"]
