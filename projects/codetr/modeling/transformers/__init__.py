"""Transformers: the parameter containers (encoder, query selection, decoder) that a
query-detector meta-architecture drives."""
from .deformable import DeformableTransformer
from .single_scale import SingleScaleTransformer

__all__ = ["DeformableTransformer", "SingleScaleTransformer"]
