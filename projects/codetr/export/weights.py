"""Loading a checkpoint into the module that is exported.

Co-DETR checkpoints hold the DINO detector under ``detector.`` and training-only weights under
``aux_heads.``, ``positive_queries.``, ``downsample.`` (``pyramid_adapter.``); the exported graph is the detector's, so
those are dropped (and counted), whatever config (Co-DETR or the plain DINO one) the model was
built from. Every other key must match the exported module exactly.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch
from torch import Tensor, nn

from codetr.modeling.meta_arch import CoDETR

__all__ = ["AUX_PREFIXES", "load_inference_weights"]

# as tools/strip_aux_weights.py (pyramid_adapter: issue 10's Co-DETR adapter for non-pyramid encoders)
AUX_PREFIXES = ("aux_heads.", "positive_queries.", "downsample.", "pyramid_adapter.")
DETECTOR = "detector."


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


def load_inference_weights(model: nn.Module, path: str) -> List[str]:
    """Load the checkpoint ``path`` (a DetectionCheckpointer file ``{"model": state}`` or a bare
    state dict) into the part of ``model`` that inference runs (``model.detector`` for Co-DETR,
    else ``model``). Returns the dropped auxiliary keys; raises ``ValueError`` naming missing or
    unexpected keys."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict):
        raise ValueError(f"load_inference_weights: {path} holds a {type(ckpt).__name__}, expected a state dict")
    state = ckpt["model"] if isinstance(ckpt.get("model"), dict) else ckpt
    state, dropped = _inference_state(state)
    target = model.detector if isinstance(model, CoDETR) else model
    result = target.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"load_inference_weights: {path} does not fit {type(target).__name__}: missing keys "
            f"{result.missing_keys[:10]}{' ...' if len(result.missing_keys) > 10 else ''}, unexpected keys "
            f"{result.unexpected_keys[:10]}{' ...' if len(result.unexpected_keys) > 10 else ''}"
        )
    return dropped
