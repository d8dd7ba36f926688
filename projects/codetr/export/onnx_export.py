"""``export_onnx``: a detector -> an ONNX graph that ONNX Runtime runs on the CPU.

The graph (standard ONNX operators only, no custom domain):

- input ``image``: (1, 3, H, W) uint8 in the model's ``input_format`` (H, W fixed, or any with
  ``dynamic=True``);
- outputs ``labels`` (K,) int64, ``boxes`` (K, 4) float32 xyxy in the input image's pixels,
  ``scores`` (K,) float32: the detections of the PyTorch model (see ``codetr.export.adapters``);
- ``codetr::ms_deform_attn`` translated by ``codetr.export.onnx_ops`` (GridSample per level by
  default), the level shapes read from the feature maps inside the graph;
- metadata (``metadata_props``): ``codetr.model``, ``codetr.num_classes`` (checked by
  ``tools/eval_onnx.py`` against the dataset), ``codetr.input_format``, ``codetr.dynamic_size``
  (with ``codetr.image_size`` "H W" of a fixed-size graph), ``codetr.ms_deform_attn``, what was
  not exported, and the caller's entries (``tools/export_onnx.py``: ``codetr.config``).

The model is run once in PyTorch on the example image before tracing, so that a size it cannot
process (e.g. fewer encoder positions than the queries it selects) is a ``ValueError`` naming the
size and the model's own message, not an error of the exporter.

Uses torch's dynamo exporter (``torch.onnx.export(dynamo=True)``, which needs ``onnxscript``).
"""
from __future__ import annotations

import os
from typing import Dict, Optional, Sequence

import torch
from torch import nn

from codetr.data.checks import model_num_classes

from .adapters import ExportableDetector, QueryDetectorExport, TOODExport, exportable
from .onnx_ops import ms_deform_attn_translation

__all__ = ["export_onnx", "DEFAULT_OPSET", "INPUT_NAMES", "OUTPUT_NAMES"]

# 19: the lowest opset with DeformConv (TOOD's T-Head). torch 2.14's dynamo exporter writes opset
# 18 natively; its down-conversion to 17 writes ReduceProd-18 attributes ONNX Runtime rejects.
DEFAULT_OPSET = 19
MIN_OPSET = 18
INPUT_NAMES = ["image"]
OUTPUT_NAMES = ["labels", "boxes", "scores"]


def _check_size(image_size) -> tuple:
    if image_size is None or len(image_size) != 2 or any(int(s) != s or s <= 0 for s in image_size):
        raise ValueError(f"export_onnx: image_size must be (H, W) positive integers, got {image_size!r}")
    return int(image_size[0]), int(image_size[1])


def export_onnx(
    model: nn.Module,
    path: str,
    image_size: Sequence[int] = (800, 1333),
    dynamic: bool = False,
    opset: int = DEFAULT_OPSET,
    deform_attn: str = "grid_sample",
    seed: int = 0,
    metadata: Optional[Dict[str, str]] = None,
) -> str:
    """Export ``model`` (moved to the CPU, eval mode) to the ONNX file ``path``.

    Args:
        model: DINO, CoDETR (its DINO's inference graph) or TOOD; anything else raises
            ``UnsupportedModelError`` naming it.
        path: output file (one file, weights inside).
        image_size: (H, W) of the graph's input; with ``dynamic`` only the example traced (the
            graph then accepts any size; the traced sizes should be typical ones).
        dynamic: export with dynamic H and W.
        opset: ONNX opset, >= 18 (torch 2.14's exporter implements no lower one: its automatic
            down-conversion to 17 writes ReduceProd-18 nodes that ONNX Runtime rejects); TOOD
            needs >= 19 (DeformConv).
        deform_attn: "grid_sample" or "gather", see ``codetr.export.onnx_ops``.
        seed: seed of the random example image.
        metadata: extra ``metadata_props`` entries (str -> str), e.g. ``{"codetr.config": ...}``.

    Returns:
        ``path``.
    """
    h, w = _check_size(image_size)
    if opset < MIN_OPSET:
        raise ValueError(
            f"export_onnx: opset {opset} is not supported; use >= {MIN_OPSET} (torch 2.14's exporter converts lower "
            "opsets with errors: ReduceProd-18 attributes in an opset-17 graph that ONNX Runtime rejects)"
        )
    adapter: ExportableDetector = exportable(model.cpu()).eval()  # the wrapper too, not only the model
    if isinstance(adapter, TOODExport) and opset < 19:
        raise ValueError(f"export_onnx: TOOD needs opset >= 19 (DeformConv of the T-Head), got {opset}")
    generator = torch.Generator().manual_seed(seed)
    example = torch.randint(0, 256, (1, 3, h, w), dtype=torch.uint8, generator=generator)
    try:
        with torch.no_grad():
            adapter(example)  # in PyTorch first: an error of the model names its cause
    except Exception as e:  # noqa: BLE001 - any failure at this size; the exporter would bury it
        raise ValueError(
            f"export_onnx: the model cannot process a {h} x {w} image (run in PyTorch before tracing): "
            f"{type(e).__name__}: {e}. Export at a larger image size"
        ) from e
    dynamic_shapes = None
    if dynamic:
        if any(s <= 1 for shape in adapter.level_shapes for s in shape):
            raise ValueError(
                f"export_onnx: the example size {(h, w)} gives feature levels {adapter.level_shapes}; a dynamic "
                "export needs every level at least 2 x 2 (torch.export specialises sizes 1): use a larger image_size"
            )
        dim = torch.export.Dim.DYNAMIC
        dynamic_shapes = {"image": {2: dim, 3: dim}}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    translation = {torch.ops.codetr.ms_deform_attn.default: ms_deform_attn_translation(deform_attn, opset)}
    with torch.no_grad():
        program = torch.onnx.export(
            adapter,
            (example,),
            dynamo=True,
            opset_version=opset,
            input_names=INPUT_NAMES,
            output_names=OUTPUT_NAMES,
            dynamic_shapes=dynamic_shapes,
            custom_translation_table=translation,
            verbose=False,
            # the exporter's graph optimiser (onnxscript 0.7.2) left a Clip reading a removed
            # constant ("sigmoid_min_1": invalid graph); ONNX Runtime optimises at load anyway
            optimize=False,
        )
    props = {
        "codetr.model": type(model).__name__,
        "codetr.input_format": adapter.input_format,
        "codetr.ms_deform_attn": deform_attn,
        "codetr.dynamic_size": str(bool(dynamic)),
        # how OnnxRuntimeDetector rescales the graph's detections to the original size
        "codetr.detectron2_postprocess": str(bool(adapter.detectron2_postprocess)),
    }
    num_classes = model_num_classes(model)
    if num_classes is not None:
        props["codetr.num_classes"] = str(num_classes)
    if not dynamic:
        props["codetr.image_size"] = f"{h} {w}"
    if isinstance(adapter, QueryDetectorExport) and adapter.soft_nms_dropped:
        props["codetr.not_exported"] = "soft_nms (no ONNX operator): top-k without it"
    props.update({str(k): str(v) for k, v in (metadata or {}).items()})
    program.model.metadata_props.update(props)
    program.save(path, external_data=False)
    return path
