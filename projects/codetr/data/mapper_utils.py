"""Helpers shared by the dataset mappers: robust image reading and box-annotation transforms."""
from __future__ import annotations

import copy
from typing import Dict

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import Instances
from detectron2.utils.file_io import PathManager

__all__ = ["read_image_rgb", "start_dataset_dict", "transform_box_annotations", "finish_dataset_dict"]


def _to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    """Integer/float single-channel data (16-bit PNG, 32-bit int, float) -> uint8."""
    arr = arr.astype(np.float64)
    if mode.startswith("I;16") or (mode == "I" and arr.max(initial=0) > 255):
        arr = arr / 257.0  # 0..65535 -> 0..255
    elif mode == "F" and arr.max(initial=0) <= 1.0:
        arr = arr * 255.0
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


def read_image_rgb(file_name: str) -> np.ndarray:
    """Read an image file as RGB uint8 (H, W, 3), EXIF orientation applied.

    Grayscale, palette, CMYK and RGBA (alpha dropped) are converted to RGB; 16-bit and
    32-bit grayscale are scaled to 8 bits (not clipped).

    Raises:
        FileNotFoundError / OSError naming ``file_name`` if it is missing or not a readable image.
    """
    try:
        with PathManager.open(file_name, "rb") as f:
            image = Image.open(f)
            image.load()
    except FileNotFoundError as e:
        raise FileNotFoundError(f"image file not found: {file_name!r}") from e
    except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as e:
        raise OSError(f"cannot read image file {file_name!r}: {e}") from e
    image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode == "RGB":
        arr = np.asarray(image)
    elif mode.startswith("I") or mode == "F":
        gray = _to_uint8(np.asarray(image), mode)
        arr = np.repeat(gray[..., None], 3, axis=2)
    else:
        if mode == "P":  # palette (possibly with transparency)
            image = image.convert("RGBA")
        arr = np.asarray(image.convert("RGB"))
    if arr.ndim != 3 or arr.shape[2] != 3:  # pragma: no cover - PIL guarantees this
        raise OSError(f"image {file_name!r}: unexpected array shape {arr.shape} after RGB conversion")
    return np.ascontiguousarray(arr, dtype=np.uint8)


def transform_box_annotations(
    annotations, transforms: T.TransformList, image_shape, box_threshold: float = 1e-5
) -> Instances:
    """Transform COCO-style box annotations with ``transforms`` into ``Instances``.

    Crowd annotations are dropped; masks/keypoints are ignored. Boxes are converted to xyxy
    absolute pixels of the transformed image, clipped to it, and boxes whose width or height
    is <= ``box_threshold`` (e.g. cropped away) are removed; an image may end with no boxes.

    Returns:
        Instances(image_shape) with ``gt_boxes`` (Boxes, (N, 4) xyxy abs float32) and
        ``gt_classes`` (int64, (N,), contiguous 0..K-1).
    """
    annos = []
    for obj in annotations:
        if obj.get("iscrowd", 0) != 0:
            continue
        obj = {k: v for k, v in obj.items() if k not in ("segmentation", "keypoints")}
        # integer json boxes would make detectron2 transform them in an int array (truncation)
        obj["bbox"] = [float(v) for v in obj["bbox"]]
        annos.append(utils.transform_instance_annotations(obj, transforms, image_shape))
    instances = utils.annotations_to_instances(annos, image_shape)
    keep = instances.gt_boxes.nonempty(threshold=box_threshold)
    instances = instances[keep]
    instances.gt_classes = instances.gt_classes.to(torch.int64)
    return instances


def finish_dataset_dict(dataset_dict: Dict, image: np.ndarray) -> Dict:
    """Store ``image`` (H, W, 3) uint8 RGB as the (3, H, W) uint8 tensor ``dataset_dict["image"]``."""
    dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
    return dataset_dict


def start_dataset_dict(dataset_dict: Dict) -> tuple:
    """Copy the dict, read its image, check/record the original size. Returns (dict, image)."""
    dataset_dict = copy.deepcopy(dataset_dict)
    if "file_name" not in dataset_dict:
        raise KeyError(f"dataset dict has no 'file_name' (keys: {sorted(dataset_dict)})")
    image = read_image_rgb(dataset_dict["file_name"])
    utils.check_image_size(dataset_dict, image)  # also fills in missing height/width
    return dataset_dict, image
