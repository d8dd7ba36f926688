"""Query groups whose targets are fixed by construction: DN-DETR denoising and DINO contrastive
denoising (CDN). They are ``FixedTargetQueries`` (``fixed_target.py``, with the self-attention
mask between query groups).

Layout of the denoising queries (DINO's, and what the criterion expects):
``num_groups`` groups of ``group_size`` slots, group g at ``[g * group_size, (g + 1) * group_size)``.
With ``max_gt`` the largest number of boxes of an image in the batch:

- CDN (DINO): ``group_size = 2 * max_gt``; slot ``i < max_gt`` of a group is the positive copy of
  box i, slot ``max_gt + i`` its negative copy (target "no object", label ``num_classes``).
- DN (DN-DETR): ``group_size = max_gt``; slot i is the (positive) noised copy of box i.

An image with fewer than ``max_gt`` boxes leaves the remaining slots as padding (``valid`` False):
zero content, reference box (0.5, 0.5, 0.5, 0.5) (DINO's zero logits), no loss, masked as
attention keys. A batch without any box still gets fixed-target queries: one group of padding
slots (``max_gt`` counted as 1), so that every batch runs the same modules (the label embedding,
the denoising queries' position head) and every parameter gets a gradient (zero there). In
multi-process training a worker whose batch has no box otherwise skips parameters the others
reduce, and DDP waits for them forever (issue 19).

Co-DETR's customised positive queries are the same kind of object: the meta-architecture builds a
``FixedTargetQueries`` from an auxiliary head's assignment (one group, ``positive`` False for the
padded negatives) and hands it to the same criterion path.
"""
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from codetr.layers.box_ops import box_cxcywh_to_xyxy, box_xyxy_to_cxcywh, inverse_sigmoid

from .fixed_target import FixedTargetQueries

__all__ = [
    "DenoisingGenerator",
    "dino_denoising",
    "dn_detr_denoising",
    "dynamic_num_groups",
    "flip_labels",
    "corner_noise_offsets",
    "apply_corner_noise",
    "centre_size_noise_offsets",
    "apply_centre_size_noise",
    "apply_centre_noise",
]


def dynamic_num_groups(num_dn_queries: int, max_gt: int) -> int:
    """DINO's dynamic group count: ``max(1, num_dn_queries // max_gt)``.

    ``num_dn_queries`` is DINO's ``dn_number`` / Co-DETR's ``num_dn_queries`` (100 in the papers'
    configs). A CDN group holds 2 * max_gt queries, so about 2 * num_dn_queries queries in total
    (official code: ``(2 * dn_number) // (2 * max_gt)``).
    """
    if max_gt <= 0:
        return 1
    return max(1, num_dn_queries // max_gt)


def flip_labels(labels: Tensor, prob: float, num_classes: int) -> Tensor:
    """Replace each label, with probability ``prob``, by a uniformly random class in
    [0, num_classes) (which may equal the original, as in DN-DETR / DINO). Any shape.

    The official DN-DETR draws the same way (``models/DN_DAB_DETR/dn_components.py``
    ``prepare_for_dn``: ``randint_like(chosen_indice, 0, num_classes)``, never the "unknown" label
    row ``num_classes``), its ``num_classes`` being 91 COCO-id slots; detrex draws from
    ``num_classes + 1``. See MODEL_ZOO.md "Departures from the official code"."""
    flip = torch.rand(labels.shape, device=labels.device) < prob
    random = torch.randint_like(labels, 0, num_classes)
    return torch.where(flip, random, labels)


def corner_noise_offsets(boxes: Tensor, negative: Tensor, scale: float) -> Tensor:
    """DINO CDN corner noise, before clamping.

    Each xyxy corner coordinate moves by ``sign * m * scale * (half width or half height)`` with a
    random sign and ``m ~ U[0, 1)`` for positives, ``m ~ U[1, 2)`` for negatives.

    Args:
        boxes: (..., 4) normalised cxcywh. negative: (...) bool, broadcastable to boxes[..., 0].
    Returns:
        (..., 4) offsets to add to the xyxy corners.
    """
    wh = boxes[..., 2:]
    half = torch.cat([wh, wh], dim=-1) / 2
    magnitude = torch.rand_like(boxes) + negative[..., None].to(boxes.dtype)
    sign = torch.randint_like(boxes, 0, 2) * 2 - 1
    return sign * magnitude * half * scale


def apply_corner_noise(boxes: Tensor, negative: Tensor, scale: float) -> Tensor:
    """Noised boxes (..., 4) normalised cxcywh: corner offsets, clamp to [0, 1], back to cxcywh.

    As in official DINO, a negative's corners may cross (width or height <= 0); such a box is
    only a reference for a "no object" query, and the logit round trip clamps it."""
    xyxy = box_cxcywh_to_xyxy(boxes) + corner_noise_offsets(boxes, negative, scale)
    return box_xyxy_to_cxcywh(xyxy.clamp(min=0.0, max=1.0))


def centre_size_noise_offsets(boxes: Tensor, scale: float) -> Tensor:
    """DN-DETR box noise, before clamping: (..., 4) cxcywh offsets ``U(-1, 1) * (w/2, h/2, w, h) * scale``,
    so the centre moves by less than scale * w/2 (stays in the box for scale < 1) and the size
    becomes w * (1 +- u * scale)."""
    wh = boxes[..., 2:]
    diff = torch.cat([wh / 2, wh], dim=-1)
    return (torch.rand_like(boxes) * 2 - 1) * diff * scale


def apply_centre_size_noise(boxes: Tensor, scale: float) -> Tensor:
    """Noised boxes (..., 4) normalised cxcywh, clamped to [0, 1] (as DN-DETR)."""
    return (boxes + centre_size_noise_offsets(boxes, scale)).clamp(min=0.0, max=1.0)


def apply_centre_noise(boxes: Tensor, scale: float) -> Tensor:
    """DN-DETR's noise on the centres only (DN on 2-d reference points, the DN-DETR author's
    recipe for Conditional DETR / Anchor DETR): the centre moves by ``U(-1, 1) * (w/2, h/2) *
    scale`` and is clamped to [0, 1]; the size is returned unchanged. (..., 4) normalised cxcywh."""
    centres = boxes[..., :2] + centre_size_noise_offsets(boxes, scale)[..., :2]
    return torch.cat([centres.clamp(min=0.0, max=1.0), boxes[..., 2:]], dim=-1)


def pad_targets(targets: List[Dict[str, Tensor]], max_gt: int, device: torch.device) -> Tuple[Tensor, Tensor, Tensor]:
    """Stack per-image targets into padded tensors.

    Returns:
        labels (B, max_gt) int64 (0 at padding), boxes (B, max_gt, 4) cxcywh (0 at padding),
        valid (B, max_gt) bool.
    """
    batch = len(targets)
    labels = torch.zeros(batch, max_gt, dtype=torch.int64, device=device)
    boxes = torch.zeros(batch, max_gt, 4, device=device)
    valid = torch.zeros(batch, max_gt, dtype=torch.bool, device=device)
    for b, t in enumerate(targets):
        n = t["labels"].numel()
        labels[b, :n] = t["labels"]
        boxes[b, :n] = t["boxes"].float()
        valid[b, :n] = True
    return labels, boxes, valid


class DenoisingGenerator(nn.Module):
    """Builds the denoising queries of a training batch (DN-DETR and DINO CDN).

    ``mode="cdn"`` (DINO): positive and negative copies of every box per group; corner noise,
    positives within ``box_noise_scale`` half-sizes, negatives in [1, 2) times that; negatives
    target "no object". Content = ``label_embedding(noised label)``, an
    ``nn.Embedding(num_classes, embed_dim)``.

    ``mode="dn"`` (DN-DETR): one noised positive copy per box and group; centre shift and size
    scaling noise. Content = ``cat([label_embedding(noised label), 1])`` with
    ``label_embedding = nn.Embedding(num_classes + 1, embed_dim - 1)``: the trailing 1 is the
    denoising indicator. The matching queries of a DN-DETR model must carry indicator 0: their
    content is ``cat([label_embedding.weight[num_classes], 0])`` (DN-DAB-DETR; row num_classes
    is the "unknown" class) or ``cat([learned tgt (embed_dim - 1), 0])`` (deformable variant).
    That is the meta-architecture's job; this module only builds the denoising part.

    ``noise_sizes=False`` (``mode="dn"`` only): noise the centres only and keep the sizes (DN on
    2-d reference points: a point decoder takes the noised centre, ``ref_boxes[..., :2]``, as the
    query's reference point; its box head predicts the size from the content).

    Groups: ``num_dn_queries`` set -> dynamic, ``max(1, num_dn_queries // max_gt)`` (DINO);
    ``fixed_num_groups`` set -> that many groups (DN-DETR: 5). Exactly one must be given.

    Call it in training only: ``forward(targets)`` -> ``FixedTargetQueries``; when no image of the
    batch has a box, one group of padding slots (no loss, the same modules run: see the module
    docstring).
    """

    def __init__(
        self,
        num_classes: int,
        embed_dim: int = 256,
        mode: str = "cdn",
        num_dn_queries: Optional[int] = 100,
        fixed_num_groups: Optional[int] = None,
        label_flip_prob: float = 0.25,
        box_noise_scale: float = 1.0,
        noise_sizes: bool = True,
    ):
        super().__init__()
        if mode not in ("cdn", "dn"):
            raise ValueError(f"DenoisingGenerator: mode={mode!r}; expected 'cdn' (DINO) or 'dn' (DN-DETR)")
        if (num_dn_queries is None) == (fixed_num_groups is None):
            raise ValueError(
                f"DenoisingGenerator: num_dn_queries={num_dn_queries}, fixed_num_groups={fixed_num_groups}; "
                "expected exactly one of them (dynamic or fixed groups)"
            )
        for name, value in (("num_dn_queries", num_dn_queries), ("fixed_num_groups", fixed_num_groups)):
            if value is not None and value < 1:
                raise ValueError(f"DenoisingGenerator: {name}={value}; expected >= 1")
        if not 0.0 <= label_flip_prob <= 1.0:
            raise ValueError(f"DenoisingGenerator: label_flip_prob={label_flip_prob}; expected in [0, 1]")
        if box_noise_scale < 0:
            raise ValueError(f"DenoisingGenerator: box_noise_scale={box_noise_scale}; expected >= 0")
        if not noise_sizes and mode != "dn":
            raise ValueError(
                f"DenoisingGenerator: noise_sizes=False with mode={mode!r}; centre-only noise exists for mode 'dn' "
                "(CDN's corner noise moves the sizes by construction)"
            )
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.mode = mode
        self.num_dn_queries = num_dn_queries
        self.fixed_num_groups = fixed_num_groups
        self.label_flip_prob = label_flip_prob
        self.box_noise_scale = box_noise_scale
        self.noise_sizes = noise_sizes
        if self.contrastive:
            self.label_embedding = nn.Embedding(num_classes, embed_dim)
        else:
            self.label_embedding = nn.Embedding(num_classes + 1, embed_dim - 1)

    @property
    def contrastive(self) -> bool:
        return self.mode == "cdn"

    def matching_content(self) -> Tensor:
        """DN-DETR (``mode="dn"``): the content of every matching query, (embed_dim,):
        ``cat([label_embedding.weight[num_classes], 0])``, the learned "unknown" class with
        denoising indicator 0 (DN-DAB-DETR; used at inference too)."""
        if self.contrastive:
            raise ValueError("DenoisingGenerator.matching_content: only mode 'dn' has an unknown-class row")
        row = self.label_embedding.weight[self.num_classes]
        return torch.cat([row, row.new_zeros(1)])

    def num_groups(self, max_gt: int) -> int:
        if self.fixed_num_groups is not None:
            return self.fixed_num_groups
        return dynamic_num_groups(self.num_dn_queries, max_gt)

    def forward(self, targets: List[Dict[str, Tensor]]) -> FixedTargetQueries:
        """Args:
            targets: B dicts with "labels" (G_b,) int64 and "boxes" (G_b, 4) normalised cxcywh.
        Returns:
            ``FixedTargetQueries`` with N = num_groups * group_size slots; if sum G_b = 0, one
            group of ``group_size`` padding slots (``valid`` all False: no loss).
        """
        max_gt = max((t["labels"].numel() for t in targets), default=0)
        num_groups = self.num_groups(max_gt) if max_gt else 1  # no box: one group of padding slots
        max_gt = max(max_gt, 1)
        labels, boxes, valid = pad_targets(targets, max_gt, self.label_embedding.weight.device)
        labels, boxes, valid, negative = self._replicate(labels, boxes, valid, num_groups)
        noised_labels = flip_labels(labels, self.label_flip_prob, self.num_classes)
        noised_boxes = self._noise_boxes(boxes, negative)
        positive = valid & ~negative
        batch, group_size = len(targets), negative.shape[2] * max_gt

        def flat(x: Tensor) -> Tensor:  # (B, groups, parts, max_gt, ...) -> (B, N, ...)
            return x.reshape(batch, num_groups * group_size, *x.shape[4:])

        return FixedTargetQueries(
            content=flat(self._content(noised_labels, valid)),
            ref_boxes=flat((inverse_sigmoid(noised_boxes) * valid[..., None]).sigmoid()),
            labels=flat(torch.where(positive, labels, torch.full_like(labels, self.num_classes))),
            boxes=flat(boxes * positive[..., None]),
            valid=flat(valid),
            positive=flat(positive),
            num_groups=num_groups,
            group_size=group_size,
        )

    def _replicate(self, labels: Tensor, boxes: Tensor, valid: Tensor, num_groups: int) -> Tuple[Tensor, ...]:
        """Padded (B, max_gt) targets -> (B, groups, parts, max_gt) copies, parts = 2 (positive,
        negative) for CDN, 1 for DN; returns labels, boxes (..., 4), valid, negative."""
        parts = 2 if self.contrastive else 1
        shape = (labels.shape[0], num_groups, parts, labels.shape[1])
        negative = torch.arange(parts, device=labels.device) == 1
        return (
            labels[:, None, None].expand(shape),
            boxes[:, None, None].expand(*shape, 4),
            valid[:, None, None].expand(shape),
            negative[None, None, :, None].expand(shape),
        )

    def _noise_boxes(self, boxes: Tensor, negative: Tensor) -> Tensor:
        """(..., 4) normalised cxcywh -> noised (..., 4) normalised cxcywh."""
        if self.box_noise_scale == 0:
            return boxes
        if self.contrastive:
            return apply_corner_noise(boxes, negative, self.box_noise_scale)
        if not self.noise_sizes:
            return apply_centre_noise(boxes, self.box_noise_scale)
        return apply_centre_size_noise(boxes, self.box_noise_scale)

    def _content(self, labels: Tensor, valid: Tensor) -> Tensor:
        """(...) noised labels -> (..., embed_dim) content queries, zero at padded slots."""
        content = self.label_embedding(labels)
        if not self.contrastive:
            content = torch.cat([content, torch.ones_like(content[..., :1])], dim=-1)
        return content * valid[..., None].to(content.dtype)


def dino_denoising(
    num_classes: int,
    embed_dim: int = 256,
    num_dn_queries: int = 100,
    label_noise_ratio: float = 0.5,
    box_noise_scale: float = 1.0,
) -> DenoisingGenerator:
    """DINO's contrastive denoising with its config names: a label flips with probability
    ``label_noise_ratio * 0.5`` (official code); detrex / Co-DINO defaults."""
    return DenoisingGenerator(
        num_classes,
        embed_dim,
        mode="cdn",
        num_dn_queries=num_dn_queries,
        label_flip_prob=label_noise_ratio * 0.5,
        box_noise_scale=box_noise_scale,
    )


def dn_detr_denoising(
    num_classes: int,
    embed_dim: int = 256,
    num_groups: int = 5,
    label_noise_scale: float = 0.2,
    box_noise_scale: float = 0.4,
    noise_sizes: bool = True,
) -> DenoisingGenerator:
    """DN-DETR's denoising with its defaults (``--scalar 5 --label_noise_scale 0.2
    --box_noise_scale 0.4``; the label flip probability is ``label_noise_scale``).
    ``noise_sizes=False``: DN on 2-d reference points (Conditional DETR), centres only."""
    return DenoisingGenerator(
        num_classes,
        embed_dim,
        mode="dn",
        num_dn_queries=None,
        fixed_num_groups=num_groups,
        label_flip_prob=label_noise_scale,
        box_noise_scale=box_noise_scale,
        noise_sizes=noise_sizes,
    )
