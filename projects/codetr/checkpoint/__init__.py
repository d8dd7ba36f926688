"""Checkpoint converters from the official releases (see MODEL_ZOO.md and
``tools/convert_checkpoint.py``).

    from codetr.checkpoint import convert, load_checkpoint_file, extract_state_dict
    sd = extract_state_dict(load_checkpoint_file("dino_r50_4scale_12ep.pth"))
    result = convert("detrex-dino", sd, target=model.state_dict())
    torch.save(result.checkpoint(), "converted.pth")   # DetectionCheckpointer-loadable

Every checkpoint file the project reads goes through ``load_checkpoint_file`` (no code runs
while reading: ``torch.load(weights_only=True)``, or a restricted unpickler for Detectron2
``.pkl`` files) and is loaded into a model by ``Checkpointer`` (which refuses checkpoints that
do not fit the model unless partial loading is asked for).
"""
from . import adamixer, co_detr, conditional_detr, detr, dino, resnet, tood  # noqa: F401  (register the sources)
from .checkpointer import Checkpointer, CheckpointMismatchError, LoadReport
from .coco import COCO_THING_IDS, coco91_to_80, coco92_to_81
from .core import (
    CheckpointConversionError,
    Conversion,
    DroppedKey,
    KeyMapper,
    MissingKeyError,
    PickleRefusedError,
    ShapeMismatchError,
    Source,
    SourceNotImplementedError,
    UnknownKeyError,
    convert,
    extract_state_dict,
    get_source,
    list_sources,
    register_source,
    to_detectron2_checkpoint,
    verify_state_dict,
)
from .resnet import map_resnet
from .safe_load import RestrictedUnpickler, UnsafeCheckpointError, load_checkpoint_file
from .rpn import map_mmdet_rpn_head, mmdet_to_d2_anchor_order, permute_anchor_channels

__all__ = [
    "Checkpointer",
    "CheckpointMismatchError",
    "LoadReport",
    "RestrictedUnpickler",
    "UnsafeCheckpointError",
    "COCO_THING_IDS",
    "coco91_to_80",
    "coco92_to_81",
    "CheckpointConversionError",
    "Conversion",
    "DroppedKey",
    "KeyMapper",
    "MissingKeyError",
    "PickleRefusedError",
    "ShapeMismatchError",
    "Source",
    "SourceNotImplementedError",
    "UnknownKeyError",
    "convert",
    "extract_state_dict",
    "get_source",
    "list_sources",
    "load_checkpoint_file",
    "register_source",
    "to_detectron2_checkpoint",
    "verify_state_dict",
    "map_resnet",
    "map_mmdet_rpn_head",
    "mmdet_to_d2_anchor_order",
    "permute_anchor_channels",
]
