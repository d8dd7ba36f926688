"""Deformable encoder, DINO decoder and the DINO transformer."""
from .decoder import DINODecoder, DINODecoderLayer
from .dino_transformer import DINOTransformer, gen_encoder_output_proposals
from .encoder import DeformableEncoder, DeformableEncoderLayer, get_encoder_reference_points
from .utils import inverse_sigmoid

__all__ = [
    "DINODecoder",
    "DINODecoderLayer",
    "DINOTransformer",
    "DeformableEncoder",
    "DeformableEncoderLayer",
    "gen_encoder_output_proposals",
    "get_encoder_reference_points",
    "inverse_sigmoid",
]
