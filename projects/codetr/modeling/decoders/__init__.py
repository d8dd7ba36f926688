"""Decoders: the ``QueryDecoder`` driver, its layers and box coders."""
from codetr.modeling.coders import BoxCoder, DirectBoxCoder, PointCoder
from .conditional import ConditionalDecoder, ConditionalDecoderLayer, ConditionalSpatialQuery
from .detr import DETRDecoder, DETRDecoderLayer
from .deformable import DeformableDecoder, DeformableDecoderLayer, init_heads
from .driver import DecoderOutput, QueryDecoder

__all__ = [
    "BoxCoder",
    "ConditionalDecoder",
    "ConditionalDecoderLayer",
    "ConditionalSpatialQuery",
    "DETRDecoder",
    "DETRDecoderLayer",
    "DecoderOutput",
    "DeformableDecoder",
    "DeformableDecoderLayer",
    "DirectBoxCoder",
    "PointCoder",
    "QueryDecoder",
    "init_heads",
]
