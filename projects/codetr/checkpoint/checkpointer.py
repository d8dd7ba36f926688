"""``Checkpointer``: Detectron2's ``DetectionCheckpointer`` with safe reading and a load check.

Every entry point (train_net.py's ``train.init_checkpoint``, ``--resume`` and ``--eval-only``,
tools/demo.py) loads through this class:

* **Reading** goes through ``codetr.checkpoint.load_checkpoint_file`` (``torch.load(weights_only=
  True)`` for PyTorch files, a restricted unpickler for Detectron2 ``.pkl`` model-zoo files), so no
  checkpoint executes code unless ``allow_unsafe_pickle=True``.
* **Matching** a checkpoint to the model is checked (``check_load``): Detectron2 only logs missing,
  unexpected and mis-shaped keys, so a checkpoint of another model or class count used to "load"
  and evaluate to AP 0. The rule (``LoadReport.problem``):

  - a *complete* load (every model tensor found with its shape, nothing left over) is accepted;
  - a *backbone initialisation* is accepted: every tensor loaded lies in the model's backbone
    (the outermost ``detectron2.modeling.Backbone`` modules, or modules named ``backbone``), at
    least half of the backbone's tensors are loaded, and the checkpoint has nothing outside it
    (the configs' ``detectron2://ImageNetPretrained/torchvision/R-50.pkl`` use, matched by
    Detectron2's name heuristics, and ``tools/convert_checkpoint.py --source torchvision-resnet``);
  - tensors missing only from modules the model declares unused at inference
    (``training_only_state_prefixes``, Co-DETR's auxiliary heads when it evaluates its DETR
    decoder) are accepted too: an aux-stripped Co-DETR checkpoint evaluates as is;
  - anything else is a ``CheckpointMismatchError`` (any shape mismatch, e.g. another
    ``num_classes``; keys of another model; a detector checkpoint that covers only part of the
    model) naming the file, the counts of matched / missing / unexpected / mis-shaped keys,
    examples of each, and the opt-in: ``partial=True`` (``train.init_checkpoint_partial=True``)
    loads what matches, as Detectron2 does, and logs what was loaded and skipped.

  Checkpoints with ``matching_heuristics`` (Detectron2's name-suffix matching, used by model-zoo
  ``.pkl`` files) report no unexpected keys: Detectron2 drops checkpoint keys that match no model
  key (e.g. an ImageNet classifier's ``fc``); mis-shaped keys are found by the same suffix rule.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import List, Sequence, Tuple

from detectron2.checkpoint import DetectionCheckpointer
from torch import nn

from .core import CheckpointConversionError
from .safe_load import load_checkpoint_file

__all__ = ["Checkpointer", "CheckpointMismatchError", "LoadReport", "backbone_prefixes", "training_only_prefixes"]

logger = logging.getLogger(__name__)

PARTIAL_HINT = "train.init_checkpoint_partial=True"
# buffers Detectron2 itself does not require from a checkpoint (set from the config)
_IGNORED_MISSING = ("pixel_mean", "pixel_std")


class CheckpointMismatchError(CheckpointConversionError):
    """A checkpoint does not fit the model (see the module docstring for the rule)."""


def backbone_prefixes(model: nn.Module) -> Tuple[str, ...]:
    """State-dict prefixes (``"backbone."``, ``"detector.backbone."``) of the outermost backbone
    modules: instances of ``detectron2.modeling.Backbone`` or modules named ``backbone``."""
    from detectron2.modeling import Backbone

    found: List[str] = []
    for name, module in model.named_modules():
        if not name or any(name.startswith(p) for p in found):
            continue
        if isinstance(module, Backbone) or name.rsplit(".", 1)[-1] == "backbone":
            found.append(name + ".")
    return tuple(found)


def training_only_prefixes(model: nn.Module) -> Tuple[str, ...]:
    """State-dict prefixes of the modules the model (or any submodule) declares unused at
    inference with a ``training_only_state_prefixes`` attribute (relative to that module)."""
    out: List[str] = []
    for name, module in model.named_modules():
        for p in getattr(module, "training_only_state_prefixes", ()) or ():
            out.append(f"{name}.{p}" if name else p)
    return tuple(out)


def _examples(keys: Sequence, limit: int = 5) -> str:
    keys = list(keys)
    text = ", ".join(str(k) for k in keys[:limit])
    return text + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


@dataclass
class LoadReport:
    """How a checkpoint's model tensors matched the model's state dict.

    ``loaded``: model keys that received a tensor; ``missing``: model keys that did not (not
    counting mis-shaped ones); ``unexpected``: checkpoint keys with no model key;
    ``mismatched``: ``(key, checkpoint shape, model shape)``; ``model_keys``: all model keys.
    """

    path: str
    model_keys: List[str]
    loaded: List[str]
    missing: List[str]
    unexpected: List[str]
    mismatched: List[Tuple[str, tuple, tuple]]
    backbone: Tuple[str, ...] = ()
    training_only: Tuple[str, ...] = ()
    kind: str = field(default="", init=False)

    def problem(self) -> str:
        """"" when the load is acceptable (and sets ``kind``), else the reason it is not."""
        if self.mismatched:
            return f"{len(self.mismatched)} tensors have other shapes than the model's"
        if self.unexpected:
            return f"{len(self.unexpected)} checkpoint tensors do not exist in the model"
        if not self.loaded:
            return "no tensor of the checkpoint matches the model"
        if not self.missing:
            self.kind = "complete"
            return ""
        if all(k.startswith(self.training_only) for k in self.missing) and self.training_only:
            self.kind = "all but training-only modules"
            return ""
        if self.backbone and all(k.startswith(self.backbone) for k in self.loaded):
            in_backbone = [k for k in self.model_keys if k.startswith(self.backbone)]
            if 2 * len(self.loaded) >= len(in_backbone):
                self.kind = "backbone initialisation"
                return ""
            return (f"it initialises only {len(self.loaded)} of the backbone's {len(in_backbone)} tensors "
                    "(a backbone initialisation must cover at least half)")
        return (f"{len(self.missing)} of the model's {len(self.model_keys)} tensors are missing and the "
                "checkpoint is not a backbone-only initialisation")

    def summary(self) -> str:
        lines = [
            f"matched {len(self.loaded)} of the model's {len(self.model_keys)} tensors; "
            f"missing {len(self.missing)}, unexpected {len(self.unexpected)}, shape-mismatched {len(self.mismatched)}"
        ]
        if self.mismatched:
            lines.append("  shape-mismatched (checkpoint vs model): " + _examples(
                [f"{k} {tuple(a)} vs {tuple(b)}" for k, a, b in self.mismatched]))
        if self.unexpected:
            lines.append("  unexpected: " + _examples(self.unexpected))
        if self.missing:
            lines.append("  missing: " + _examples(self.missing))
        return "\n".join(lines)


def _suffix_match(model_key: str, ckpt_keys: Sequence[str]) -> str:
    """The longest checkpoint key that Detectron2's heuristics would match to ``model_key``."""
    best = ""
    for c in ckpt_keys:
        if (model_key == c or model_key.endswith("." + c)) and len(c) > len(best):
            best = c
    return best


class Checkpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` that reads files with ``load_checkpoint_file`` and refuses
    checkpoints that do not fit the model (module docstring).

    Args:
        model, save_dir, save_to_disk, checkpointables: as ``DetectionCheckpointer``.
        allow_unsafe_pickle: allow full unpickling of trusted files (can execute code).
        partial: accept any match and log what was loaded / skipped (Detectron2's behaviour).
    """

    def __init__(self, model, save_dir="", *, allow_unsafe_pickle: bool = False, partial: bool = False,
                 **kwargs):
        super().__init__(model, save_dir, **kwargs)
        self.allow_unsafe_pickle = bool(allow_unsafe_pickle)
        self.partial = bool(partial)
        self.last_report: LoadReport = None  # type: ignore[assignment]
        self._loading_path = ""

    # --- reading -----------------------------------------------------------------------------
    def _load_file(self, filename: str):
        self._loading_path = filename
        if filename.endswith(".pkl"):
            data = load_checkpoint_file(filename, allow_unsafe_pickle=self.allow_unsafe_pickle)
            if not isinstance(data, dict):
                raise CheckpointMismatchError(f"{filename}: expected a dict of weights, got {type(data).__name__}")
            if "model" in data and "__author__" in data:  # Detectron2 model-zoo format
                self.logger.info("Reading a file from '%s'", data["__author__"])
                return data
            weights = data.get("blobs", data)  # Caffe2 detection files keep the weights under "blobs"
            weights = {k: v for k, v in weights.items() if not k.endswith("_momentum")}
            return {"model": weights, "__author__": "Caffe2", "matching_heuristics": True}
        if filename.endswith(".pyth"):  # pycls
            data = load_checkpoint_file(filename, allow_unsafe_pickle=self.allow_unsafe_pickle)
            if "model_state" not in data:
                raise CheckpointMismatchError(f"{filename}: a pycls .pyth checkpoint must contain 'model_state'")
            state = {k: v for k, v in data["model_state"].items() if not k.endswith("num_batches_tracked")}
            return {"model": state, "__author__": "pycls", "matching_heuristics": True}
        return super()._load_file(filename)  # handles ?matching_heuristics=True, calls _torch_load

    def _torch_load(self, f: str):
        return load_checkpoint_file(f, allow_unsafe_pickle=self.allow_unsafe_pickle)

    def load_model_state(self, state, path: str):
        """The checked load of a state dict already in memory (``path`` names it in messages),
        as ``load`` does with a file's ``"model"``: for callers that transform the state first
        (``codetr.export.weights``: a Co-DETR checkpoint's detector without its auxiliary
        weights). Returns the incompatible keys; raises ``CheckpointMismatchError`` as ``load``."""
        self._loading_path = path
        return self._load_model({"model": dict(state)})

    # --- matching ----------------------------------------------------------------------------
    def _load_model(self, checkpoint):
        heuristics = bool(checkpoint.get("matching_heuristics", False))
        ckpt_shapes = {(k[len("module."):] if k.startswith("module.") else k): tuple(getattr(v, "shape", ()))
                       for k, v in checkpoint["model"].items()}
        model_shapes = {k: tuple(v.shape) for k, v in self.model.state_dict().items()}
        incompatible = super()._load_model(checkpoint)
        mismatched = list(incompatible.incorrect_shapes)
        skip = {k for k, _, _ in mismatched}
        missing = [k for k in incompatible.missing_keys if k not in skip and k not in _IGNORED_MISSING]
        if heuristics:  # Detectron2's alignment drops mis-shaped matches without reporting them
            still_missing = []
            for k in missing:
                c = _suffix_match(k, list(ckpt_shapes))
                if c and ckpt_shapes[c] != model_shapes[k]:
                    mismatched.append((k, ckpt_shapes[c], model_shapes[k]))
                else:
                    still_missing.append(k)
            missing = still_missing
        unexpected = [] if heuristics else list(incompatible.unexpected_keys)
        # Detectron2 drops pixel_mean / pixel_std from the missing keys: not loaded unless in the file
        lost = set(missing) | {k for k, _, _ in mismatched} | {k for k in _IGNORED_MISSING if k not in ckpt_shapes}
        report = LoadReport(
            path=self._loading_path,
            model_keys=list(model_shapes),
            loaded=[k for k in model_shapes if k not in lost],
            missing=missing,
            unexpected=unexpected,
            mismatched=mismatched,
            backbone=backbone_prefixes(self.model),
            training_only=training_only_prefixes(self.model),
        )
        self.last_report = report
        problem = report.problem()
        if problem and not self.partial:
            raise CheckpointMismatchError(
                f"{report.path} does not fit the model: {problem}.\n{report.summary()}\n"
                f"Is it a checkpoint of this config (model, num_classes)? To load only the matching "
                f"tensors on purpose (fine-tuning from another model), pass {PARTIAL_HINT}."
            )
        if problem:
            logger.warning("Partial load of %s (%s): %s\n%s", report.path, PARTIAL_HINT, problem, report.summary())
        elif report.kind != "complete":
            logger.info("Loaded %s as a %s: %s", report.path, report.kind, report.summary())
        return incompatible
