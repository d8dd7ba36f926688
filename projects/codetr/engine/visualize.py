"""Drawing a model's detections on a few evaluation images (``train.vis_output_images``)."""
from __future__ import annotations

import os
from typing import Iterable, List

import torch
from PIL import Image

from detectron2.data import MetadataCatalog
from detectron2.data.detection_utils import read_image

__all__ = ["require_visualizer", "save_prediction_images"]


def require_visualizer():
    """Detectron2's ``Visualizer`` class; raises a clear ImportError when OpenCV is missing (call
    it before a long training run that ends with visualisations)."""
    try:
        from detectron2.utils.visualizer import Visualizer  # imports cv2
    except ImportError as e:
        raise ImportError(
            f"train.vis_output_images needs Detectron2's Visualizer, which needs OpenCV ({e}); "
            "pip install opencv-python-headless, or set train.vis_output_images=0"
        ) from e
    return Visualizer


@torch.no_grad()
def save_prediction_images(
    model: torch.nn.Module,
    data_loader: Iterable,
    dataset_name: str,
    output_dir: str,
    num_images: int,
    score_threshold: float = 0.3,
) -> List[str]:
    """Run ``model`` on the first ``num_images`` images of ``data_loader`` and write each image
    with its detections (score >= ``score_threshold``; class names from the dataset's metadata)
    drawn by Detectron2's ``Visualizer`` to ``output_dir/<image name>.jpg``.

    The original image is read from ``file_name`` (predictions are in original-image
    coordinates, as returned by Detectron2 meta-architectures). Returns the written paths.
    """
    Visualizer = require_visualizer()
    os.makedirs(output_dir, exist_ok=True)
    metadata = MetadataCatalog.get(dataset_name)
    was_training = model.training
    model.eval()
    written: List[str] = []
    try:
        for batch in data_loader:
            outputs = model(batch)
            for inputs, output in zip(batch, outputs):
                image = read_image(inputs["file_name"], format="RGB")
                instances = output["instances"].to("cpu")
                instances = instances[instances.scores >= score_threshold]
                drawn = Visualizer(image, metadata).draw_instance_predictions(instances).get_image()
                name = os.path.splitext(os.path.basename(inputs["file_name"]))[0]
                path = os.path.join(output_dir, f"{name}.jpg")
                Image.fromarray(drawn).save(path)
                written.append(path)
                if len(written) >= num_images:
                    return written
    finally:
        model.train(was_training)
    return written
