"""Co-DETR (Zong et al. 2023, "DETRs with Collaborative Hybrid Assignments Training").

A composition around any ``QueryDetector`` (DINO, Deformable-DETR++, ...), which stays unaware of
it; CoDETR uses only the detector's declared hooks. During training:

1. the detector's preprocessing, encoder (``encode``) and own losses (``detection_losses``:
   matching + denoising queries), unchanged;
2. the detector's pyramid view of the encoder output (``pyramid``: for a deformable encoder its
   L memory levels) plus one extra level (3x3 stride-2 conv + GN on the last one): the auxiliary
   pyramid ``p{log2 stride}`` (Co-DINO 5 scales: p2..p7, Co-Deformable-DETR 4 scales: p3..p7);
3. each auxiliary head k (Faster R-CNN, ATSS, ...) on that pyramid: its losses (already scaled
   by ``lambda_2 * num_decoder_layers``; keys ``<name>_head{k}``) and its assignment
   (``AssignedSamples``);
4. per head, its customized positive queries (``PositiveQueries`` -> ``FixedTargetQueries``;
   Co-DINO style: contents, Co-Deformable-DETR style: contents and fixed query positions)
   through the detector's decoder alone (``decode_fixed``), with the criterion's fixed-target
   loss on every decoder layer (keys ``loss_*_aux{k}``, ``loss_*_aux{k}_{i}``), normalised by
   the all-reduced number of positive queries and weighted by ``lambda_1``.

At inference (``eval_module="detr"``) only the detector runs: same modules, time and memory.
``eval_module="one-stage"`` / ``"two-stage"`` evaluate the ATSS / Faster R-CNN head on the
auxiliary pyramid instead (official ``eval_module``).

``padding_is_image`` inputs (the LSJ mapper, official ``with_attn_mask=False``) are the
detector's business: no padding mask, targets and predictions normalised by the padded size
(``QueryDetector.normalization_sizes``), passed to the positive queries as well.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import ImageList
from torch import Tensor, nn

from codetr.modeling.encoders import EncoderOutput
from codetr.modeling.losses import reduce_num_boxes
from codetr.modeling.necks.channel_mapper import ConvGN
from codetr.modeling.queries.positive_queries import PositiveQueries

from .query_detector import QueryDetector

__all__ = ["CoDETR", "TRAINING_ONLY_PREFIXES"]

EVAL_MODULES = ("detr", "one-stage", "two-stage")
# state-dict prefixes of the auxiliary branch, which inference with the DETR decoder never runs
# (tools/strip_aux_weights.py drops them; the Checkpointer accepts checkpoints without them)
TRAINING_ONLY_PREFIXES = ("aux_heads.", "positive_queries.", "downsample.", "pyramid_adapter.")


def _num_classes(head: nn.Module) -> Optional[int]:
    """Number of classes of an auxiliary head (its own attribute or its RoI heads'), if known."""
    for owner in (head, getattr(head, "roi_heads", None)):
        if owner is not None and isinstance(getattr(owner, "num_classes", None), int):
            return owner.num_classes
    return None


@META_ARCH_REGISTRY.register()
class CoDETR(nn.Module):
    """Co-DETR around a query detector.

    Args:
        detector: a ``QueryDetector``, e.g. ``DINO`` (Co-DINO: QFL criterion, 5 scales, Soft-NMS;
            Co-Deformable-DETR: the transformer's Deformable-DETR++ options, no denoising).
        aux_heads: K auxiliary heads (K = 0, 1, 2, ...). Protocol: ``head(images, pyramid,
            gt_instances)`` returns ``(losses dict, AssignedSamples)`` in training and N
            ``Instances`` (resized-image coordinates) in eval mode; ``pyramid`` is a dict
            ``{"p2": (N, C, H, W), ...}``, boxes absolute xyxy of the resized image.
        positive_queries: ``PositiveQueries`` with one projection per head, or None to train
            without customized positive queries (the heads then train the encoder only). Its
            "co_dino" style queries bring no positions: the decoder needs a ``ref_point_head``;
            "co_deformable" style queries bring theirs.
        aux_query_weight: lambda_1, weight of the positive-query losses (1).
        eval_module: "detr" (the DINO detector), "one-stage" (the ATSS head) or "two-stage"
            (the Faster R-CNN head); see ``eval_heads``.
        eval_heads: index into ``aux_heads`` of the one-stage / two-stage head,
            e.g. ``{"two-stage": 0, "one-stage": 1}``.
        pyramid_num_groups: GroupNorm groups of the extra pyramid level.
        pyramid_adapter: optional module ``adapter(levels, masks) -> maps`` with a ``strides``
            attribute, that builds the whole auxiliary pyramid from the detector's ``pyramid``
            (L maps) and the encoder's L padding masks: for detectors whose encoder output is not
            a multi-scale pyramid (a single-scale encoder needs the Co-DETR paper's multi-scale
            adapter). None: the detector's levels plus one extra stride-2 level (``downsample``).
        num_classes, num_queries: optional; checked against the detector (configs interpolate
            them into the detector, the heads and the positive queries, so that
            ``model.num_classes=8 model.num_queries=100`` works on the command line).
    """

    def __init__(
        self,
        detector: QueryDetector,
        aux_heads: Sequence[nn.Module] = (),
        positive_queries: Optional[PositiveQueries] = None,
        aux_query_weight: float = 1.0,
        eval_module: str = "detr",
        eval_heads: Optional[Dict[str, int]] = None,
        pyramid_num_groups: int = 32,
        pyramid_adapter: Optional[nn.Module] = None,
        num_classes: Optional[int] = None,
        num_queries: Optional[int] = None,
    ):
        super().__init__()
        if num_queries is not None and num_queries != detector.num_queries:
            raise ValueError(f"CoDETR: num_queries={num_queries} but the detector has {detector.num_queries}")
        if num_classes is not None:
            found = {"detector": detector.criterion.num_classes}
            found.update({f"aux_heads[{i}]": _num_classes(h) for i, h in enumerate(aux_heads)})
            if positive_queries is not None:
                found["positive_queries"] = positive_queries.num_classes
            wrong = {k: v for k, v in found.items() if v is not None and v != num_classes}
            if wrong:
                raise ValueError(f"CoDETR: num_classes={num_classes} but {wrong}")
        if eval_module not in EVAL_MODULES:
            raise ValueError(f"CoDETR: eval_module={eval_module!r}; expected one of {EVAL_MODULES}")
        eval_heads = dict(eval_heads or {})
        if eval_module != "detr" and eval_heads.get(eval_module) is None:
            raise ValueError(f"CoDETR: eval_module={eval_module!r} needs eval_heads[{eval_module!r}], got {eval_heads}")
        if positive_queries is not None and positive_queries.num_heads != len(aux_heads):
            # unused projections would also break DDP without find_unused_parameters
            raise ValueError(
                f"CoDETR: positive_queries has {positive_queries.num_heads} head projections for {len(aux_heads)} "
                "aux heads; set positive_queries.num_heads to the number of aux heads"
            )
        ref_point_head = getattr(detector.decoder, "ref_point_head", None)
        if positive_queries is not None and positive_queries.style == "co_dino" and ref_point_head is None:
            raise ValueError(
                "CoDETR: positive_queries.style='co_dino' gives no query positions and the detector's decoder "
                "has no ref_point_head to derive them (Co-Deformable-DETR: use style='co_deformable')"
            )
        self.detector = detector
        self.aux_heads = nn.ModuleList(aux_heads)
        self.positive_queries = positive_queries
        self.aux_query_weight = aux_query_weight
        self.eval_module = eval_module
        self.eval_heads = eval_heads
        self.pyramid_adapter = pyramid_adapter
        if pyramid_adapter is not None:
            self.downsample = None
            self.pyramid_strides = list(pyramid_adapter.strides)
        else:
            channels = detector.embed_dim
            self.downsample = ConvGN(channels, channels, 3, 2, pyramid_num_groups) if len(aux_heads) else None
            strides = detector.feature_strides
            self.pyramid_strides = strides + [strides[-1] * 2]
        self.pyramid_names = [f"p{int(math.log2(s))}" for s in self.pyramid_strides]

    @property
    def device(self) -> torch.device:
        return self.detector.device

    @property
    def num_classes(self) -> int:
        return self.detector.num_classes

    @property
    def num_queries(self) -> int:
        return self.detector.num_queries

    @property
    def embed_dim(self) -> int:
        return self.detector.embed_dim

    @property
    def detections_per_image(self) -> int:
        """The most detections per image of the module inference runs (``eval_module``)."""
        if self.eval_module == "detr":
            return self.detector.detections_per_image
        return self.aux_heads[self.eval_heads[self.eval_module]].test_detections_per_image

    @property
    def training_only_state_prefixes(self) -> Tuple[str, ...]:
        """State-dict prefixes of the modules inference does not use (read by
        ``codetr.checkpoint.Checkpointer``: an aux-stripped checkpoint then loads as complete):
        the auxiliary branch when the DETR decoder evaluates, nothing otherwise."""
        return TRAINING_ONLY_PREFIXES if self.eval_module == "detr" else ()

    # ------------------------------------------------------------------ entry point
    def forward(self, batched_inputs: List[Dict]):
        det = self.detector
        if not self.training and self.eval_module == "detr":
            return det(batched_inputs)  # exactly the detector: nothing auxiliary runs
        images = det.preprocess_image(batched_inputs)
        norm_sizes = det.normalization_sizes(images, batched_inputs)
        enc = det.encode(images)
        if not self.training:
            head = self.aux_heads[self.eval_heads[self.eval_module]]
            return det.postprocess(head(images, self.pyramid(enc)), batched_inputs)
        losses = det.detection_losses(enc, det.prepare_targets(batched_inputs, norm_sizes))
        if len(self.aux_heads):
            losses.update(self.aux_losses(images, enc, batched_inputs, norm_sizes))
        return losses

    # ------------------------------------------------------------------ auxiliary branch
    def pyramid(self, enc: EncoderOutput) -> Dict[str, Tensor]:
        """The detector's pyramid of the encoder output -> {"p{l}": (N, C, H_l, W_l)}: its L
        levels and one extra level (3x3 stride-2 conv + GN on the last one; GN statistics over
        valid positions), or what ``pyramid_adapter`` makes of them."""
        levels = self.detector.pyramid(enc)
        if self.pyramid_adapter is not None:
            return dict(zip(self.pyramid_names, self.pyramid_adapter(levels, list(enc.masks))))
        mask = enc.masks[-1] if enc.has_padding else None
        levels.append(self.downsample(levels[-1], mask))  # zeroes the padding; GN over valid outputs
        return dict(zip(self.pyramid_names, levels))

    def aux_losses(self, images: ImageList, enc: EncoderOutput, batched_inputs: List[Dict], norm_sizes):
        det = self.detector
        pyramid = self.pyramid(enc)
        gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        losses = {}
        for k, head in enumerate(self.aux_heads):
            head_losses, samples = head(images, pyramid, gt_instances)
            losses.update({f"{name}_head{k}": v for name, v in head_losses.items()})
            if self.positive_queries is None:
                continue
            fixed = self.positive_queries(samples, k, norm_sizes)
            outputs = det.decode_fixed(enc, fixed)
            num_pos = reduce_num_boxes(fixed.positive.sum(), self.device)
            aux = det.criterion.fixed_target_losses(outputs, fixed, num_pos, f"_aux{k}")
            losses.update({name: v * self.aux_query_weight for name, v in aux.items()})
        return losses
