"""Loading a checkpoint into the module that is exported.

Co-DETR checkpoints hold the DINO detector under ``detector.`` and training-only weights under
``aux_heads.``, ``positive_queries.``, ``downsample.`` (``pyramid_adapter.``); the exported graph is the detector's, so
those are dropped (and counted), whatever config (Co-DETR or the plain DINO one) the model was
built from. The rest is loaded by ``codetr.checkpoint.Checkpointer`` (safe reading, and the load
check of train_net.py: another class count or another model is a ``CheckpointMismatchError``
naming the file and the counts of matched / missing / unexpected / mis-shaped tensors).
"""
from __future__ import annotations

import logging
from typing import Dict, List, Tuple

from torch import Tensor, nn

from codetr.checkpoint import Checkpointer, CheckpointMismatchError, load_checkpoint_file
from codetr.modeling.meta_arch import CoDETR

__all__ = ["AUX_PREFIXES", "load_inference_weights"]

# as tools/strip_aux_weights.py (pyramid_adapter: issue 10's Co-DETR adapter for non-pyramid encoders)
AUX_PREFIXES = ("aux_heads.", "positive_queries.", "downsample.", "pyramid_adapter.")
DETECTOR = "detector."

logger = logging.getLogger(__name__)


def _inference_state(state: Dict[str, Tensor]) -> Tuple[Dict[str, Tensor], List[str]]:
    """Drop DDP's ``module.``, Co-DETR's auxiliary keys and its ``detector.`` prefix."""
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    if not any(k.startswith(DETECTOR) for k in state):
        return state, []
    dropped = [k for k in state if k.startswith(AUX_PREFIXES)]
    out = {}
    for key, value in state.items():
        if key.startswith(AUX_PREFIXES):
            continue
        if not key.startswith(DETECTOR):
            raise ValueError(
                f"load_inference_weights: key {key!r} of a Co-DETR checkpoint is neither under {DETECTOR!r} nor "
                f"auxiliary {AUX_PREFIXES}"
            )
        out[key[len(DETECTOR):]] = value
    return out, dropped


def load_inference_weights(model: nn.Module, path: str, allow_unsafe_pickle: bool = False,
                           partial: bool = False) -> List[str]:
    """Load the checkpoint ``path`` (a DetectionCheckpointer file ``{"model": state}`` or a bare
    state dict) into the part of ``model`` that inference runs (``model.detector`` for Co-DETR,
    else ``model``). Returns the dropped auxiliary keys.

    Read with ``load_checkpoint_file`` (no code runs unless ``allow_unsafe_pickle``) and loaded
    through ``Checkpointer.load_model_state``: a checkpoint that does not fit (another class
    count, another model) raises ``CheckpointMismatchError``; ``partial`` loads what matches
    (``train.init_checkpoint_partial``)."""
    ckpt = load_checkpoint_file(path, allow_unsafe_pickle=allow_unsafe_pickle)
    if not isinstance(ckpt, dict):
        raise CheckpointMismatchError(f"{path} holds a {type(ckpt).__name__}, expected a state dict")
    state = ckpt["model"] if isinstance(ckpt.get("model"), dict) else ckpt
    state, dropped = _inference_state(state)
    target = model.detector if isinstance(model, CoDETR) else model
    checkpointer = Checkpointer(target, partial=partial)
    checkpointer.load_model_state(state, path)
    kind = checkpointer.last_report.kind
    if kind != "complete":
        logger.warning("%s loaded into the exported %s as %s:\n%s", path, type(target).__name__,
                       kind or "a partial load", checkpointer.last_report.summary())
    return dropped
