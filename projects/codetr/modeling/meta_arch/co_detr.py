"""Co-DETR (Zong et al. 2023, "DETRs with Collaborative Hybrid Assignments Training").

A composition around a DINO detector; DINO itself is unaware of it. During training:

1. DINO's backbone, neck and encoder (``DINO.forward_transformer``), its matching + denoising
   queries and criterion, unchanged;
2. the encoder memory split back into its L levels plus one extra level (3x3 stride-2 conv + GN
   on the last one): the auxiliary pyramid ``p{log2 stride}`` (Co-DINO 5 scales: p2..p7,
   Co-Deformable-DETR 4 scales: p3..p7);
3. each auxiliary head k (Faster R-CNN, ATSS, ...) on that pyramid: its losses (already scaled
   by ``lambda_2 * num_decoder_layers``; keys ``<name>_head{k}``) and its assignment
   (``AssignedSamples``);
4. per head, its customized positive queries (``PositiveQueries`` -> ``FixedTargetQueries``;
   Co-DINO style: contents, Co-Deformable-DETR style: contents and fixed query positions)
   through the shared decoder alone (``DINO.decode(enc, fixed)``), with the criterion's
   fixed-target loss on every decoder layer (keys ``loss_*_aux{k}``, ``loss_*_aux{k}_{i}``),
   normalised by the all-reduced number of positive queries and weighted by ``lambda_1``.

At inference (``eval_module="detr"``) only the DINO detector runs: same modules, time and
memory. ``eval_module="one-stage"`` / ``"two-stage"`` evaluate the ATSS / Faster R-CNN head on
the auxiliary pyramid instead (official ``eval_module``).

``padding_is_image`` inputs (the LSJ mapper, official ``with_attn_mask=False``): the padded
area of the batch counts as image: no padding mask, targets and predictions normalised by the
padded size.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

import torch
from detectron2.modeling import META_ARCH_REGISTRY, detector_postprocess
from detectron2.structures import ImageList
from torch import Tensor, nn

from codetr.modeling.backbone.channel_mapper import ConvGN
from codetr.modeling.losses import reduce_num_boxes
from codetr.modeling.positive_queries import PositiveQueries

from .dino import DINO

__all__ = ["CoDETR"]

EVAL_MODULES = ("detr", "one-stage", "two-stage")


def _num_classes(head: nn.Module) -> Optional[int]:
    """Number of classes of an auxiliary head (its own attribute or its RoI heads'), if known."""
    for owner in (head, getattr(head, "roi_heads", None)):
        if owner is not None and isinstance(getattr(owner, "num_classes", None), int):
            return owner.num_classes
    return None


@META_ARCH_REGISTRY.register()
class CoDETR(nn.Module):
    """Co-DETR around a DINO detector.

    Args:
        detector: the ``DINO`` detector (Co-DINO: QFL criterion, 5 scales, Soft-NMS;
            Co-Deformable-DETR: the transformer's Deformable-DETR++ options, no denoising).
        aux_heads: K auxiliary heads (K = 0, 1, 2, ...). Protocol: ``head(images, pyramid,
            gt_instances)`` returns ``(losses dict, AssignedSamples)`` in training and N
            ``Instances`` (resized-image coordinates) in eval mode; ``pyramid`` is a dict
            ``{"p2": (N, C, H, W), ...}``, boxes absolute xyxy of the resized image.
        positive_queries: ``PositiveQueries`` with one projection per head, or None to train
            without customized positive queries (the heads then train the encoder only). Its
            style must fit the decoder: "co_dino" with ``query_pos="ref_point_head"``,
            "co_deformable" with ``query_pos="given"``.
        aux_query_weight: lambda_1, weight of the positive-query losses (1).
        eval_module: "detr" (the DINO detector), "one-stage" (the ATSS head) or "two-stage"
            (the Faster R-CNN head); see ``eval_heads``.
        eval_heads: index into ``aux_heads`` of the one-stage / two-stage head,
            e.g. ``{"two-stage": 0, "one-stage": 1}``.
        pyramid_num_groups: GroupNorm groups of the extra pyramid level.
        num_classes, num_queries: optional; checked against the detector (configs interpolate
            them into the detector, the heads and the positive queries, so that
            ``model.num_classes=8 model.num_queries=100`` works on the command line).
    """

    def __init__(
        self,
        detector: DINO,
        aux_heads: Sequence[nn.Module] = (),
        positive_queries: Optional[PositiveQueries] = None,
        aux_query_weight: float = 1.0,
        eval_module: str = "detr",
        eval_heads: Optional[Dict[str, int]] = None,
        pyramid_num_groups: int = 32,
        num_classes: Optional[int] = None,
        num_queries: Optional[int] = None,
    ):
        super().__init__()
        if num_queries is not None and num_queries != detector.transformer.num_queries:
            raise ValueError(f"CoDETR: num_queries={num_queries} but the detector has {detector.transformer.num_queries}")
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
        if positive_queries is not None:
            if detector.transformer.gives_query_pos != (positive_queries.style == "co_deformable"):
                raise ValueError(
                    f"CoDETR: positive_queries.style={positive_queries.style!r} does not fit a decoder with "
                    f"query_pos={detector.transformer.decoder.query_pos!r} (Co-DINO: 'co_dino' with "
                    "'ref_point_head'; Co-Deformable-DETR: 'co_deformable' with 'given')"
                )
        self.detector = detector
        self.aux_heads = nn.ModuleList(aux_heads)
        self.positive_queries = positive_queries
        self.aux_query_weight = aux_query_weight
        self.eval_module = eval_module
        self.eval_heads = eval_heads
        channels = detector.transformer.embed_dim
        self.downsample = ConvGN(channels, channels, 3, 2, pyramid_num_groups) if len(aux_heads) else None
        strides = list(detector.neck.strides)
        self.pyramid_strides = strides + [strides[-1] * 2]
        self.pyramid_names = [f"p{int(math.log2(s))}" for s in self.pyramid_strides]

    @property
    def device(self) -> torch.device:
        return self.detector.device

    # ------------------------------------------------------------------ entry point
    def forward(self, batched_inputs: List[Dict]):
        padding_is_image = all(x.get("padding_is_image", False) for x in batched_inputs)
        if not self.training and self.eval_module == "detr" and not padding_is_image:
            return self.detector(batched_inputs)  # exactly DINO: nothing auxiliary runs
        det = self.detector
        images = det.preprocess_image(batched_inputs)
        if padding_is_image:
            images.mask.zero_()
            norm_sizes = [tuple(images.tensor.shape[-2:])] * len(images)
        else:
            norm_sizes = list(images.image_sizes)
        enc = det.forward_transformer(images)
        if not self.training:
            return self._inference(batched_inputs, images, enc, norm_sizes)
        targets = self._prepare_targets(batched_inputs, norm_sizes)
        fixed = det.denoising(targets) if det.denoising is not None else None
        losses = det.criterion(det.forward_queries(enc, fixed), targets, fixed)
        if len(self.aux_heads):
            losses.update(self.aux_losses(images, enc, batched_inputs, norm_sizes))
        return losses

    # ------------------------------------------------------------------ auxiliary branch
    def pyramid(self, enc: Dict) -> Dict[str, Tensor]:
        """Encoder memory -> {"p{l}": (N, C, H_l, W_l)}: the L encoder levels and one extra
        level (3x3 stride-2 conv + GN on the last one; GN statistics over valid positions)."""
        levels = self.detector.transformer.split_memory(enc)
        mask = enc["masks"][-1] if bool(enc["mask_flatten"].any()) else None
        last = levels[-1] if mask is None else levels[-1].masked_fill(mask[:, None], 0.0)
        levels.append(self.downsample(last, mask))
        return dict(zip(self.pyramid_names, levels))

    def aux_losses(self, images: ImageList, enc: Dict, batched_inputs: List[Dict], norm_sizes) -> Dict[str, Tensor]:
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
            outputs, _ = det.decode(enc, fixed)
            num_pos = reduce_num_boxes(fixed.positive.sum(), self.device)
            aux = det.criterion.fixed_target_losses(outputs, fixed, num_pos, f"_aux{k}")
            losses.update({name: v * self.aux_query_weight for name, v in aux.items()})
        return losses

    # ------------------------------------------------------------------ targets / inference
    def _prepare_targets(self, batched_inputs: List[Dict], norm_sizes) -> List[Dict[str, Tensor]]:
        """DINO's targets, normalised by ``norm_sizes`` (the padded size for padding_is_image)."""
        targets = self.detector.prepare_targets(batched_inputs)
        for t, x, (nh, nw) in zip(targets, batched_inputs, norm_sizes):
            h, w = x["instances"].image_size
            if (h, w) != (nh, nw):
                t["boxes"] = t["boxes"] * t["boxes"].new_tensor([w / nw, h / nh, w / nw, h / nh])
        return targets

    def _inference(self, batched_inputs, images: ImageList, enc: Dict, norm_sizes):
        det = self.detector
        if self.eval_module == "detr":
            outputs = det.forward_queries(enc)
            boxes = outputs["pred_boxes"]
            # predictions normalised by the padded size -> by each image's own size
            scale = torch.tensor(
                [[nw / w, nh / h, nw / w, nh / h] for (h, w), (nh, nw) in zip(images.image_sizes, norm_sizes)],
                dtype=boxes.dtype,
                device=boxes.device,
            )
            results = det.inference(outputs["pred_logits"], boxes * scale[:, None], images.image_sizes)
        else:
            head = self.aux_heads[self.eval_heads[self.eval_module]]
            results = head(images, self.pyramid(enc))
        return [
            {"instances": detector_postprocess(r, x.get("height", r.image_size[0]), x.get("width", r.image_size[1]))}
            for r, x in zip(results, batched_inputs)
        ]
