"""Transformers: the parameter containers (encoder, query selection, decoder) that a
query-detector meta-architecture drives."""
from .deformable import DeformableTransformer

__all__ = ["DeformableTransformer"]
