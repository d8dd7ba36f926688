"""Detector-agnostic building blocks."""
from .ms_deform_attn import MSDeformAttn, extension_available, ms_deform_attn, ms_deform_attn_reference

__all__ = ["MSDeformAttn", "extension_available", "ms_deform_attn", "ms_deform_attn_reference"]
