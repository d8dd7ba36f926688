"""Shared helpers of the data tests: scoring the ground truth itself with Detectron2's COCOEvaluator."""
import pytest
import torch

from detectron2.evaluation import COCOEvaluator
from detectron2.structures import Boxes, BoxMode, Instances


def perfect_predictions_ap(name, dicts, output_dir=None):
    """COCO box AP of predictions equal to the ground truth of ``dicts`` (every box, its class,
    score 1) through ``COCOEvaluator(name)``, which reads the registered ``json_file``.

    An evaluator that agrees with its ground truth gives 100 whenever every image has at most 100
    boxes (COCO's maxDets)."""
    evaluator = COCOEvaluator(name, output_dir=output_dir)
    evaluator.reset()
    for d in dicts:
        boxes = torch.tensor(
            [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in d["annotations"]],
            dtype=torch.float32,
        ).reshape(-1, 4)
        inst = Instances((d["height"], d["width"]))
        inst.pred_boxes = Boxes(boxes)
        inst.scores = torch.ones(len(boxes))
        inst.pred_classes = torch.tensor([a["category_id"] for a in d["annotations"]], dtype=torch.int64)
        evaluator.process([{"image_id": d["image_id"]}], [{"instances": inst}])
    return evaluator.evaluate()["bbox"]["AP"]


@pytest.fixture
def perfect_ap():
    return perfect_predictions_ap
