"""DINO (Zhang et al. 2023): deformable DETR with contrastive denoising, mixed query selection
and look-forward-twice; also DN-Deformable-DETR with a DN-DETR ``DenoisingGenerator``.

Coordinates: targets and predictions inside the model are normalised cxcywh of the unpadded
(resized) image; results are absolute xyxy in the original image (``detector_postprocess``).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, detector_postprocess
from detectron2.structures import Boxes, ImageList, Instances
from torch import Tensor, nn

from codetr.layers.box_ops import box_cxcywh_to_xyxy, box_xyxy_to_cxcywh
from codetr.layers.nms import batched_nms, batched_soft_nms
from codetr.modeling.backbone import ChannelMapper, padding_mask_at_stride
from codetr.modeling.criterion import DETRCriterion
from codetr.modeling.denoising import DenoisingGenerator, FixedTargetQueries
from codetr.modeling.transformer import DINOTransformer

from .preprocess import normalize_and_pad

__all__ = ["DINO", "split_outputs"]


def layer_outputs(logits: Tensor, boxes: Tensor, aux: bool = True) -> Dict:
    """Per-layer predictions (L, N, Q, K), (L, N, Q, 4) -> the criterion's output dict: the last
    layer as "pred_logits" / "pred_boxes", the others as "aux_outputs" (if ``aux``)."""
    out = {"pred_logits": logits[-1], "pred_boxes": boxes[-1]}
    if aux:
        out["aux_outputs"] = [{"pred_logits": lg, "pred_boxes": bx} for lg, bx in zip(logits[:-1], boxes[:-1])]
    return out


def split_outputs(decoded: Dict[str, Tensor], num_fixed: int, aux: bool = True):
    """Split a decoder output over ``[fixed queries, matching queries]`` into the criterion dicts
    (fixed_outputs, matching_outputs); either is None when it has no query."""
    total = decoded["logits"].shape[2]
    parts = []
    for sl in (slice(0, num_fixed), slice(num_fixed, total)):
        empty = sl.stop == sl.start
        parts.append(None if empty else layer_outputs(decoded["logits"][:, :, sl], decoded["boxes"][:, :, sl], aux))
    return tuple(parts)


@META_ARCH_REGISTRY.register()
class DINO(nn.Module):
    """DINO detector.

    Args:
        backbone: a Detectron2 ``Backbone`` (e.g. ``ResNet``) returning a dict of feature maps.
        position_embedding: ``PositionEmbeddingSine`` (mask (N, H, W) -> (N, C, H, W)).
        neck: ``ChannelMapper`` from the backbone outputs to ``num_feature_levels`` maps.
        transformer: ``DINOTransformer``.
        criterion: ``DETRCriterion``.
        denoising: ``DenoisingGenerator`` (CDN for DINO, DN for DN-Deformable-DETR) or None.
        pixel_mean, pixel_std: RGB normalisation of the uint8 input images.
        select_box_nums_for_evaluation: top-k (query, class) pairs kept per image at inference.
        aux_loss: supervise every decoder layer (not only the last).
        size_divisibility: pad batched images to a multiple of this (0: to the largest image).
        nms: None, "nms" or "soft_nms": optional class-wise post-processing (Co-DINO uses
            linear Soft-NMS, IoU 0.8, on the top-900 pairs); see ``codetr.layers.nms``.
        nms_iou_threshold: IoU threshold of the NMS.
        nms_pre_topk: number of (query, class) pairs that enter the NMS (then top
            ``select_box_nums_for_evaluation`` are kept).
        input_format: "RGB" or "BGR"; inputs in the other order are flipped.
        num_classes, num_queries: optional; checked against the heads / criterion and the
            transformer (configs interpolate them, as detrex's ``"${..num_classes}"``, so that
            ``model.num_classes=8 model.num_queries=100`` works on the command line).
    """

    def __init__(
        self,
        backbone: Backbone,
        position_embedding: nn.Module,
        neck: ChannelMapper,
        transformer: DINOTransformer,
        criterion: DETRCriterion,
        denoising: Optional[DenoisingGenerator] = None,
        pixel_mean: Sequence[float] = (123.675, 116.28, 103.53),
        pixel_std: Sequence[float] = (58.395, 57.12, 57.375),
        select_box_nums_for_evaluation: int = 300,
        aux_loss: bool = True,
        size_divisibility: int = 0,
        nms: Optional[str] = None,
        nms_iou_threshold: float = 0.8,
        nms_pre_topk: int = 900,
        input_format: str = "RGB",
        num_classes: Optional[int] = None,
        num_queries: Optional[int] = None,
    ):
        super().__init__()
        if nms not in (None, "nms", "soft_nms"):
            raise ValueError(f"DINO: nms={nms!r}; expected None, 'nms' or 'soft_nms'")
        if input_format not in ("RGB", "BGR"):
            raise ValueError(f"DINO: input_format={input_format!r}; expected 'RGB' or 'BGR'")
        if denoising is not None and transformer.gives_query_pos:
            raise ValueError(
                "DINO: denoising queries need the decoder's ref_point_head for their positions; "
                "transformer.decoder.query_pos='given' (Deformable-DETR++) has none: set denoising=None"
            )
        if num_queries is not None and num_queries != transformer.num_queries:
            raise ValueError(f"DINO: num_queries={num_queries} but transformer.num_queries={transformer.num_queries}")
        if num_classes is not None:
            found = {
                "transformer.decoder.class_embed": transformer.decoder.class_embed[0].out_features,
                "transformer.enc_class_embed": transformer.enc_class_embed.out_features,
                "criterion.num_classes": criterion.num_classes,
            }
            if denoising is not None:
                found["denoising.num_classes"] = denoising.num_classes
            wrong = {k: v for k, v in found.items() if v != num_classes}
            if wrong:
                raise ValueError(f"DINO: num_classes={num_classes} but {wrong}")
        self.backbone = backbone
        self.position_embedding = position_embedding
        self.neck = neck
        self.transformer = transformer
        self.criterion = criterion
        self.denoising = denoising
        self.select_box_nums_for_evaluation = select_box_nums_for_evaluation
        self.aux_loss = aux_loss
        self.size_divisibility = size_divisibility
        self.nms = nms
        self.nms_iou_threshold = nms_iou_threshold
        self.nms_pre_topk = nms_pre_topk
        self.input_format = input_format
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    # ------------------------------------------------------------------ entry point
    def forward(self, batched_inputs: List[Dict]):
        """Detectron2 inputs (see the data interface). Training: dict of weighted losses.
        Inference: ``[{"instances": Instances}]`` in original image coordinates."""
        images = self.preprocess_image(batched_inputs)
        enc = self.forward_transformer(images)
        if self.training:
            targets = self.prepare_targets(batched_inputs)
            fixed = self.denoising(targets) if self.denoising is not None else None
            outputs = self.forward_queries(enc, fixed)
            return self.criterion(outputs, targets, fixed)
        outputs = self.forward_queries(enc)
        results = self.inference(outputs["pred_logits"], outputs["pred_boxes"], images.image_sizes)
        return [
            {"instances": detector_postprocess(r, x.get("height", r.image_size[0]), x.get("width", r.image_size[1]))}
            for r, x in zip(results, batched_inputs)
        ]

    # ------------------------------------------------------------------ stages
    def preprocess_image(self, batched_inputs: List[Dict]) -> ImageList:
        """Normalise and pad the images; returns an ImageList with an extra ``mask`` attribute:
        (N, H, W) bool, True at padded pixels."""
        image_list = normalize_and_pad(
            batched_inputs, self.pixel_mean, self.pixel_std, self.input_format, self.size_divisibility
        )
        n, _, pad_h, pad_w = image_list.tensor.shape
        mask = torch.ones(n, pad_h, pad_w, dtype=torch.bool, device=self.device)
        for i, (h, w) in enumerate(image_list.image_sizes):
            mask[i, :h, :w] = False
        image_list.mask = mask
        return image_list

    def forward_transformer(self, images: ImageList) -> Dict:
        """Backbone, neck, position embeddings and encoder.

        Returns ``DINOTransformer.encode``'s dict (memory (N, S, C), mask_flatten (N, S),
        spatial_shapes (L, 2), level_start_index (L,), valid_ratios (N, L, 2), shapes) plus
        "features": the L neck maps (N, C, H_l, W_l) and "masks": L (N, H_l, W_l) padding masks.
        ``DINOTransformer.split_memory(enc)`` gives the memory back as L maps (Co-DETR's pyramid).
        """
        features = self.neck(self.backbone(images.tensor), images.mask)
        masks = [padding_mask_at_stride(images.mask, s, f.shape[-2:]) for s, f in zip(self.neck.strides, features)]
        pos = [self.position_embedding(m).to(f.dtype) for m, f in zip(masks, features)]
        enc = self.transformer.encode(features, masks, pos)
        enc.update(features=features, masks=masks)
        return enc

    def forward_queries(self, enc: Dict, fixed: Optional[FixedTargetQueries] = None) -> Dict:
        """Mixed query selection and the decoder over [fixed-target (DN) queries, matching
        queries]. Returns the criterion's output dict ("pred_*", "aux_outputs", "enc_outputs",
        and "dn_outputs" when ``fixed`` is given)."""
        sel = self.transformer.select_queries(enc)
        tgt = sel["tgt"]
        if self.denoising is not None and not self.denoising.contrastive:
            tgt = torch.cat([tgt[..., :-1], torch.zeros_like(tgt[..., -1:])], -1)  # DN indicator 0
        if self.training and self.denoising is not None and fixed is None:
            # keeps the label embedding in the graph on batches without boxes (DDP)
            tgt = tgt + 0.0 * self.denoising.label_embedding.weight.sum()
        # query_pos: Deformable-DETR++ only
        fixed_out, outputs = self.decode(enc, fixed, tgt, sel["ref_boxes"], query_pos=sel.get("query_pos"))
        outputs["enc_outputs"] = {"pred_logits": sel["enc_logits"], "pred_boxes": sel["enc_boxes"]}
        if fixed_out is not None:
            outputs["dn_outputs"] = fixed_out
        return outputs

    def decode(
        self,
        enc: Dict,
        fixed: Optional[FixedTargetQueries] = None,
        tgt: Optional[Tensor] = None,
        ref_boxes: Optional[Tensor] = None,
        query_pos: Optional[Tensor] = None,
    ):
        """Run the shared decoder over ``[fixed queries, matching queries (tgt, ref_boxes)]``
        with the group attention mask; either part may be absent (Co-DETR runs its positive
        queries alone, as ``decode(enc, fixed)``).

        Args:
            enc: ``forward_transformer``'s output.
            fixed: fixed-target queries (content, ref_boxes normalised cxcywh, and query_pos
                for a decoder with given positions) or None.
            tgt, ref_boxes: (N, Q, C) matching contents and (N, Q, 4) normalised cxcywh boxes.
            query_pos: (N, Q, C) positions of the matching queries, for a decoder with given
                positions (``select_queries``' "query_pos"); None for DINO's decoder.

        Returns:
            (fixed_outputs, matching_outputs): criterion dicts ("pred_logits", "pred_boxes",
            "aux_outputs") of each part, None for an absent part.
        """
        contents, refs, poses = [], [], []
        num_fixed = 0 if fixed is None else fixed.num_queries
        num_matching = 0 if tgt is None else tgt.shape[1]
        attn_mask = None
        if fixed is not None:
            contents.append(fixed.content)
            refs.append(fixed.ref_boxes)
            poses.append(fixed.query_pos)
            attn_mask = fixed.attn_mask(num_matching)
        if tgt is not None:
            contents.append(tgt)
            refs.append(ref_boxes)
            poses.append(query_pos)
        pos = None
        if any(p is not None for p in poses):
            if any(p is None for p in poses):
                raise ValueError("DINO.decode: query positions given for some query groups but not for others")
            pos = torch.cat(poses, 1)
        decoded = self.transformer.decode(enc, torch.cat(contents, 1), torch.cat(refs, 1), attn_mask, pos)
        return split_outputs(decoded, num_fixed, self.aux_loss)

    # ------------------------------------------------------------------ targets / results
    def prepare_targets(self, batched_inputs: List[Dict]) -> List[Dict[str, Tensor]]:
        """Instances (gt_boxes xyxy_abs of the resized image, gt_classes) -> DETR targets
        {"labels" (G,) int64, "boxes" (G, 4) cxcywh normalised by the unpadded image size}."""
        targets = []
        for x in batched_inputs:
            inst = x["instances"].to(self.device)
            h, w = inst.image_size
            scale = torch.tensor([w, h, w, h], dtype=torch.float32, device=self.device)
            boxes = box_xyxy_to_cxcywh(inst.gt_boxes.tensor.float() / scale)
            targets.append({"labels": inst.gt_classes.long(), "boxes": boxes})
        return targets

    def inference(self, logits: Tensor, boxes: Tensor, image_sizes) -> List[Instances]:
        """Top-k (query, class) pairs of sigmoid scores per image.

        Args:
            logits: (N, Q, K); boxes: (N, Q, 4) normalised cxcywh; image_sizes: N (h, w).
        Returns:
            N Instances (pred_boxes xyxy absolute in the resized image, scores, pred_classes).
        """
        num_classes = logits.shape[-1]
        k = min(self.select_box_nums_for_evaluation, logits.shape[1] * num_classes)
        if self.nms is not None:
            k = min(max(self.nms_pre_topk, k), logits.shape[1] * num_classes)
        scores, idx = logits.float().sigmoid().flatten(1).topk(k, dim=1)
        query, labels = idx // num_classes, idx % num_classes
        boxes = box_cxcywh_to_xyxy(boxes.float().gather(1, query[..., None].expand(-1, -1, 4)))
        results = []
        for s, lb, bx, (h, w) in zip(scores, labels, boxes, image_sizes):
            bx = bx * torch.tensor([w, h, w, h], dtype=bx.dtype, device=bx.device)
            if self.nms is not None:
                s, lb, bx = self._nms(s, lb, bx)
            r = Instances((h, w))
            r.pred_boxes, r.scores, r.pred_classes = Boxes(bx), s, lb
            results.append(r)
        return results

    def _nms(self, scores: Tensor, labels: Tensor, boxes: Tensor):
        """Class-wise (Soft-)NMS of one image, then the top ``select_box_nums_for_evaluation``."""
        if self.nms == "soft_nms":
            keep, scores = batched_soft_nms(boxes, scores, labels, self.nms_iou_threshold)
        else:
            keep = batched_nms(boxes, scores, labels, self.nms_iou_threshold)
            scores = scores[keep]
        keep, scores = keep[: self.select_box_nums_for_evaluation], scores[: self.select_box_nums_for_evaluation]
        return scores, labels[keep], boxes[keep]
