"""Encoders: feature levels in, one ``EncoderOutput`` out."""
from .detr import DETREncoder, DETREncoderLayer
from .deformable import DeformableEncoder, DeformableEncoderLayer, get_encoder_reference_points
from .output import EncoderOutput, flatten_levels, get_valid_ratios

__all__ = [
    "DETREncoder",
    "DETREncoderLayer",
    "DeformableEncoder",
    "DeformableEncoderLayer",
    "EncoderOutput",
    "flatten_levels",
    "get_encoder_reference_points",
    "get_valid_ratios",
]
