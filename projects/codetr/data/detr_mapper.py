"""DETR-style dataset mapper (the augmentation of DETR / Deformable DETR / DINO / Co-DETR)."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from detectron2.data import transforms as T

from .mapper_utils import finish_dataset_dict, start_dataset_dict, transform_box_annotations

__all__ = ["DetrDatasetMapper", "detr_train_augmentation", "detr_test_augmentation"]

AugList = Sequence[Union[T.Augmentation, T.Transform]]


def detr_train_augmentation(
    min_sizes: Sequence[int] = tuple(range(480, 801, 32)),
    max_size: int = 1333,
    crop_resize_sizes: Optional[Sequence[int]] = None,
    crop_size: Sequence[int] = (384, 600),
) -> List[T.Augmentation]:
    """One branch of the DETR training augmentation.

    Without ``crop_resize_sizes``: RandomFlip -> ResizeShortestEdge(min_sizes, max_size) (short side
    chosen from ``min_sizes``). With it: RandomFlip -> ResizeShortestEdge(crop_resize_sizes) ->
    RandomCrop("absolute_range", crop_size) -> ResizeShortestEdge(min_sizes, max_size).
    """
    augs: List[T.Augmentation] = [T.RandomFlip(horizontal=True)]
    if crop_resize_sizes is not None:
        augs += [
            T.ResizeShortestEdge(list(crop_resize_sizes), sample_style="choice"),
            T.RandomCrop("absolute_range", tuple(crop_size)),
        ]
    augs.append(T.ResizeShortestEdge(list(min_sizes), max_size=max_size, sample_style="choice"))
    return augs


def detr_test_augmentation(short_size: int = 800, max_size: int = 1333) -> List[T.Augmentation]:
    """ResizeShortestEdge(short_size, max_size): the DETR test-time resize."""
    return [T.ResizeShortestEdge(short_size, max_size=max_size)]


class DetrDatasetMapper:
    """Read, augment and format one Detectron2 dataset dict for a DETR-family model.

    Training: with probability ``1 - crop_prob`` apply ``augmentation``, else
    ``augmentation_with_crop`` (DETR: flip + multi-scale resize, or flip + resize + random crop +
    multi-scale resize). Test: ``augmentation`` only (a single resize), annotations dropped.

    Output dict (Detectron2 format): ``image`` uint8 (3, H, W) RGB of the augmented image;
    ``instances`` (training only) with ``gt_boxes`` Boxes xyxy absolute pixels in the augmented
    image, clipped to it, empty boxes (e.g. cropped away) removed, and ``gt_classes`` int64
    contiguous 0..K-1; ``height``/``width`` the original size; ``file_name``, ``image_id``
    passed through. Images whose boxes all disappear are kept, with empty ``instances``.

    Args:
        augmentation: list of Detectron2 augmentations/transforms (see
            :func:`detr_train_augmentation`, :func:`detr_test_augmentation`).
        augmentation_with_crop: the alternative training branch, or None for a single branch.
        is_train: training (annotations kept) or test mode.
        image_format: only "RGB" is supported (the models normalise RGB).
        crop_prob: probability of the crop branch (DETR: 0.5).
    """

    def __init__(
        self,
        augmentation: AugList,
        augmentation_with_crop: Optional[AugList] = None,
        is_train: bool = True,
        image_format: str = "RGB",
        crop_prob: float = 0.5,
    ):
        if image_format != "RGB":
            raise ValueError(f"image_format must be 'RGB' (models normalise RGB), got {image_format!r}")
        if not 0.0 <= crop_prob <= 1.0:
            raise ValueError(f"crop_prob must be in [0, 1], got {crop_prob!r}")
        self.augmentation = T.AugmentationList(list(augmentation))
        self.augmentation_with_crop = (
            None if augmentation_with_crop is None else T.AugmentationList(list(augmentation_with_crop))
        )
        self.is_train = is_train
        self.crop_prob = crop_prob

    def __repr__(self) -> str:
        return (
            f"DetrDatasetMapper(is_train={self.is_train}, augmentation={self.augmentation}, "
            f"augmentation_with_crop={self.augmentation_with_crop}, crop_prob={self.crop_prob})"
        )

    def _pick_augmentation(self) -> T.AugmentationList:
        if self.is_train and self.augmentation_with_crop is not None and np.random.rand() < self.crop_prob:
            return self.augmentation_with_crop
        return self.augmentation

    def __call__(self, dataset_dict: Dict) -> Dict:
        dataset_dict, image = start_dataset_dict(dataset_dict)
        aug_input = T.AugInput(image)
        transforms = self._pick_augmentation()(aug_input)
        image = aug_input.image
        annotations = dataset_dict.pop("annotations", None)
        if self.is_train and annotations is not None:
            dataset_dict["instances"] = transform_box_annotations(annotations, transforms, image.shape[:2])
        return finish_dataset_dict(dataset_dict, image)
