"""The one way this project reads a checkpoint file: no file can execute code while it is read.

``load_checkpoint_file(path)`` dispatches on the format:

* PyTorch files (``.pth``, ``.pt``, ``.pyth``, and any zip-format ``torch.save`` file whatever its
  name) go through ``torch.load(..., weights_only=True)``: tensors, numbers, strings, containers
  (and the few types torch allow-lists) only. Detectron2 training checkpoints (model, optimizer,
  scheduler, iteration, EMA) are made of those and load this way.
* Detectron2 / Caffe2 model-zoo pickles (``.pkl``, e.g.
  ``detectron2://ImageNetPretrained/torchvision/R-50.pkl``: ``{"model": {name: numpy array},
  "__author__": ..., "matching_heuristics": True}``) go through ``RestrictedUnpickler``, which
  resolves only the globals numpy arrays need to be rebuilt (``numpy.ndarray``, ``numpy.dtype``,
  ``numpy[._]core.multiarray._reconstruct`` / ``scalar``, ``numpy[._]core.numeric._frombuffer``,
  ``_codecs.encode``) and plain built-in containers / numbers / strings. Any other global (an
  ``os.system``, a class of some library) raises ``UnsafeCheckpointError`` naming the file and the
  global, before anything of it is called.

Trusted files that hold other objects (``argparse.Namespace`` in the DINO repo's checkpoints,
mmcv ``meta`` entries, ...) need ``allow_unsafe_pickle=True`` (``train.allow_unsafe_pickle=True``
for train_net.py, ``--allow-unsafe-pickle`` for the tools): full unpickling, which can run
arbitrary code, with a logged warning.
"""
from __future__ import annotations

import logging
import pickle
import re
from typing import Any, FrozenSet, List, Tuple

import torch

from .core import PickleRefusedError

__all__ = ["UnsafeCheckpointError", "RestrictedUnpickler", "load_checkpoint_file", "OPT_IN_HINT"]

logger = logging.getLogger(__name__)

OPT_IN_HINT = (
    "If you trust the file, opt in to full unpickling (it can execute code): "
    "train.allow_unsafe_pickle=True for train_net.py, --allow-unsafe-pickle for the tools."
)


class UnsafeCheckpointError(PickleRefusedError):
    """A checkpoint file references a Python global outside the allow-list; ``keys`` holds the
    refused globals as ``"module.name"``."""


# numpy moved numpy.core to numpy._core in 2.0; files written by either version name either
_NUMPY_CORE = ("numpy.core", "numpy._core")
_ALLOWED_GLOBALS: FrozenSet[Tuple[str, str]] = frozenset(
    [(f"{core}.multiarray", "_reconstruct") for core in _NUMPY_CORE]
    + [(f"{core}.multiarray", "scalar") for core in _NUMPY_CORE]
    + [(f"{core}.numeric", "_frombuffer") for core in _NUMPY_CORE]
    + [("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")]
    + [("builtins", name) for name in ("dict", "list", "tuple", "set", "frozenset", "bytes", "bytearray",
                                       "str", "int", "float", "complex", "bool", "slice", "range")]
    + [("__builtin__", name) for name in ("set", "frozenset", "bytearray", "complex", "unicode", "long")]
    + [("collections", "OrderedDict")]
)


def _is_allowed(module: str, name: str) -> bool:
    # numeric, bool, datetime and structured dtypes all pickle as numpy.dtype(...) (checked with
    # numpy 2.4); exotic ones (StringDType) need more and are refused
    return (module, name) in _ALLOWED_GLOBALS


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only the globals of numpy arrays and built-in
    containers / numbers / strings (see the module docstring); anything else raises
    ``UnsafeCheckpointError`` naming ``filename`` and the global."""

    def __init__(self, file, filename: str = "<checkpoint>", **kwargs):
        super().__init__(file, **kwargs)
        self.filename = filename

    def find_class(self, module: str, name: str):
        if _is_allowed(module, name):
            return super().find_class(module, name)
        raise UnsafeCheckpointError(
            f"{self.filename}: refused to unpickle the global {module}.{name}: a checkpoint pickle may "
            f"only hold numpy arrays, numbers, strings and containers (a crafted pickle runs code this "
            f"way). {OPT_IN_HINT}",
            keys=[f"{module}.{name}"],
        )

    def persistent_load(self, pid):  # no torch storages or other external references
        raise UnsafeCheckpointError(
            f"{self.filename}: refused a persistent reference ({pid!r}) in a plain pickle. {OPT_IN_HINT}",
            keys=[repr(pid)],
        )


def _is_zip(f) -> bool:
    """Whether the open binary file ``f`` is a zip archive (torch.save's format); rewinds it."""
    magic = f.read(4)
    f.seek(0)
    return magic == b"PK\x03\x04"


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def _torch_unsafe_globals(f) -> List[str]:
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(f))
    except Exception:  # noqa: BLE001 - best effort, only used to improve the message
        return []


def _load_torch(path: str, f, allow_unsafe_pickle: bool) -> Any:
    try:
        return torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        f.seek(0)
        if allow_unsafe_pickle:
            logger.warning("%s needs full unpickling (not weights_only); loading it because "
                           "allow_unsafe_pickle is set: only do this for files you trust", path)
            return torch.load(f, map_location="cpu", weights_only=False)
        names = _torch_unsafe_globals(f) if _is_zip(f) else []
        if not names:  # torch's own reason names the global ("Unsupported global: GLOBAL posix.system")
            names = sorted(set(re.findall(r"GLOBAL ([\w.]+)", _strip_ansi(str(e)))))
        what = f"it references {', '.join(names)}" if names else _strip_ansi(str(e)).strip().splitlines()[-1]
        raise UnsafeCheckpointError(
            f"{path}: not loadable with torch.load(weights_only=True): {what}; general unpickling can run "
            f"arbitrary code. {OPT_IN_HINT}",
            keys=names,
        ) from None


def _load_pickle(path: str, f, allow_unsafe_pickle: bool) -> Any:
    try:
        return RestrictedUnpickler(f, filename=path, encoding="latin1").load()
    except UnsafeCheckpointError:
        if not allow_unsafe_pickle:
            raise
        logger.warning("%s holds objects other than arrays / numbers / strings / containers; unpickling "
                       "it fully because allow_unsafe_pickle is set: only do this for files you trust", path)
        f.seek(0)
        return pickle.load(f, encoding="latin1")


def load_checkpoint_file(path: str, allow_unsafe_pickle: bool = False) -> Any:
    """Read a checkpoint file (a local path, or anything Detectron2's ``PathManager`` opens) on
    the CPU without executing code from it (see the module docstring).

    ``.pkl`` files that are plain pickles go through ``RestrictedUnpickler`` (numpy arrays stay
    numpy arrays); everything else, and ``.pkl`` files that are really ``torch.save`` zip
    archives, through ``torch.load(weights_only=True)``.

    Raises:
        UnsafeCheckpointError: the file references a Python global outside the allow-list and
            ``allow_unsafe_pickle`` is False; the message names the file and the globals.
    """
    from detectron2.utils.file_io import PathManager

    with PathManager.open(path, "rb") as f:
        if path.endswith(".pkl") and not _is_zip(f):
            return _load_pickle(path, f, allow_unsafe_pickle)
        return _load_torch(path, f, allow_unsafe_pickle)
