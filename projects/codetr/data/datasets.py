"""Dataset registration: any COCO-format json + image folder, and the bundled synthetic shapes.

Registered datasets live in Detectron2's ``DatasetCatalog`` / ``MetadataCatalog``; their dicts are
Detectron2's standard format (``bbox`` absolute ``XYWH_ABS`` -> the mappers turn them into xyxy
``Boxes``; ``category_id`` contiguous 0..K-1 after loading).

- :func:`register_coco_json` registers ``name`` -> (json_file, image_root). It reads the json at
  once (a corrupt file is an error naming it) and corrects what pycocotools would mis-score
  silently (annotation id 0, an unused ``_background_`` category, invalid boxes: see
  :mod:`codetr.data.coco_json`); the training dicts and the evaluator then read the same
  corrected copy, and what was corrected is logged once per dataset when its dicts are loaded.
- :func:`coco_json_dataset` registers and returns the dicts: the config-line form,
  ``dataloader.train.dataset = L(coco_json_dataset)(names="my_train", json_file=..., image_root=...)``.
- ``shapes_train`` / ``shapes_val`` are registered by :func:`register_shapes` (called on
  ``import codetr.data``); the images are generated on first use by :func:`ensure_shapes_dataset`
  under ``$CODETR_DATASETS/shapes`` (default ``<repo>/datasets/shapes``).
"""
from __future__ import annotations

import logging
import os
from typing import Dict, List, Optional, Sequence, Union

from detectron2.data import DatasetCatalog, MetadataCatalog, get_detection_dataset_dicts
from detectron2.data.datasets import load_coco_json

from .coco_json import CocoJsonReport, prepare_coco_json
from .shapes import SHAPE_CLASSES, generate_split

__all__ = [
    "register_coco_json",
    "coco_json_dataset",
    "shapes_root",
    "ensure_shapes_dataset",
    "register_shapes",
    "SHAPES_SPLITS",
]

# name -> (split, number of images); the seed is fixed so every user gets the same data
SHAPES_SPLITS = {"shapes_train": ("train", 2000), "shapes_val": ("val", 200)}
SHAPES_SEED = 0

logger = logging.getLogger(__name__)
_REPORTED = set()  # dataset names whose corrections were logged in this process


def _norm(path: Union[str, os.PathLike]) -> str:
    return os.path.abspath(os.path.expanduser(os.fspath(path)))


def register_coco_json(
    name: str,
    json_file: Union[str, os.PathLike],
    image_root: Union[str, os.PathLike],
    metadata: Optional[Dict] = None,
) -> str:
    """Register a COCO-format detection dataset under ``name`` (boxes only; masks are ignored).

    Like ``detectron2.data.datasets.register_coco_instances``, with checks and corrections: the
    json file and image folder must exist, and the json is parsed now (an invalid file is a
    ``ValueError`` naming it). What pycocotools would mis-score silently is corrected in a copy
    (:func:`codetr.data.coco_json.prepare_coco_json`: annotation ids shifted to start at 1, an
    unused ``_background_`` category dropped, invalid boxes removed); the metadata's ``json_file``
    (what ``COCOEvaluator`` reads) and the dataset dicts both come from that copy, the user's file
    is kept as ``source_json_file``, and the corrections are logged (warning) once per dataset
    when its dicts are first loaded. Image ids and category ids are never changed.
    Registering the same name again with the same files is a no-op; with other files it is an
    error (a name always means one dataset).

    Args:
        name: dataset name, e.g. "my_train".
        json_file: COCO instances json (``images``, ``annotations``, ``categories``).
        image_root: folder the json's ``file_name`` entries are relative to.
        metadata: extra metadata (e.g. ``{"thing_colors": ...}``); ``json_file``,
            ``source_json_file``, ``image_root``, ``evaluator_type="coco"`` and
            ``coco_json_corrections`` (list of messages) are set here.

    Returns:
        ``name``.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"dataset name must be a non-empty str, got {name!r}")
    json_file, image_root = _norm(json_file), _norm(image_root)
    if not os.path.isfile(json_file):
        raise FileNotFoundError(f"dataset {name!r}: COCO json file not found: {json_file!r}")
    if not os.path.isdir(image_root):
        raise FileNotFoundError(f"dataset {name!r}: image folder not found: {image_root!r}")
    meta = MetadataCatalog.get(name)
    old = (getattr(meta, "source_json_file", getattr(meta, "json_file", None)), getattr(meta, "image_root", None))
    if name in DatasetCatalog.list() or old != (None, None):
        old_norm = tuple(None if p is None else _norm(p) for p in old)
        if old_norm == (json_file, image_root):
            return name
        raise ValueError(
            f"dataset {name!r} is already registered with json_file={old[0]!r}, image_root={old[1]!r}; "
            f"cannot register it again with json_file={json_file!r}, image_root={image_root!r} "
            "(choose another name)"
        )
    eval_json, report = prepare_coco_json(json_file)
    DatasetCatalog.register(name, lambda: _load_coco(name, eval_json, image_root, report))
    meta.set(
        json_file=eval_json,
        source_json_file=json_file,
        image_root=image_root,
        evaluator_type="coco",
        coco_json_corrections=report.messages(),
        **dict(metadata or {}),
    )
    return name


def _load_coco(name: str, json_file: str, image_root: str, report: CocoJsonReport) -> List[Dict]:
    """The registered loader: Detectron2's ``load_coco_json`` of the (corrected) json, and the
    corrections logged once per dataset and process."""
    if report.changed and name not in _REPORTED:
        _REPORTED.add(name)
        for line in report.messages():
            logger.warning("dataset %r (%s): %s", name, report.json_file, line)
        logger.warning("dataset %r: training and evaluation read the corrected copy %s", name, json_file)
    return load_coco_json(json_file, image_root, name)


def coco_json_dataset(
    names: Union[str, Sequence[str]],
    json_file: Union[str, os.PathLike],
    image_root: Union[str, os.PathLike],
    filter_empty: bool = True,
) -> List[Dict]:
    """Register a COCO-format dataset and return its Detectron2 dataset dicts.

    A drop-in replacement for ``get_detection_dataset_dicts`` in a LazyConfig, so that a config
    or the command line can point at new data::

        dataloader.train.dataset = L(coco_json_dataset)(
            names="my_train", json_file="path/train.json", image_root="path/images")

    The argument is called ``names`` (one name) like ``get_detection_dataset_dicts``'s, so the
    evaluator's ``dataset_name="${..test.dataset.names}"`` keeps working.

    Args:
        names: the dataset name (or a one-element list of it).
        json_file, image_root: as for :func:`register_coco_json`.
        filter_empty: drop images without annotations (use False for test sets).
    """
    if not isinstance(names, str):
        names = list(names)
        if len(names) != 1:
            raise ValueError(f"coco_json_dataset registers one dataset; got names={names!r}")
        names = names[0]
    register_coco_json(names, json_file, image_root)
    return get_detection_dataset_dicts(names, filter_empty=filter_empty)


# --------------------------------------------------------------------------------------------
# the synthetic shapes dataset
# --------------------------------------------------------------------------------------------
def shapes_root() -> str:
    """Where the shapes dataset lives: ``$CODETR_DATASETS/shapes``, else ``<repo>/datasets/shapes``
    (``./datasets/shapes`` when the package is not inside a checkout)."""
    base = os.environ.get("CODETR_DATASETS")
    if not base:
        repo = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, os.pardir))
        base = os.path.join(repo, "datasets")
        if not os.path.isdir(base):
            base = os.path.join(os.getcwd(), "datasets")
    return os.path.join(_norm(base), "shapes")


def _shapes_paths(root: str, split: str) -> Dict[str, str]:
    d = os.path.join(root, f"shapes_{split}")
    return {"json_file": os.path.join(d, "annotations.json"), "image_root": os.path.join(d, "images")}


def ensure_shapes_dataset(names: Sequence[str] = tuple(SHAPES_SPLITS), root: Optional[str] = None) -> Dict[str, Dict]:
    """Generate the shapes splits ``names`` if they are missing, incomplete or stale.

    Cheap when the data is there (reads each json's header). The engine can call this in the
    main process before building loaders/evaluators (``COCOEvaluator`` opens ``json_file``
    when it is built); the registered dataset functions also call it.

    Returns:
        ``{name: {"json_file": ..., "image_root": ...}}``.
    """
    root = shapes_root() if root is None else _norm(root)
    out = {}
    for name in names:
        if name not in SHAPES_SPLITS:
            raise KeyError(f"unknown shapes dataset {name!r}; expected one of {sorted(SHAPES_SPLITS)}")
        split, num = SHAPES_SPLITS[name]
        generate_split(root, split, num, seed=SHAPES_SEED)
        out[name] = _shapes_paths(root, split)
    return out


def _load_shapes(name: str, root: str) -> List[Dict]:
    paths = ensure_shapes_dataset([name], root=root)[name]
    return load_coco_json(paths["json_file"], paths["image_root"], name)


def register_shapes(root: Optional[str] = None) -> None:
    """Register ``shapes_train`` / ``shapes_val`` (idempotent; nothing is generated here)."""
    root = shapes_root() if root is None else _norm(root)
    for name, (split, _) in SHAPES_SPLITS.items():
        if name in DatasetCatalog.list():
            continue
        paths = _shapes_paths(root, split)
        DatasetCatalog.register(name, lambda name=name: _load_shapes(name, root))
        MetadataCatalog.get(name).set(
            json_file=paths["json_file"],
            image_root=paths["image_root"],
            evaluator_type="coco",
            thing_classes=list(SHAPE_CLASSES),
            # as load_coco_json sets it (ids 1..8), known without generating the images (tools/demo.py)
            thing_dataset_id_to_contiguous_id={i + 1: i for i in range(len(SHAPE_CLASSES))},
        )
