"""Run an exported detector graph (``export_onnx``) with ONNX Runtime behind Detectron2's model
interface, so that Detectron2's evaluation loop (``inference_on_dataset`` + an evaluator) scores it
exactly as it scores the PyTorch model.

Needs ``onnxruntime`` only (imported when an ``OnnxRuntimeDetector`` is built).
"""
from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np
import torch
from detectron2.structures import Boxes, Instances

from codetr.modeling.postprocess import rescale_detections

# the graph's names, as ``codetr.export.onnx_export`` writes them (not imported from there: that
# module needs onnxscript, which running a graph does not)
INPUT_NAMES = ["image"]
OUTPUT_NAMES = ["labels", "boxes", "scores"]

__all__ = ["GraphInputSizeError", "OnnxRuntimeDetector"]


class GraphInputSizeError(ValueError):
    """An image of another size than the one a fixed-size graph was exported for."""


class OnnxRuntimeDetector:
    """Callable as a Detectron2 model in inference: ``[{"image", "height", "width"}] ->
    [{"instances": Instances}]``.

    ``"image"``: (3, H, W) uint8 tensor in the graph's input format (the test mapper's output);
    each image runs alone (the graph takes a batch of 1). The graph returns ``labels`` (K,),
    ``boxes`` (K, 4) xyxy in the H x W input's pixels and ``scores`` (K,); they are wrapped as
    ``Instances((H, W))`` (``pred_classes``, ``pred_boxes``, ``scores``) and rescaled to the
    original ``height`` x ``width`` (default H x W) as the PyTorch detector does: by
    ``detector_postprocess``, or without clipping or dropping anything when the graph's
    ``codetr.detectron2_postprocess`` metadata is "False" (``codetr.modeling.postprocess``).

    Args:
        path: the .onnx file.
        num_threads: ONNX Runtime intra-op threads (0: its default).
        input_format: the format the images come in ("RGB" / "BGR"); checked against the graph's
            ``codetr.input_format`` metadata when it has one. None: not checked.

    Attributes: ``fixed_size`` (H, W) of a graph exported without ``--dynamic`` (None: any size;
    another size raises ``GraphInputSizeError`` saying to export with ``--dynamic``, instead of
    ONNX Runtime's "Got: 160 Expected: 128"), ``num_classes`` (the ``codetr.num_classes``
    metadata; None for graphs exported before it was recorded), ``metadata``.
    """

    def __init__(self, path: str, num_threads: int = 0, input_format: Optional[str] = "RGB"):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = max(num_threads, 0)
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if inputs != INPUT_NAMES or outputs != OUTPUT_NAMES:
            raise ValueError(
                f"{path}: the graph has inputs {inputs} and outputs {outputs}; expected an export_onnx graph "
                f"(inputs {INPUT_NAMES}, outputs {OUTPUT_NAMES})"
            )
        self.path = path
        dims = self.session.get_inputs()[0].shape[2:]
        self.fixed_size = tuple(dims) if all(isinstance(d, int) for d in dims) else None
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.detectron2_postprocess = self.metadata.get("codetr.detectron2_postprocess", "True") != "False"
        classes = self.metadata.get("codetr.num_classes")
        self.num_classes = int(classes) if classes is not None and classes.isdigit() else None
        graph_format = self.metadata.get("codetr.input_format")
        if input_format is not None and graph_format is not None and graph_format != input_format:
            raise ValueError(
                f"{path}: the graph expects {graph_format} images, but the inputs are {input_format}"
            )

    def detect(self, image: torch.Tensor) -> Instances:
        """One (3, H, W) uint8 image -> Instances((H, W)) of the graph's detections."""
        if image.dim() != 3 or image.shape[0] != 3 or image.dtype != torch.uint8:
            raise ValueError(
                f"OnnxRuntimeDetector: expected a (3, H, W) uint8 image, got {tuple(image.shape)} {image.dtype}"
            )
        h, w = image.shape[-2:]
        if self.fixed_size is not None and (h, w) != self.fixed_size:
            raise GraphInputSizeError(
                f"{self.path} was exported for {self.fixed_size[0]} x {self.fixed_size[1]} images (a fixed-size "
                f"graph) but got a {h} x {w} image; export it with tools/export_onnx.py --dynamic to run it on "
                "images of any size"
            )
        labels, boxes, scores = self.session.run(OUTPUT_NAMES, {INPUT_NAMES[0]: image[None].numpy()})
        r = Instances((h, w))
        r.pred_boxes = Boxes(torch.from_numpy(np.ascontiguousarray(boxes, dtype=np.float32)))
        r.scores = torch.from_numpy(np.ascontiguousarray(scores, dtype=np.float32))
        r.pred_classes = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))
        return r

    def __call__(self, batched_inputs: List[Dict]) -> List[Dict[str, Instances]]:
        results = []
        for x in batched_inputs:
            r = self.detect(x["image"])
            h, w = r.image_size
            results.append({"instances": rescale_detections(r, x.get("height", h), x.get("width", w),
                                                            self.detectron2_postprocess)})
        return results
