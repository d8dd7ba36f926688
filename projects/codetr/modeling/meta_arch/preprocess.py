"""Input normalisation shared by the meta-architectures."""
from typing import Dict, List

from detectron2.structures import ImageList
from torch import Tensor

__all__ = ["normalize_and_pad"]


def normalize_and_pad(
    batched_inputs: List[Dict], pixel_mean: Tensor, pixel_std: Tensor, input_format: str, size_divisibility: int
) -> ImageList:
    """uint8 (3, H, W) images (RGB, or BGR flipped to RGB) -> normalised float images padded into
    one ImageList on the device of ``pixel_mean`` ((3, 1, 1) mean and std)."""
    images = []
    for x in batched_inputs:
        img = x["image"].to(pixel_mean.device)
        if input_format == "BGR":
            img = img.flip(0)
        images.append((img.float() - pixel_mean) / pixel_std)
    return ImageList.from_tensors(images, size_divisibility)
