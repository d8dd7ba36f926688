"""Start-of-run checks of the datasets against each other and against the model.

``train_net.py`` calls :func:`check_datasets_for_model` once, after building the model and before
the first iteration, so that what would otherwise fail late or silently is said at start:

- a missing, unreadable or empty image file of the training or test set (found only at the
  evaluation after the whole training run otherwise): error listing how many and the first few;
- a test image that is not a readable image, is truncated, or has another size than its dataset
  dict says (Detectron2's ``SizeMismatchError`` at evaluation otherwise): error listing them
  (:func:`check_image_headers`: header and file end only, ~0.1 ms per image; the config's
  ``train.verify_test_images=False`` skips it for very large test sets);
- a class count of the data that differs from the model's (labels >= ``num_classes`` crash deep in
  the denoising module; fewer classes make ``COCOEvaluator`` fail on the first prediction of an
  unknown class): error naming the dataset, its class count and the model's;
- invalid boxes in a dataset that was not registered through ``codetr.data.register_coco_json``
  (which removes them from both training and evaluation): warning with their count;
- images with more ground-truth boxes than the model can match (queries) or output (detections
  per image), or than COCO AP counts (100 detections per image): warning with the numbers.

The model's class count and output limits are found by duck typing over the meta-architectures
of codetr (DINO, CoDETR, TOOD) and Detectron2 (RetinaNet, GeneralizedRCNN): see
:func:`model_num_classes` and :func:`model_output_limits`.
"""
from __future__ import annotations

import logging
import os
from typing import Dict, List, Optional, Sequence

from detectron2.config import instantiate
from detectron2.data import MetadataCatalog
from PIL import Image

from .coco_json import box_is_valid
from .mapper_utils import read_image_rgb

__all__ = [
    "COCO_MAX_DETS",
    "check_class_count",
    "check_datasets_for_model",
    "check_image_files",
    "check_image_headers",
    "check_invalid_boxes",
    "check_objects_per_image",
    "model_num_classes",
    "model_output_limits",
]

logger = logging.getLogger(__name__)

COCO_MAX_DETS = 100  # COCOeval's largest maxDets: AP counts the 100 best detections of an image


def _attr(obj, path: str):
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _unwrap(model):
    return getattr(model, "module", model)


def model_num_classes(model) -> Optional[int]:
    """The number of classes the model predicts (``None`` if it cannot be found): codetr's
    detectors and Detectron2's RetinaNet say it (``num_classes``); GeneralizedRCNN's is
    ``roi_heads.num_classes``. Also reads a model config node (``cfg.model``) that sets it."""
    model = _unwrap(model)
    for path in ("num_classes", "roi_heads.num_classes"):
        value = _attr(model, path)
        if isinstance(value, int):
            return value
    return None


def model_output_limits(model) -> Dict[str, Optional[int]]:
    """How many boxes per image the model can match in training and output at inference.

    Returns:
        ``{"queries": int or None, "detections": int or None}``: ``queries`` is the number of
        matching queries of a DETR-family model (at most that many ground-truth boxes of an image
        are matched; ``None`` for dense detectors), ``detections`` the most detections per image
        at inference. codetr's detectors say both (``num_queries``, ``detections_per_image``: for
        CoDETR those of the module it evaluates); Detectron2's RetinaNet has
        ``max_detections_per_image``, GeneralizedRCNN ``roi_heads.test_detections_per_img``.
    """
    model = _unwrap(model)
    queries = getattr(model, "num_queries", None)
    detections = None
    for path in ("detections_per_image", "max_detections_per_image", "roi_heads.test_detections_per_img"):
        value = _attr(model, path)
        if isinstance(value, int):
            detections = value
            break
    return {"queries": queries if isinstance(queries, int) else None, "detections": detections}


def check_image_files(dicts: Sequence[Dict], dataset: str, max_listed: int = 5) -> None:
    """Raise ``FileNotFoundError`` if any ``file_name`` is missing, not a readable file, or empty.

    One ``os.stat`` per image (no decoding).
    """
    bad = []
    for d in dicts:
        path = d["file_name"]
        try:
            st = os.stat(path)
            ok = os.path.isfile(path) and st.st_size > 0 and os.access(path, os.R_OK)
        except OSError:
            ok = False
        if not ok:
            bad.append(path)
    if bad:
        listed = "\n  ".join(bad[:max_listed]) + ("\n  ..." if len(bad) > max_listed else "")
        raise FileNotFoundError(
            f"dataset {dataset!r}: {len(bad)} of {len(dicts)} image files are missing, unreadable or empty "
            f"(checked before training, so that evaluation does not fail after it):\n  {listed}"
        )


# what a complete file ends with: JPEG's end-of-image marker (searched in the last KiB: some
# writers append padding), PNG's IEND chunk
_JPEG_EOI, _PNG_IEND = b"\xff\xd9", b"\x00\x00\x00\x00IEND\xaeB`\x82"
_TAIL = 1024
_SWAPS_WH = (5, 6, 7, 8)  # EXIF orientations that rotate by 90 degrees (ImageOps.exif_transpose)


def _looks_complete(path: str, image_format: Optional[str]) -> bool:
    if image_format not in ("JPEG", "MPO", "PNG"):
        return True  # other formats: the header only
    with open(path, "rb") as f:
        f.seek(max(os.fstat(f.fileno()).st_size - _TAIL, 0))
        tail = f.read()
    return _JPEG_EOI in tail if image_format != "PNG" else tail.endswith(_PNG_IEND)


def _header_problem(d: Dict) -> Optional[str]:
    """Why the mapper would fail on the image of dict ``d`` (None: it will not). Cheap checks
    first (PIL's header: format and size, EXIF orientation; the file's end); an image they find
    suspect is then read as the mappers read it (``read_image_rgb``) and judged by that."""
    path = d["file_name"]
    try:
        with Image.open(path) as image:
            image_format, (w, h), exif = image.format, image.size, image.info.get("exif")
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        return f"not a readable image ({e})"
    if exif:
        try:
            parsed = Image.Exif()
            parsed.load(exif)
            if parsed.get(0x0112, 1) in _SWAPS_WH:
                w, h = h, w
        except Exception:  # noqa: BLE001 - a broken EXIF block: let the full read decide
            w = h = None
    expected = (d.get("width"), d.get("height"))
    size_known = None not in expected
    if _looks_complete(path, image_format) and (not size_known or (w, h) == expected):
        return None
    try:
        rgb = read_image_rgb(path)
    except OSError as e:
        return str(e.__cause__ or e)
    if size_known and (rgb.shape[1], rgb.shape[0]) != expected:
        return (f"the image is {rgb.shape[1]} x {rgb.shape[0]} (width x height, EXIF orientation applied) but the "
                f"dataset says {expected[0]} x {expected[1]}")
    return None


def check_image_headers(dicts: Sequence[Dict], dataset: str, max_listed: int = 5) -> None:
    """Raise ``OSError`` if any image of ``dicts`` is not a readable image, is truncated, or has
    another size than its ``width`` / ``height`` (the errors the test mapper would raise during the
    evaluation after training).

    Cheap: PIL parses each header (format, size, EXIF orientation) and the last KiB of JPEG and
    PNG files is searched for their end marker; only images failing that are decoded in full,
    so a JPEG with trailing bytes or a PNG with an EXIF rotation after its pixels is not
    refused. A truncated file of another format (BMP, TIFF, WebP, ...) is not detected.
    """
    bad = []
    for d in dicts:
        problem = _header_problem(d)
        if problem:
            bad.append(f"{d['file_name']}: {problem}")
    if bad:
        listed = "\n  ".join(bad[:max_listed]) + ("\n  ..." if len(bad) > max_listed else "")
        raise OSError(
            f"dataset {dataset!r}: {len(bad)} of {len(dicts)} images are corrupt, truncated or of another size than "
            "the dataset says (checked before training, so that evaluation does not fail after it; "
            f"train.verify_test_images=False skips this check):\n  {listed}"
        )


def check_class_count(dicts: Sequence[Dict], dataset: str, thing_classes: Optional[Sequence[str]], num_classes: Optional[int]) -> None:
    """Raise ``ValueError`` when the dataset's classes do not fit the model's ``num_classes``.

    The dataset's class count is ``len(thing_classes)`` (its metadata) when known; its labels
    (contiguous ``category_id`` of the dicts) must be < ``num_classes`` in any case.
    """
    if num_classes is None:
        return
    labels = [a["category_id"] for d in dicts for a in d.get("annotations", ())]
    max_label = max(labels) if labels else None
    count = len(thing_classes) if thing_classes is not None else None
    if count is not None and count != num_classes or max_label is not None and max_label >= num_classes:
        what = f"{count} classes" if count is not None else f"labels up to {max_label}"
        if thing_classes is not None:
            names = list(thing_classes)
            what += f" ({names[:10]}{' ...' if len(names) > 10 else ''})"
        raise ValueError(
            f"dataset {dataset!r} has {what} but the model has num_classes={num_classes}. "
            f"Set the model's class count to {count if count is not None else max_label + 1} "
            "(model.num_classes=... in codetr's configs) or use a dataset with the model's classes."
        )


def check_invalid_boxes(dicts: Sequence[Dict], dataset: str) -> int:
    """Warn about boxes the training mappers drop (``coco_json.box_is_valid``) that are still in
    the dicts; returns their count. Datasets registered by ``codetr.data.register_coco_json`` have
    none left (they are removed there from training and evaluation alike)."""
    bad = sum(
        1
        for d in dicts
        for a in d.get("annotations", ())
        if not box_is_valid(a.get("bbox"), d.get("width"), d.get("height")) and a.get("iscrowd", 0) == 0
    )
    if bad:
        logger.warning(
            "dataset %r: %d boxes are invalid (width or height <= 0, not finite, or outside the image): the training "
            "mappers drop them but the evaluation ground truth keeps them (no prediction can match them). "
            "Register the dataset with codetr.data.register_coco_json to remove them from both.",
            dataset,
            bad,
        )
    return bad


def check_objects_per_image(dicts: Sequence[Dict], dataset: str, limits: Dict[str, Optional[int]], train: bool) -> List[str]:
    """Warn when images have more ground-truth boxes than the model can match or output.

    Args:
        limits: :func:`model_output_limits`.
        train: a training set (compared with the queries) or a test set (compared with the
            detections per image and COCO AP's 100).

    Returns:
        the warning lines (empty when all images fit).
    """
    counts = [
        sum(1 for a in d.get("annotations", ()) if a.get("iscrowd", 0) == 0) for d in dicts
    ]
    if not counts:
        return []
    most = max(counts)
    checks = []
    if train and limits.get("queries"):
        checks.append((limits["queries"], "queries: in training at most that many boxes of an image are matched, the others get no query"))
    if not train:
        if limits.get("detections"):
            checks.append((limits["detections"], "detections per image at inference: recall and AP of such images are capped"))
        checks.append((COCO_MAX_DETS, "detections per image that COCO AP counts (maxDets)"))
    lines = []
    for limit, meaning in checks:
        over = sum(1 for c in counts if c > limit)
        if over:
            lines.append(
                f"dataset {dataset!r}: {over} of {len(counts)} images have more than {limit} ground-truth boxes "
                f"(at most {most} in one image); the limit is {limit} {meaning}"
            )
    for line in lines:
        logger.warning(line)
    return lines


def _dataset_label(node, role: str) -> str:
    names = node.get("names", None) if hasattr(node, "get") else None
    if names is None:
        return f"dataloader.{role}.dataset"
    return names if isinstance(names, str) else ",".join(names)


def _thing_classes(node) -> Optional[List[str]]:
    names = node.get("names", None) if hasattr(node, "get") else None
    if names is None:
        return None
    classes = None
    for name in [names] if isinstance(names, str) else list(names):
        found = MetadataCatalog.get(name).get("thing_classes", None)
        if found is None:
            return None
        classes = list(found) if classes is None else classes
    return classes


def check_datasets_for_model(dataloader_cfg, model, train: bool = True, loaded: Optional[Dict] = None,
                             verify_test_images: bool = True) -> None:
    """Run every check on ``dataloader.train`` (if ``train``) and ``dataloader.test`` (if any).

    Each dataset node (``L(get_detection_dataset_dicts)(names=...)`` or any callable returning
    Detectron2 dicts) is instantiated here to read its dicts, unless ``loaded`` holds the dataset
    already instantiated for that role (``{"train": dicts}``: train_net's training loader has read
    them, so the json is not parsed twice). ``verify_test_images``: also
    :func:`check_image_headers` on the test set (``train.verify_test_images``).
    """
    num_classes = model_num_classes(model)
    limits = model_output_limits(model)
    roles = (["train"] if train else []) + ["test"]
    for role in roles:
        loader = dataloader_cfg.get(role, None) if hasattr(dataloader_cfg, "get") else None
        node = loader.get("dataset", None) if loader is not None and hasattr(loader, "get") else None
        if node is None:
            continue
        dicts = loaded[role] if loaded is not None and loaded.get(role) is not None else instantiate(node)
        if not isinstance(dicts, list):  # a torch Dataset or other object: nothing to inspect
            continue
        label = _dataset_label(node, role)
        check_image_files(dicts, label)
        if role == "test" and verify_test_images:
            check_image_headers(dicts, label)
        check_class_count(dicts, label, _thing_classes(node), num_classes)
        check_invalid_boxes(dicts, label)
        check_objects_per_image(dicts, label, limits, train=(role == "train"))
        logger.info(
            "dataset %r (%s): %d images, %d boxes; model: num_classes=%s, queries=%s, detections per image=%s",
            label, role, len(dicts), sum(len(d.get("annotations", ())) for d in dicts), num_classes,
            limits["queries"], limits["detections"],
        )
