"""Inputs and checks shared by the export tests (ONNX, ONNX Runtime): rendered shapes images and
the comparison of two lists of detections."""
import numpy as np
import torch

from codetr.data.shapes import render_image


def shapes_image(index, h, w):
    """A rendered shapes_val image (objects on textured backgrounds), cropped to (h, w)."""
    image = render_image(0, "val", index)[0]
    reps = (-(-h // image.shape[0]), -(-w // image.shape[1]), 1)
    return torch.from_numpy(np.ascontiguousarray(np.tile(image, reps)[:h, :w])).permute(2, 0, 1).contiguous()


def assert_same_detections(onnx_out, torch_out, box_tol=1e-3, score_tol=1e-4):
    """The same detections: each one has its own twin in the other list (same label, box within
    ``box_tol`` px, score within ``score_tol``), both lists by decreasing score. (Detections whose
    scores differ by ~1e-7 may come out in either order: not compared by position.)"""
    labels, boxes, scores = onnx_out
    t_labels, t_boxes, t_scores = torch_out
    assert len(t_scores) > 5, "the test needs detections"
    assert labels.shape == t_labels.shape and boxes.shape == t_boxes.shape and scores.shape == t_scores.shape
    assert (np.diff(scores) <= 0).all() and (np.diff(t_scores) <= 0).all()
    twins = ((labels[:, None] == t_labels[None])
             & (np.abs(boxes[:, None] - t_boxes[None]).max(-1) <= box_tol)
             & (np.abs(scores[:, None] - t_scores[None]) <= score_tol))
    used = set()
    for i in range(len(labels)):
        free = [j for j in np.nonzero(twins[i])[0] if j not in used]
        assert free, f"detection {i} (label {labels[i]}, box {boxes[i]}, score {scores[i]}) has no twin"
        used.add(free[0])
