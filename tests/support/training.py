"""Training checks shared by the detector tests."""
from typing import Dict, List

import torch
from detectron2.structures import pairwise_iou


def assert_overfits_two_images(model: torch.nn.Module, batch: List[Dict], steps: int, lr: float = 3e-3) -> None:
    """Train ``model`` on ``batch`` for ``steps`` AdamW steps (weight decay 1e-4, gradients clipped
    to norm 0.1): the mean loss of the last 5 steps must be under half that of the first 5, and at
    inference the best-scoring detection of each ground truth's class must overlap it (IoU > 0.5)."""
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    history = []
    for _ in range(steps):
        loss = sum(model(batch).values())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        opt.step()
        history.append(loss.item())
    assert sum(history[-5:]) / 5 < 0.5 * sum(history[:5]) / 5, history
    model.eval()
    with torch.no_grad():
        results = model(batch)
    for r, x in zip(results, batch):
        inst, gt = r["instances"], x["instances"]
        iou = pairwise_iou(gt.gt_boxes, inst.pred_boxes)
        for g, label in enumerate(gt.gt_classes):
            best = (inst.scores * (inst.pred_classes == label)).argmax()
            assert iou[g, best] > 0.5, (g, iou[g, best])
