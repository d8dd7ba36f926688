"""Large-scale jitter (LSJ) dataset mapper, as in Co-DETR's ``*_lsj_*`` configs (box-only)."""
from __future__ import annotations

from typing import Dict

import numpy as np

from detectron2.data import transforms as T
from detectron2.structures import Instances

from .mapper_utils import finish_dataset_dict, start_dataset_dict, transform_box_annotations

__all__ = ["LSJDatasetMapper"]


class LSJDatasetMapper:
    """Large-scale jitter: resize by a random scale, fixed-size crop, flip, pad to a square.

    Training (Co-DETR LSJ, box-only variant; CopyPaste is not done since it needs masks):
    ``ResizeScale(min_scale..max_scale of image_size x image_size)`` -> ``FixedSizeCrop`` to at most
    ``image_size`` x ``image_size`` -> remove boxes smaller than ``min_box_size`` (Co-DETR's
    FilterAnnotations 1e-2) -> RandomFlip -> pad bottom/right to ``image_size`` x ``image_size`` with
    ``pad_value`` (114). Test: keep-ratio resize so the image fits in ``image_size`` x
    ``image_size`` (no pad here; see below).

    Padding convention (official Co-DETR LSJ, ``with_attn_mask=False``): the padded area is
    treated as *image*, not masked. Training images leave this mapper already padded to a square,
    and no padding mask is produced; every output dict carries ``"padding_is_image": True`` so a
    model can also skip masking its own batch padding at test time (the official test pads to
    ``image_size`` with 114 and uses no mask). ``"valid_size"`` = (h, w) of the real content.

    Output otherwise as :class:`DetrDatasetMapper`: ``image`` uint8 (3, H, W) RGB, ``instances``
    (training) with ``gt_boxes`` xyxy absolute pixels and ``gt_classes`` int64, original
    ``height``/``width``, ``file_name``, ``image_id``.
    """

    def __init__(
        self,
        is_train: bool = True,
        image_size: int = 1024,
        min_scale: float = 0.1,
        max_scale: float = 2.0,
        pad_value: float = 114.0,
        random_flip: bool = True,
        min_box_size: float = 1e-2,
        image_format: str = "RGB",
    ):
        if image_format != "RGB":
            raise ValueError(f"image_format must be 'RGB' (models normalise RGB), got {image_format!r}")
        if not (int(image_size) > 0 and 0 < min_scale <= max_scale):
            raise ValueError(
                f"need image_size > 0 and 0 < min_scale <= max_scale, got image_size={image_size!r}, "
                f"min_scale={min_scale!r}, max_scale={max_scale!r}"
            )
        self.is_train = is_train
        self.image_size = int(image_size)
        self.pad_value = float(pad_value)
        self.min_box_size = float(min_box_size)
        s = self.image_size
        if is_train:
            augs = [
                T.ResizeScale(min_scale, max_scale, s, s),
                T.FixedSizeCrop((s, s), pad=False),
            ]
            if random_flip:
                augs.append(T.RandomFlip(horizontal=True))
        else:
            augs = [T.ResizeScale(1.0, 1.0, s, s)]
        self.augmentation = T.AugmentationList(augs)

    def __repr__(self) -> str:
        return f"LSJDatasetMapper(is_train={self.is_train}, image_size={self.image_size}, augmentation={self.augmentation})"

    def __call__(self, dataset_dict: Dict) -> Dict:
        dataset_dict, image = start_dataset_dict(dataset_dict)
        aug_input = T.AugInput(image)
        transforms = self.augmentation(aug_input)
        image = aug_input.image
        h, w = image.shape[:2]
        annotations = dataset_dict.pop("annotations", None)
        if self.is_train:
            if annotations is not None:
                dataset_dict["instances"] = transform_box_annotations(
                    annotations, transforms, (h, w), box_threshold=self.min_box_size
                )
            padded = np.empty((self.image_size, self.image_size, 3), dtype=np.uint8)
            padded[...] = np.uint8(round(self.pad_value))
            padded[:h, :w] = image
            image = padded
            if "instances" in dataset_dict:  # boxes are unchanged by bottom/right padding
                inst = dataset_dict["instances"]
                dataset_dict["instances"] = Instances(padded.shape[:2], **inst.get_fields())
        dataset_dict["valid_size"] = (h, w)
        dataset_dict["padding_is_image"] = True
        return finish_dataset_dict(dataset_dict, image)
