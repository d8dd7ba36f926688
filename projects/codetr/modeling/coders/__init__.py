"""Box coders: how a decoder's query state (its reference) is parametrised, refined by a box
head's output, and turned into the predicted box. Queries and decoders both import them.

- ``BoxCoder`` (4-d normalised cxcywh boxes: Deformable DETR, DINO, DAB-DETR),
- ``PointCoder`` (2-d normalised points: Conditional DETR),
- ``DirectBoxCoder`` (no reference: DETR),
- ``XYZRCoder`` (AdaMixer's (x, y, z, r) in pixels: AdaMixer, DEQDet, RNNDet).

Every coder has ``ref_dim``, ``from_boxes(boxes)``, ``decode(delta, reference)``,
``refine(delta, reference)`` and ``for_images(image_wh)``: the coder to use for one batch of
images ((N, 2) (w, h) pixels of each image's normalisation size, ``EncoderOutput.image_wh``). The
normalised coders ignore the sizes (they return themselves); ``XYZRCoder`` needs them to cross
between pixels and normalised boxes.
"""
from .boxes import BoxCoder, DirectBoxCoder, PointCoder
from .xyzr import XYZRCoder, cxcywh_to_xyzr, refine_xyzr, xyxy_to_xyzr, xyzr_to_cxcywh, xyzr_to_xyxy

__all__ = ["BoxCoder", "DirectBoxCoder", "PointCoder", "XYZRCoder", "cxcywh_to_xyzr", "refine_xyzr", "xyxy_to_xyzr", "xyzr_to_cxcywh",
           "xyzr_to_xyxy"]
