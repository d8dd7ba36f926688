"""AdaMixer (Gao et al., CVPR 2022), DEQDet (Wang et al., ICCV 2023) and RNNDet: query detectors
without an encoder whose decoder is an ``AdaMixerRefiner`` (AdaMixer layers + heads under a loop).

``QueryDetector``'s flow (preprocessing with the padding mask, targets, the criterion, top-k
inference, postprocessing); what is their own:

- ``encode``: backbone (C2..C5) -> ``SharedNormChannelMapper`` -> padded positions zeroed (the 3-d
  sampling then reads beyond an image what it reads beyond the same image alone) ->
  ``EncoderOutput.from_levels`` (no encoder, no positional embedding), carrying each image's
  normalisation size ``image_wh`` (xyzr positions are pixels);
- ``matching_queries``: ``WholeImageQueries``, learned contents at the whole-image box (xyzr pixels).

The rest is the base's. Fixed-target queries (Co-DETR's positive queries,
``CoDETR(detector=DEQDet(...))``) become a group whose references are xyzr pixels (the decoder's
``XYZRCoder`` for the encoder output's image sizes); they run first, with the matching queries,
through the decoder as one state (DEQDet's perturbation and fixed point act on all of them), the
group attention mask setting blocked pairs of the IoF bias to -inf; each output splits per group.
The decoder (``AdaMixerRefiner``, a ``QueryDecoder``) returns its loop's outputs in order; they
become the criterion's dict, the last as "pred_*" and the others as "aux_outputs" (loss suffixes
``_0``, ``_1``, ...). DEQDet (``FixedPointRefinement``): init, init^1, init^2, iter1, iter3, iter6,
iter9, iter12 -> ``_0`` .. ``_7``, iter20 -> no suffix; AdaMixer: stage i -> ``_i``, the last stage
-> none; RNNDet: init, step1, ... At inference the loop returns its last prediction (DEQDet: g then
f ``decoder.loop.inference_steps`` times, 20 + 1 by default; change it on the model or in the
config, ``model.decoder.loop.inference_steps=50``).

Inference: top ``select_box_nums_for_evaluation`` (the number of queries in the official configs)
over queries x classes of sigmoid scores, no NMS; the configs return them all, unclipped
(``detectron2_postprocess=False``: MCG-NJU ``adamixer_decoder.py`` ``simple_test`` and
``deq_det_roi_head.py`` ``DEQDetRoIHead.predict`` divide the top-k boxes by ``scale_factor`` and
keep them all, where Detectron2's ``detector_postprocess`` would drop those outside the image).
DEQDet's configs also run the backbone and neck under fp16 autocast at inference on CUDA
(``inference_autocast="float16"``), as the official ``eqdet.py`` ``DEQDet.predict`` does.

``DEQDet`` and ``RNNDet`` are ``AdaMixer`` with a check of the loop and of the two layers (g, f)
it iterates; the registered names let configs and logs say which detector they are.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from detectron2.modeling import META_ARCH_REGISTRY, Backbone
from detectron2.structures import ImageList
from torch import nn

from codetr.layers.adaptive_sampling import zero_padding
from codetr.modeling.criterion import DETRCriterion
from codetr.modeling.decoders.fixed_point import FixedPointRefinement, UnrolledRefinement
from codetr.modeling.decoders.refinement import AdaMixerRefiner
from codetr.modeling.encoders import EncoderOutput
from codetr.modeling.necks import padding_mask_at_stride
from codetr.modeling.queries import QueryGroup
from codetr.modeling.queries.fixed_target import FixedTargetQueries
from codetr.modeling.queries.whole_image import WholeImageQueries

from .query_detector import QueryDetector, normalization_wh

__all__ = ["AdaMixer", "DEQDet", "RNNDet"]

AUTOCAST_DTYPES = {None: None, "float16": torch.float16, "bfloat16": torch.bfloat16}


@META_ARCH_REGISTRY.register()
class AdaMixer(QueryDetector):
    """Args:
        backbone: a Detectron2 ``Backbone`` (ResNet with res2..res5).
        neck: ``SharedNormChannelMapper`` (its ``strides`` must be the decoder layers' strides).
        queries: ``WholeImageQueries``.
        decoder: ``AdaMixerRefiner``.
        criterion: ``DETRCriterion`` (official: focal 2, L1 5, GIoU 2 on normalised xyxy).
        num_classes, num_queries: optional, checked against the heads / criterion / queries.
        inference_autocast: None, "float16" or "bfloat16": at inference on CUDA, backbone and
            neck run under ``torch.autocast("cuda", dtype)`` and their maps are cast back to the
            input's dtype (official DEQDet ``eqdet.py`` ``DEQDet.predict``: float16, then
            float32). No effect in training or on other devices (the official autocast is for
            CUDA only).
        **kwargs: ``QueryDetector``'s (pixel_mean, pixel_std, select_box_nums_for_evaluation,
            aux_loss, size_divisibility, nms, input_format, ...).
    Submodules (state-dict prefixes): ``backbone``, ``neck``, ``queries``, ``decoder``.
    """

    def __init__(
        self,
        backbone: Backbone,
        neck: nn.Module,
        queries: WholeImageQueries,
        decoder: AdaMixerRefiner,
        criterion: DETRCriterion,
        num_classes: Optional[int] = None,
        num_queries: Optional[int] = None,
        inference_autocast: Optional[str] = None,
        **kwargs,
    ):
        super().__init__(backbone, None, neck, None, criterion, None, **kwargs)
        name = type(self).__name__
        if inference_autocast not in AUTOCAST_DTYPES:
            raise ValueError(
                f"{name}: inference_autocast={inference_autocast!r}; expected one of {list(AUTOCAST_DTYPES)}"
            )
        self.inference_autocast = inference_autocast
        self.queries = queries
        self.decoder = decoder  # a submodule; the base's ``decoder`` property is overridden below
        if num_queries is not None and num_queries != self.num_queries:
            raise ValueError(f"{name}: num_queries={num_queries} but queries has {self.num_queries}")
        strides = [tuple(float(s) for s in layer.sampling.strides) for layer in decoder.layers]
        if any(s != tuple(float(s) for s in neck.strides) for s in strides):
            raise ValueError(f"{name}: neck strides {list(neck.strides)} but decoder layers sample strides {strides}")
        self.check_num_classes(num_classes, {"decoder.class_heads": decoder.class_heads[0].fc.out_features})

    @property
    def decoder(self) -> AdaMixerRefiner:
        return self._modules["decoder"]

    @property
    def num_queries(self) -> int:
        return self.queries.boxes.shape[0]

    @property
    def embed_dim(self) -> int:
        return self.queries.content.shape[-1]

    def encode(self, images: ImageList) -> EncoderOutput:
        """Neck maps with zeroed padding as an identity encoder's output, and ``image_wh``
        (backbone and neck under ``inference_autocast`` at inference on CUDA)."""
        x = images.tensor
        if self.inference_autocast is not None and not self.training and x.is_cuda:
            with torch.autocast("cuda", dtype=AUTOCAST_DTYPES[self.inference_autocast]):
                features = self.neck(self.backbone(x), images.mask)
            features = [f.to(x.dtype) for f in features]
        else:
            features = self.neck(self.backbone(x), images.mask)
        masks = [padding_mask_at_stride(images.mask, s, f.shape[-2:]) for s, f in zip(self.feature_strides, features)]
        return EncoderOutput.from_levels(zero_padding(features, masks), masks, None, normalization_wh(images.mask))

    def matching_queries(self, enc: EncoderOutput, fixed: Optional[FixedTargetQueries] = None
                         ) -> Tuple[QueryGroup, Dict]:
        """The initial queries: content (N, Q, C) and xyzr (N, Q, 4) pixels of each image (the
        same with or without ``fixed``-target queries decoded alongside)."""
        if enc.image_wh is None:
            raise ValueError(f"{type(self).__name__}: the encoder output has no image_wh (build it with encode())")
        content, xyzr = self.queries(enc.image_wh)
        return QueryGroup(content, xyzr), {}


@META_ARCH_REGISTRY.register()
class DEQDet(AdaMixer):
    """AdaMixer with ``FixedPointRefinement`` over two layers (g, f)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _check_loop(self, FixedPointRefinement)


@META_ARCH_REGISTRY.register()
class RNNDet(AdaMixer):
    """AdaMixer with ``UnrolledRefinement`` over two layers (g, f)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _check_loop(self, UnrolledRefinement)


def _check_loop(model: AdaMixer, loop_type: type) -> None:
    loop, layers = model.decoder.loop, model.decoder.layers
    if not isinstance(loop, loop_type) or len(layers) != 2:
        raise ValueError(
            f"{type(model).__name__}: expected a {loop_type.__name__} loop over 2 layers (g, f), got "
            f"{type(loop).__name__} over {len(layers)}"
        )
