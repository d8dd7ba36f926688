"""Backbones and necks. Backbones are Detectron2's (e.g. ``detectron2.modeling.ResNet``)."""
from .channel_mapper import ChannelMapper, padding_mask_at_stride, masked_group_norm

__all__ = ["ChannelMapper", "padding_mask_at_stride", "masked_group_norm"]
