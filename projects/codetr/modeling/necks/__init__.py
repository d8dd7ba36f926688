"""Necks: backbone maps -> the feature levels a detector reads (backbones are Detectron2's, e.g. ``ResNet``)."""
from .channel_mapper import ChannelMapper, masked_group_norm, padding_mask_at_stride
from .input_proj import InputProjection
from .single_scale_adapter import SingleScalePyramidAdapter

__all__ = ["ChannelMapper", "InputProjection", "SingleScalePyramidAdapter", "masked_group_norm", "padding_mask_at_stride"]
