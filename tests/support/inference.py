"""Inference checks shared by the detector tests."""
from typing import Dict, List

import torch


def assert_batched_equals_single(model: torch.nn.Module, inputs: List[Dict], num_detections: int) -> None:
    """``model`` (in eval mode) on the batch ``inputs`` gives each image the detections it gets
    alone: ``num_detections`` each, same scores (1e-5), boxes (1e-3 px) and classes."""
    with torch.no_grad():
        batched = model(inputs)
        singles = [model([x])[0] for x in inputs]
    for b, s in zip(batched, singles):
        b, s = b["instances"], s["instances"]
        assert len(b) == num_detections
        torch.testing.assert_close(b.scores, s.scores, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(b.pred_boxes.tensor, s.pred_boxes.tensor, atol=1e-3, rtol=1e-4)
        assert torch.equal(b.pred_classes, s.pred_classes)
