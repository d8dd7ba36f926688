"""Converter framework: a registry of checkpoint sources, strict key mapping, safe loading.

A *source* is a function ``fn(state_dict, drop_training_weights=False) -> (converted, dropped)``:
``converted`` is a state dict in this project's key space, ``dropped`` the list of source keys
deliberately not carried over (each a ``DroppedKey`` with the reason). Every key of the input is
either mapped or dropped; anything else is an ``UnknownKeyError`` naming the key. Sources are
written with ``KeyMapper``, which enforces that contract.

``convert(source, state_dict, target=...)`` runs a source and, given the target model's state
dict (or a ``{key: shape}`` mapping), checks that the result has exactly the target's keys and
shapes (``MissingKeyError`` / ``UnknownKeyError`` / ``ShapeMismatchError`` otherwise).
``to_detectron2_checkpoint`` wraps the result as ``{"model": ..., "matching_heuristics": False}``,
which ``DetectionCheckpointer`` loads as is (no name-matching heuristics).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

__all__ = [
    "CheckpointConversionError",
    "UnknownKeyError",
    "MissingKeyError",
    "ShapeMismatchError",
    "PickleRefusedError",
    "SourceNotImplementedError",
    "DroppedKey",
    "Source",
    "Conversion",
    "KeyMapper",
    "register_source",
    "get_source",
    "list_sources",
    "convert",
    "verify_state_dict",
    "extract_state_dict",
    "to_detectron2_checkpoint",
    "iter_layer_indices",
]


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------
class CheckpointConversionError(ValueError):
    """Base class of conversion errors; ``keys`` lists the offending keys."""

    def __init__(self, message: str, keys: Sequence[str] = ()):
        super().__init__(message)
        self.keys = list(keys)


def _key_list(keys: Sequence[str], limit: int = 20) -> str:
    keys = sorted(keys)
    text = ", ".join(keys[:limit])
    return text + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


class UnknownKeyError(CheckpointConversionError):
    """A source key no rule maps or drops, or a converted key the target model does not have."""


class MissingKeyError(CheckpointConversionError):
    """A key the source format must have (or the target model needs) is absent."""


class ShapeMismatchError(CheckpointConversionError):
    """A tensor's shape differs from what the source format or the target model expects."""


class PickleRefusedError(CheckpointConversionError):
    """The file needs arbitrary unpickling (not ``weights_only``) and the user did not opt in."""


class SourceNotImplementedError(NotImplementedError):
    """The source is registered but its converter cannot exist yet."""


class DroppedKey(NamedTuple):
    key: str
    reason: str


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------
SourceFn = Callable[..., Tuple[Dict[str, Tensor], List[DroppedKey]]]


@dataclass(frozen=True)
class Source:
    """A registered checkpoint format.

    Attributes:
        name: the ``--source`` name.
        fn: ``fn(state_dict, drop_training_weights=False) -> (converted, dropped)``.
        description: one line: which releases this reads.
        configs: configs of this project the result loads into (strictly).
        config_overrides: command-line overrides the configs need to reproduce the source model
            exactly (e.g. a different position-embedding temperature).
        overrides_when_dropped: extra overrides for a checkpoint converted with
            ``drop_training_weights`` (e.g. ``model.denoising=null``).
        select_config: optional ``fn(converted_state_dict) -> config path`` picking the config
            that matches a converted checkpoint (e.g. by its number of feature levels); with one
            config and none given, that config.
        overrides_for: optional ``fn(converted_state_dict) -> overrides``, replacing the two
            static lists when the overrides depend on the result (e.g. on the config it selects).
    """

    name: str
    fn: SourceFn
    description: str
    configs: Tuple[str, ...] = ()
    config_overrides: Tuple[str, ...] = ()
    overrides_when_dropped: Tuple[str, ...] = ()
    select_config: Optional[Callable[[Mapping[str, Tensor]], str]] = None
    overrides_for: Optional[Callable[[Mapping[str, Tensor]], Sequence[str]]] = None


_SOURCES: Dict[str, Source] = {}


def register_source(
    name: str,
    description: str,
    configs: Sequence[str] = (),
    config_overrides: Sequence[str] = (),
    overrides_when_dropped: Sequence[str] = (),
    select_config: Optional[Callable[[Mapping[str, Tensor]], str]] = None,
    overrides_for: Optional[Callable[[Mapping[str, Tensor]], Sequence[str]]] = None,
):
    """Decorator registering ``fn`` as the converter of source ``name`` (see ``Source``)."""

    def deco(fn: SourceFn) -> SourceFn:
        if name in _SOURCES:
            raise ValueError(f"checkpoint source {name!r} is already registered")
        select = select_config
        if select is None and len(configs) == 1:
            only = configs[0]
            select = lambda state_dict: only  # noqa: E731
        _SOURCES[name] = Source(
            name, fn, description, tuple(configs), tuple(config_overrides), tuple(overrides_when_dropped),
            select, overrides_for,
        )
        return fn

    return deco


def get_source(name: str) -> Source:
    if name not in _SOURCES:
        raise KeyError(f"unknown checkpoint source {name!r}; available: {', '.join(sorted(_SOURCES))}")
    return _SOURCES[name]


def list_sources() -> List[str]:
    return sorted(_SOURCES)


# --------------------------------------------------------------------------------------------
# Key mapping
# --------------------------------------------------------------------------------------------
class KeyMapper:
    """Book-keeping for one conversion: every source key is consumed exactly once, by ``take``
    (mapped) or ``drop``; ``finish`` raises ``UnknownKeyError`` for the rest.

    Typical use::

        m = KeyMapper(state_dict, "detrex-dino")
        for key in m.match(r"backbone\\.(stem|res[2-5])\\..+"):
            m.put(key, m.take(key))
        m.drop_matching(r".*num_batches_tracked", "BatchNorm step counter, unused by FrozenBN")
        return m.finish()
    """

    def __init__(self, state_dict: Mapping[str, Tensor], source: str):
        self.source = source
        self.src: Dict[str, Tensor] = dict(state_dict)
        bad = [k for k, v in self.src.items() if not isinstance(v, Tensor)]
        if bad:
            raise CheckpointConversionError(
                f"{source}: state dict entries that are not tensors: {_key_list(bad)}", bad
            )
        self.out: Dict[str, Tensor] = {}
        self.consumed: Dict[str, str] = {}  # source key -> "mapped" | "dropped"
        self.dropped: List[DroppedKey] = []

    # ---- queries
    def has(self, key: str) -> bool:
        return key in self.src

    def keys(self) -> List[str]:
        return list(self.src)

    def remaining(self) -> List[str]:
        return [k for k in self.src if k not in self.consumed]

    def match(self, pattern: str) -> List[str]:
        """Unconsumed source keys that fully match the regular expression, in source order."""
        rx = re.compile(pattern)
        return [k for k in self.remaining() if rx.fullmatch(k)]

    def peek(self, key: str) -> Tensor:
        if key not in self.src:
            raise MissingKeyError(f"{self.source}: source key {key!r} is missing from the checkpoint", [key])
        return self.src[key]

    def shape(self, key: str) -> Tuple[int, ...]:
        return tuple(self.peek(key).shape)

    def check_shape(self, key: str, shape: Sequence[int], what: str = "") -> None:
        """``ShapeMismatchError`` naming ``key`` unless source ``key`` has ``shape``; ``what``
        (e.g. "Linear 2C -> 2C") is appended to the message."""
        if self.shape(key) != tuple(shape):
            raise ShapeMismatchError(
                f"{self.source}: {key!r} has shape {self.shape(key)}, expected {tuple(shape)}"
                + (f" ({what})" if what else ""),
                [key],
            )

    # ---- consuming
    def take(self, key: str, shape: Optional[Sequence[int]] = None) -> Tensor:
        """Consume source ``key`` (mapped) and return it; ``shape`` checks it."""
        value = self.peek(key)
        if key in self.consumed:
            raise CheckpointConversionError(f"{self.source}: source key {key!r} consumed twice (converter bug)", [key])
        if shape is not None:
            self.check_shape(key, shape)
        self.consumed[key] = "mapped"
        return value

    def put(self, key: str, value: Tensor) -> None:
        """Write target ``key``; writing a key twice is a converter bug."""
        if key in self.out:
            raise CheckpointConversionError(f"{self.source}: target key {key!r} written twice (converter bug)", [key])
        self.out[key] = value

    def move(self, src_key: str, dst_key: str, fn: Optional[Callable[[Tensor], Tensor]] = None) -> None:
        """``put(dst_key, fn(take(src_key)))``."""
        value = self.take(src_key)
        self.put(dst_key, fn(value) if fn is not None else value)

    def rename_all(self, pattern: str, repl: Union[str, Callable[[re.Match], str]]) -> int:
        """Move every unconsumed key fully matching ``pattern`` to ``rx.sub(repl, key)``; returns
        the number of keys moved."""
        rx = re.compile(pattern)
        keys = self.match(pattern)
        for k in keys:
            self.move(k, rx.sub(repl, k, count=1))
        return len(keys)

    def drop(self, key: str, reason: str) -> None:
        self.peek(key)
        if key in self.consumed:
            raise CheckpointConversionError(f"{self.source}: source key {key!r} consumed twice (converter bug)", [key])
        self.consumed[key] = "dropped"
        self.dropped.append(DroppedKey(key, reason))

    def drop_matching(self, pattern: str, reason: str) -> int:
        keys = self.match(pattern)
        for k in keys:
            self.drop(k, reason)
        return len(keys)

    def drop_alias(self, key: str, of: str) -> None:
        """Drop ``key``, a second name of the same tensor as ``of`` (tied modules appear once per
        owner in a state dict). The values must be identical, else the alias assumption is wrong."""
        a, b = self.peek(key), self.peek(of)
        if a.shape != b.shape or not torch.equal(a, b):
            raise CheckpointConversionError(
                f"{self.source}: {key!r} was expected to be a tied copy of {of!r} but differs "
                f"(shapes {tuple(a.shape)} / {tuple(b.shape)})",
                [key, of],
            )
        self.drop(key, f"alias of {of}")

    def finish(self) -> Tuple[Dict[str, Tensor], List[DroppedKey]]:
        """Return (converted, dropped); every source key must have been mapped or dropped."""
        left = self.remaining()
        if left:
            raise UnknownKeyError(
                f"{self.source}: {len(left)} source key(s) not recognised (neither mapped nor dropped): "
                f"{_key_list(left)}",
                left,
            )
        return self.out, self.dropped


# --------------------------------------------------------------------------------------------
# Conversion entry points
# --------------------------------------------------------------------------------------------
@dataclass
class Conversion:
    """Result of ``convert``."""

    source: str
    state_dict: Dict[str, Tensor]
    dropped: List[DroppedKey]
    config_overrides: List[str] = field(default_factory=list)

    def checkpoint(self) -> Dict:
        return to_detectron2_checkpoint(self.state_dict, self.source, self.dropped, self.config_overrides)


ShapeMap = Mapping[str, Union[Tensor, torch.Size, Sequence[int]]]


def _as_shape(v) -> Tuple[int, ...]:
    return tuple(v.shape) if isinstance(v, Tensor) else tuple(v)


def verify_state_dict(state_dict: Mapping[str, Tensor], target: ShapeMap, what: str = "converted checkpoint") -> None:
    """Raise unless ``state_dict`` has exactly the keys of ``target`` (a model state dict or a
    ``{key: shape}`` mapping) with the same shapes."""
    missing = [k for k in target if k not in state_dict]
    if missing:
        raise MissingKeyError(
            f"{what}: missing {len(missing)} key(s) of the target model: {_key_list(missing)}", missing
        )
    unexpected = [k for k in state_dict if k not in target]
    if unexpected:
        raise UnknownKeyError(
            f"{what}: {len(unexpected)} key(s) the target model does not have: {_key_list(unexpected)}", unexpected
        )
    wrong = [k for k in target if tuple(state_dict[k].shape) != _as_shape(target[k])]
    if wrong:
        detail = "; ".join(f"{k}: {tuple(state_dict[k].shape)} vs model {_as_shape(target[k])}" for k in wrong[:10])
        raise ShapeMismatchError(f"{what}: {len(wrong)} shape mismatch(es): {detail}", wrong)


def convert(
    source: str,
    state_dict: Mapping[str, Tensor],
    drop_training_weights: bool = False,
    target: Optional[ShapeMap] = None,
) -> Conversion:
    """Convert ``state_dict`` from format ``source``; with ``target`` (the model's state dict or
    key shapes), also check the result matches it exactly."""
    src = get_source(source)
    converted, dropped = src.fn(state_dict, drop_training_weights=drop_training_weights)
    if src.overrides_for is not None:
        overrides = list(src.overrides_for(converted))
    else:
        overrides = list(src.config_overrides) + (list(src.overrides_when_dropped) if drop_training_weights else [])
    if target is not None:
        verify_state_dict(converted, target, f"{source} conversion")
    return Conversion(source, converted, dropped, overrides)


def to_detectron2_checkpoint(
    state_dict: Mapping[str, Tensor],
    source: str,
    dropped: Sequence[DroppedKey] = (),
    config_overrides: Sequence[str] = (),
) -> Dict:
    """A Detectron2-style checkpoint that ``DetectionCheckpointer`` loads without name-matching
    heuristics. Only tensors, strings and bools, so it loads with ``weights_only=True``."""
    return {
        "model": {k: v.contiguous() for k, v in state_dict.items()},
        "__author__": f"codetr.checkpoint ({source})",
        "matching_heuristics": False,
        "conversion": {
            "source": source,
            "dropped_keys": [d.key for d in dropped],
            "config_overrides": list(config_overrides),
        },
    }


_WRAPPER_KEYS = ("model", "state_dict", "model_state", "module")


def extract_state_dict(obj, strip_prefix: str = "module.") -> Dict[str, Tensor]:
    """The model state dict inside a loaded checkpoint: ``obj["model"]`` (Detectron2, detrex,
    DETR/DINO repos), ``obj["state_dict"]`` (mmcv / mmdet), or ``obj`` itself when all values are
    tensors. A ``strip_prefix`` (DistributedDataParallel's ``module.``) shared by *every* key is
    removed."""
    sd = None
    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, Tensor) for v in obj.values()):
            sd = obj
        else:
            for k in _WRAPPER_KEYS:
                if k in obj and isinstance(obj[k], Mapping):
                    sd = obj[k]
                    break
    if sd is None:
        top = sorted(obj)[:10] if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointConversionError(
            f"cannot find a state dict in the checkpoint (looked for a tensor dict or one of {_WRAPPER_KEYS}; "
            f"found {top})"
        )
    sd = dict(sd)
    if strip_prefix and sd and all(k.startswith(strip_prefix) for k in sd):
        sd = {k[len(strip_prefix):]: v for k, v in sd.items()}
    return sd


def iter_layer_indices(keys: Iterable[str], prefix: str) -> List[int]:
    """Sorted distinct integers ``i`` of keys ``prefix + f"{i}." + ...``."""
    rx = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for k in keys for m in [rx.match(k)] if m})
