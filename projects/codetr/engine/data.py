"""Building the training loader so that the dataset is loaded once and its length is known."""
from __future__ import annotations

from typing import Any, Optional, Tuple

from detectron2.config import instantiate
from detectron2.utils.registry import locate

__all__ = ["build_train_loader"]


def build_train_loader(loader_cfg) -> Tuple[Any, Optional[int], Any]:
    """Instantiate ``dataloader.train`` (``L(build_detection_train_loader)(dataset=..., ...)``).

    The ``dataset`` node is instantiated first and handed to the loader as an object, so the
    dataset dicts are loaded once, and its length can drive the epoch -> iteration conversion.

    Returns:
        (loader, number of training images or ``None`` if the dataset has no ``len()``, the
        instantiated dataset (e.g. the list of dataset dicts, for the start-of-run checks) or
        ``None`` if the config has no separate ``dataset`` node)
    """
    if "dataset" not in loader_cfg or "_target_" not in loader_cfg:
        return instantiate(loader_cfg), None, None
    dataset = instantiate(loader_cfg.dataset)
    try:
        num_images = len(dataset)
    except TypeError:
        num_images = None
    target = loader_cfg._target_
    if isinstance(target, str):
        target = locate(target)
    kwargs = {k: instantiate(v) for k, v in loader_cfg.items() if k not in ("_target_", "dataset")}
    return target(dataset=dataset, **kwargs), num_images, dataset
