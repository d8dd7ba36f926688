"""Decoders: the ``QueryDecoder`` driver, its layers and box coders."""
from codetr.modeling.coders import BoxCoder, PointCoder
from .conditional import ConditionalDecoder, ConditionalDecoderLayer, ConditionalSpatialQuery
from .deformable import DeformableDecoder, DeformableDecoderLayer, init_heads
from .driver import DecoderOutput, QueryDecoder

__all__ = [
    "BoxCoder",
    "ConditionalDecoder",
    "ConditionalDecoderLayer",
    "ConditionalSpatialQuery",
    "DecoderOutput",
    "DeformableDecoder",
    "DeformableDecoderLayer",
    "PointCoder",
    "QueryDecoder",
    "init_heads",
]
