"""The query-detector base: the flow every DETR-family detector shares.

Coordinates: targets and predictions inside the model are normalised cxcywh, normalised by the
"normalisation size" of each image: the unpadded (resized) image, or the padded batch size for
inputs whose padding counts as image (``padding_is_image``, the LSJ mapper; there is then no
padding mask). Results are absolute xyxy in the original image (``rescale_detections``: Detectron2's
``detector_postprocess``, or a plain rescale that keeps every detection; ``codetr.modeling.postprocess``
says which detector does what).

A subclass says what is its own: ``matching_queries`` (where the matching group comes from) and
optionally denoising knowledge. Compositions (Co-DETR) use the declared hooks: ``preprocess_image``,
``normalization_sizes``, ``encode``, ``pyramid``, ``prepare_targets``, ``detection_losses``,
``decode_fixed``, ``postprocess``.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from detectron2.modeling import Backbone
from detectron2.structures import Boxes, ImageList, Instances
from torch import Tensor, nn

from codetr.layers.box_ops import box_cxcywh_to_xyxy, box_xyxy_to_cxcywh
from codetr.layers.nms import batched_nms, batched_soft_nms
from codetr.modeling.criterion import DETRCriterion
from codetr.modeling.encoders import EncoderOutput
from codetr.modeling.necks import padding_mask_at_stride
from codetr.modeling.postprocess import clip_boxes, rescale_detections
from codetr.modeling.queries import QueryGroup
from codetr.modeling.queries.fixed_target import FixedTargetQueries

from .preprocess import normalize_and_pad

__all__ = ["QueryDetector", "layer_outputs", "normalization_wh"]

NMS_MODES = (None, "nms", "soft_nms")
Size = Tuple[int, int]


def layer_outputs(logits: Tensor, boxes: Tensor, aux: bool = True) -> Dict:
    """Per-layer predictions (L, N, Q, K), (L, N, Q, 4) -> the criterion's output dict: the last
    layer as "pred_logits" / "pred_boxes", the others as "aux_outputs" (if ``aux``)."""
    out = {"pred_logits": logits[-1], "pred_boxes": boxes[-1]}
    if aux:
        out["aux_outputs"] = [{"pred_logits": lg, "pred_boxes": bx} for lg, bx in zip(logits[:-1], boxes[:-1])]
    return out


class QueryDetector(nn.Module):
    """Base of the query-based detectors.

    Args:
        backbone: a Detectron2 ``Backbone`` returning a dict of feature maps.
        position_embedding: mask (N, H, W) -> (N, C, H, W) (e.g. ``PositionEmbeddingSine``).
        neck: backbone outputs (+ pixel padding mask) -> L maps (N, C, H_l, W_l); has ``strides``.
        transformer: ``encode(features, masks, pos_embeds) -> EncoderOutput``, a ``decoder``
            (``QueryDecoder``), ``num_queries`` (matching queries) and ``embed_dim``.
        criterion: ``DETRCriterion``.
        denoising: a fixed-target query generator (``DenoisingGenerator``) or None.
        pixel_mean, pixel_std: RGB normalisation of the uint8 input images.
        select_box_nums_for_evaluation: top-k (query, class) pairs kept per image at inference.
        aux_loss: supervise every decoder layer (not only the last).
        size_divisibility: pad batched images to a multiple of this (0: to the largest image).
        nms: None, "nms" or "soft_nms": optional class-wise post-processing of the top
            ``nms_pre_topk`` pairs (IoU ``nms_iou_threshold``); see ``codetr.layers.nms``.
        input_format: "RGB" or "BGR"; inputs in the other order are flipped.
        clip_before_nms: clamp the top-k boxes to the image's normalisation frame (the resized
            image, or the padded one for ``padding_is_image`` inputs: mmdet's ``img_shape``)
            before the (Soft-)NMS, and also without NMS (Co-DETR's official heads).
        detectron2_postprocess: results through Detectron2's ``detector_postprocess`` (clipped
            to the output size, empty boxes dropped: detrex); False: only rescaled to the output
            size, every detection kept (the official DETR-family, Co-DETR, AdaMixer / DEQDet
            code). See ``codetr.modeling.postprocess``.
    """

    def __init__(
        self,
        backbone: Backbone,
        position_embedding: nn.Module,
        neck: nn.Module,
        transformer: nn.Module,
        criterion: DETRCriterion,
        denoising: Optional[nn.Module] = None,
        pixel_mean: Sequence[float] = (123.675, 116.28, 103.53),
        pixel_std: Sequence[float] = (58.395, 57.12, 57.375),
        select_box_nums_for_evaluation: int = 300,
        aux_loss: bool = True,
        size_divisibility: int = 0,
        nms: Optional[str] = None,
        nms_iou_threshold: float = 0.8,
        nms_pre_topk: int = 900,
        input_format: str = "RGB",
        clip_before_nms: bool = False,
        detectron2_postprocess: bool = True,
    ):
        super().__init__()
        name = type(self).__name__
        if nms not in NMS_MODES:
            raise ValueError(f"{name}: nms={nms!r}; expected None, 'nms' or 'soft_nms'")
        if input_format not in ("RGB", "BGR"):
            raise ValueError(f"{name}: input_format={input_format!r}; expected 'RGB' or 'BGR'")
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
        self.clip_before_nms = clip_before_nms
        self.detectron2_postprocess = detectron2_postprocess
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    def check_num_classes(self, num_classes: Optional[int], found: Dict[str, int]) -> None:
        """Raise if any of ``found`` (where -> its number of classes) differs from ``num_classes``."""
        if num_classes is None:
            return
        found = dict(found, **{"criterion.num_classes": self.criterion.num_classes})
        if self.denoising is not None:
            found["denoising.num_classes"] = self.denoising.num_classes
        wrong = {k: v for k, v in found.items() if v != num_classes}
        if wrong:
            raise ValueError(f"{type(self).__name__}: num_classes={num_classes} but {wrong}")

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def decoder(self) -> nn.Module:
        return self.transformer.decoder

    @property
    def num_queries(self) -> int:
        """Number of matching queries."""
        return self.transformer.num_queries

    @property
    def embed_dim(self) -> int:
        """Width of the encoder output and of the queries."""
        return self.transformer.embed_dim

    @property
    def num_classes(self) -> int:
        """Number of classes the detector predicts (its criterion's: every head is checked against it)."""
        return self.criterion.num_classes

    @property
    def detections_per_image(self) -> int:
        """The most detections per image at inference."""
        return self.select_box_nums_for_evaluation

    @property
    def feature_strides(self) -> List[int]:
        """Strides of the encoder levels (the neck's outputs), finest first."""
        return list(self.neck.strides)

    # ------------------------------------------------------------------ entry point
    def forward(self, batched_inputs: List[Dict]):
        """Detectron2 inputs. Training: dict of weighted losses. Inference:
        ``[{"instances": Instances}]`` in original image coordinates."""
        images = self.preprocess_image(batched_inputs)
        norm_sizes = self.normalization_sizes(images, batched_inputs)
        enc = self.encode(images)
        if self.training:
            return self.detection_losses(enc, self.prepare_targets(batched_inputs, norm_sizes))
        outputs = self.forward_queries(enc)
        results = self.inference(outputs["pred_logits"], outputs["pred_boxes"], images.image_sizes, norm_sizes)
        return self.postprocess(results, batched_inputs)

    # ------------------------------------------------------------------ hooks
    def preprocess_image(self, batched_inputs: List[Dict]) -> ImageList:
        """Normalise and pad the images; returns an ImageList with an extra ``mask`` attribute:
        (N, H, W) bool, True at padded pixels (all False when the padding counts as image)."""
        image_list = normalize_and_pad(
            batched_inputs, self.pixel_mean, self.pixel_std, self.input_format, self.size_divisibility
        )
        n, _, pad_h, pad_w = image_list.tensor.shape
        mask = torch.zeros(n, pad_h, pad_w, dtype=torch.bool, device=self.device)
        if not padding_is_image(batched_inputs):
            mask.fill_(True)
            for i, (h, w) in enumerate(image_list.image_sizes):
                mask[i, :h, :w] = False
        image_list.mask = mask
        return image_list

    @staticmethod
    def normalization_sizes(images: ImageList, batched_inputs: List[Dict]) -> List[Size]:
        """Per image, the (h, w) that normalises its targets and predictions: the unpadded
        image, or the padded batch size when the padding counts as image."""
        if padding_is_image(batched_inputs):
            return [tuple(images.tensor.shape[-2:])] * len(images)
        return list(images.image_sizes)

    def encode(self, images: ImageList) -> EncoderOutput:
        """Backbone, neck, level padding masks, position embeddings and the encoder; the output
        carries each image's normalisation size (``image_wh``, see ``normalization_wh``)."""
        features = self.neck(self.backbone(images.tensor), images.mask)
        masks = [padding_mask_at_stride(images.mask, s, f.shape[-2:]) for s, f in zip(self.feature_strides, features)]
        pos = [self.position_embedding(m).to(f.dtype) for m, f in zip(masks, features)]
        enc = self.transformer.encode(features, masks, pos)
        return dataclasses.replace(enc, image_wh=normalization_wh(images.mask))

    def pyramid(self, enc: EncoderOutput) -> List[Tensor]:
        """The encoder output as L maps (N, C, H_l, W_l) at ``feature_strides`` (Co-DETR's
        auxiliary heads read it)."""
        return enc.memory_maps()

    def prepare_targets(self, batched_inputs: List[Dict], norm_sizes: Sequence[Size]) -> List[Dict[str, Tensor]]:
        """Instances (gt_boxes xyxy absolute in the resized image, gt_classes) -> DETR targets
        {"labels" (G,) int64, "boxes" (G, 4) cxcywh normalised by ``norm_sizes``}."""
        targets = []
        for x, (h, w) in zip(batched_inputs, norm_sizes):
            inst = x["instances"].to(self.device)
            scale = torch.tensor([w, h, w, h], dtype=torch.float32, device=self.device)
            boxes = box_xyxy_to_cxcywh(inst.gt_boxes.tensor.float() / scale)
            targets.append({"labels": inst.gt_classes.long(), "boxes": boxes})
        return targets

    def detection_losses(self, enc: EncoderOutput, targets: List[Dict[str, Tensor]]) -> Dict[str, Tensor]:
        """The detector's own losses: matching queries (+ denoising groups)."""
        fixed = self.denoising(targets) if self.denoising is not None else None
        return self.criterion(self.forward_queries(enc, fixed), targets, fixed)

    def matching_queries(
        self, enc: EncoderOutput, fixed: Optional[FixedTargetQueries]
    ) -> Tuple[QueryGroup, Dict[str, Dict]]:
        """The matching group and extra criterion outputs (e.g. ``{"enc_outputs": ...}``);
        ``fixed``: the fixed-target queries decoded with it (training), or None."""
        raise NotImplementedError

    def forward_queries(self, enc: EncoderOutput, fixed: Optional[FixedTargetQueries] = None) -> Dict:
        """The decoder over [fixed-target queries, matching queries] with the group attention
        mask. Returns the criterion's output dict ("pred_*", "aux_outputs", the subclass'
        extras, and "dn_outputs" when ``fixed`` is given)."""
        matching, extras = self.matching_queries(enc, fixed)
        if fixed is None:
            return dict(self.decode(enc, [matching])[0], **extras)
        attn_mask = fixed.attn_mask(matching.num_queries)
        fixed_out, outputs = self.decode(enc, [self.fixed_group(fixed, enc), matching], attn_mask)
        outputs.update(extras)
        outputs["dn_outputs"] = fixed_out
        return outputs

    def fixed_group(self, fixed: FixedTargetQueries, enc: Optional[EncoderOutput] = None) -> QueryGroup:
        """Fixed-target queries as a decoder ``QueryGroup`` (references in the decoder's box
        coder's parametrisation; ``enc``, the encoder output they are decoded on, for
        detectors whose references need each image's size: AdaMixer's xyzr pixels)."""
        coder = self.decoder.box_coder.for_images(None if enc is None else enc.image_wh)
        return QueryGroup(fixed.content, coder.from_boxes(fixed.ref_boxes), fixed.query_pos)

    def decode_fixed(self, enc: EncoderOutput, fixed: FixedTargetQueries) -> Dict:
        """Decode a fixed-target group alone (Co-DETR's positive queries): its criterion dict."""
        return self.decode(enc, [self.fixed_group(fixed, enc)])[0]

    def decode(self, enc: EncoderOutput, groups: Sequence[QueryGroup], attn_mask: Optional[Tensor] = None):
        """One decoder call over the concatenated ``groups``; per group, its criterion dict
        ("pred_logits", "pred_boxes", "aux_outputs")."""
        decoded = self.decoder(groups, enc, attn_mask)
        outputs, start = [], 0
        for g in groups:
            sl = slice(start, start + g.num_queries)
            outputs.append(layer_outputs(decoded.logits[:, :, sl], decoded.boxes[:, :, sl], self.aux_loss))
            start = sl.stop
        return outputs

    def inference(self, logits: Tensor, boxes: Tensor, image_sizes: Sequence[Size],
                  norm_sizes: Optional[Sequence[Size]] = None) -> List[Instances]:
        """Top-k (query, class) pairs of sigmoid scores per image, boxes clamped to the
        normalisation frame if ``clip_before_nms``, then optional (Soft-)NMS.

        Args:
            logits: (N, Q, K); boxes: (N, Q, 4) cxcywh normalised by ``norm_sizes`` (default
                ``image_sizes``); image_sizes: N (h, w) of the resized images.
        Returns:
            N Instances (pred_boxes xyxy absolute in the resized image, scores, pred_classes).
        """
        norm_sizes = image_sizes if norm_sizes is None else norm_sizes
        scores, labels, boxes = self.topk_pairs(logits, boxes)
        results = []
        for s, lb, bx, (h, w), (nh, nw) in zip(scores, labels, boxes, image_sizes, norm_sizes):
            bx = bx * torch.tensor([nw, nh, nw, nh], dtype=bx.dtype, device=bx.device)
            if self.clip_before_nms:
                bx = clip_boxes(bx, nh, nw)
            if self.nms is not None:
                s, lb, bx = self._nms(s, lb, bx)
            r = Instances((h, w))
            r.pred_boxes, r.scores, r.pred_classes = Boxes(bx), s, lb
            results.append(r)
        return results

    def topk_pairs(self, logits: Tensor, boxes: Tensor, pre_nms: Optional[bool] = None):
        """The top (query, class) pairs by sigmoid score: ``select_box_nums_for_evaluation`` of them,
        or ``nms_pre_topk`` for NMS to prune when ``pre_nms`` (default: whether ``nms`` is set).

        logits (N, Q, K), boxes (N, Q, 4) normalised cxcywh -> scores (N, k), labels (N, k),
        boxes (N, k, 4) normalised xyxy (float32). Shared by ``inference`` and the ONNX export.
        """
        pre_nms = self.nms is not None if pre_nms is None else pre_nms
        num_classes = logits.shape[-1]
        num_pairs = logits.shape[1] * num_classes
        k = min(self.select_box_nums_for_evaluation, num_pairs)
        if pre_nms:
            k = min(max(self.nms_pre_topk, k), num_pairs)
        scores, idx = logits.float().sigmoid().flatten(1).topk(k, dim=1)
        query, labels = idx // num_classes, idx % num_classes
        boxes = box_cxcywh_to_xyxy(boxes.float().gather(1, query[..., None].expand(-1, -1, 4)))
        return scores, labels, boxes

    def _nms(self, scores: Tensor, labels: Tensor, boxes: Tensor):
        """Class-wise (Soft-)NMS of one image, then the top ``select_box_nums_for_evaluation``."""
        if self.nms == "soft_nms":
            keep, scores = batched_soft_nms(boxes, scores, labels, self.nms_iou_threshold)
        else:
            keep = batched_nms(boxes, scores, labels, self.nms_iou_threshold)
            scores = scores[keep]
        keep, scores = keep[: self.select_box_nums_for_evaluation], scores[: self.select_box_nums_for_evaluation]
        return scores, labels[keep], boxes[keep]

    def postprocess(self, results: List[Instances], batched_inputs: List[Dict]) -> List[Dict[str, Instances]]:
        """Resized-image results -> ``[{"instances": ...}]`` in each input's "height" x "width"
        (``rescale_detections`` with ``detectron2_postprocess``)."""
        return [
            {"instances": rescale_detections(r, x.get("height", r.image_size[0]), x.get("width", r.image_size[1]),
                                             self.detectron2_postprocess)}
            for r, x in zip(results, batched_inputs)
        ]


def normalization_wh(mask: Tensor) -> Tensor:
    """(N, H, W) bool pixel padding mask of ``preprocess_image`` (True at padding) -> (N, 2)
    float32 (w, h): the valid columns and rows of each image. That is the normalisation size of
    ``QueryDetector.normalization_sizes``: the unpadded image (its valid region), or the padded
    batch when the padding counts as image (the mask is then all False).

    The (h, w) lists (Detectron2's ``ImageList.image_sizes`` and ``normalization_sizes``) serve the
    host-side code; this (w, h) tensor, the order of the box coordinates it divides, is computed
    from the mask on purpose: an exported graph then computes it for every input size, where a
    tensor built from the lists would be traced as a constant."""
    valid = ~mask
    return torch.stack([valid.any(1).sum(1), valid.any(2).sum(1)], -1).float()


def padding_is_image(batched_inputs: List[Dict]) -> bool:
    """True when every input says its padding counts as image (the LSJ mapper)."""
    return all(x.get("padding_is_image", False) for x in batched_inputs)
