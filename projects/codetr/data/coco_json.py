"""Reading a COCO-format json and correcting what would otherwise be mis-scored silently.

Three properties of real exports (labelme, CVAT, hand-written converters) make pycocotools and
Detectron2 disagree with what the user expects, without any error:

- **Annotation id 0.** ``COCOeval.evaluateImg`` stores the id of the matched ground-truth box in
  the detection's match table and tests it for truth, so the box with ``id == 0`` never counts as
  found: a perfect prediction of it is a false positive and the box a miss (labelme's export
  starts at 0: perfect predictions score AP 94.9 instead of 100). Image id 0 and category id 0
  are harmless (they are only dictionary keys there), so they are kept.
- **A ``_background_`` category** (labelme's ``labels.txt`` convention, id 0) becomes a real,
  never-annotated class after Detectron2's contiguous mapping: the model gets K+1 classes and the
  user's ``num_classes`` disagrees with the data. Query-based detectors model background
  implicitly, so such a category is dropped when no annotation uses it, and refused when one does.
- **Invalid boxes.** A box whose width or height is <= 0 or not finite, or which lies entirely
  outside its image, is removed by the training mappers (clipped to the image, then dropped when
  a side is <= 1e-5 px: ``mapper_utils.transform_box_annotations``), but pycocotools keeps it as
  ground truth that no prediction can match: every model loses recall on it. Such boxes are
  removed from the evaluation ground truth as well, so training and evaluation see the same set
  of boxes (and a warning gives their count).

:func:`prepare_coco_json` applies these corrections and, when anything changed, writes the
corrected json to a cache folder (``$CODETR_CACHE/coco_json``, default ``~/.cache/codetr``);
``register_coco_json`` registers that file, so the training dicts and the evaluator's ground truth
come from the same corrected json. The user's file is never modified.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

__all__ = [
    "CocoJsonReport",
    "box_is_valid",
    "cache_dir",
    "prepare_coco_json",
    "read_coco_json",
    "sanitize_coco",
]

# bump when the corrections change, so that stale corrected files are not reused
_VERSION = 1
# the mappers drop a box whose clipped width or height is <= this (Detectron2's default)
BOX_THRESHOLD = 1e-5
_BACKGROUND_NAMES = ("background",)  # after stripping underscores, lower case: _background_, __background__


def cache_dir() -> str:
    """Where corrected jsons are written: ``$CODETR_CACHE/coco_json`` (default ``~/.cache/codetr``)."""
    base = os.environ.get("CODETR_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "codetr")
    return os.path.join(os.path.abspath(base), "coco_json")


def read_coco_json(json_file: str) -> dict:
    """Parse a COCO instances json; every error names the file.

    Raises:
        ValueError: the file is not valid json, or not a COCO instances dict (``images``,
            ``annotations`` and ``categories`` lists; every image with ``id`` and ``file_name``;
            every annotation with ``id``, ``image_id``, ``category_id`` and ``bbox``; every category
            with ``id`` and ``name``).
    """
    with open(json_file, "rb") as f:
        raw = f.read()
    return _parse(raw, json_file)


def _parse(raw: bytes, json_file: str) -> dict:
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"COCO json {json_file!r} is not valid json: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"COCO json {json_file!r}: expected a dict at the top level, got {type(data).__name__}")
    required = {"images": ("id", "file_name"), "annotations": ("id", "image_id", "category_id", "bbox"), "categories": ("id", "name")}
    for key, fields in required.items():
        items = data.get(key)
        if not isinstance(items, list):
            raise ValueError(
                f"COCO json {json_file!r}: expected a list under {key!r}, got "
                f"{'nothing' if items is None else type(items).__name__} (keys: {sorted(data)})"
            )
        for i, item in enumerate(items):
            missing = [k for k in fields if not isinstance(item, dict) or k not in item]
            if missing:
                raise ValueError(f"COCO json {json_file!r}: {key}[{i}] has no {missing}: {item!r}"[:500])
    return data


def box_is_valid(bbox, width: Optional[float] = None, height: Optional[float] = None) -> bool:
    """Whether the training mappers keep the COCO box ``[x, y, w, h]`` (absolute pixels).

    Same rule as ``transform_box_annotations`` with no augmentation: the box as xyxy, clipped to
    ``[0, width] x [0, height]`` (when the image size is known), must have both sides
    > ``BOX_THRESHOLD`` and finite coordinates.
    """
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        return False
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        return False
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        return False
    x0, y0, x1, y1 = max(x, 0.0), max(y, 0.0), max(x + w, 0.0), max(y + h, 0.0)
    if width is not None and height is not None:
        x0, x1 = min(x0, width), min(x1, width)
        y0, y1 = min(y0, height), min(y1, height)
    return x1 - x0 > BOX_THRESHOLD and y1 - y0 > BOX_THRESHOLD


@dataclass
class CocoJsonReport:
    """What :func:`sanitize_coco` changed in one json (all counts 0 / empty: nothing)."""

    json_file: str
    annotation_id_shift: int = 0  # added to every annotation id (so that the smallest is 1)
    dropped_categories: List[Dict] = field(default_factory=list)  # unused background categories
    invalid_boxes: int = 0  # annotations removed (see ``box_is_valid``)
    invalid_examples: List[Dict] = field(default_factory=list)  # the first few of them
    num_annotations: int = 0  # in the user's file

    @property
    def changed(self) -> bool:
        return bool(self.annotation_id_shift or self.dropped_categories or self.invalid_boxes)

    def messages(self) -> List[str]:
        """One line per correction, for the log."""
        out = []
        if self.annotation_id_shift:
            out.append(
                f"annotation ids start at {1 - self.annotation_id_shift}: shifted by +{self.annotation_id_shift} "
                "(pycocotools never matches a ground-truth box whose id is 0)"
            )
        for c in self.dropped_categories:
            out.append(
                f"category id {c['id']} {c['name']!r} has no annotations and names the background: dropped "
                "(the detectors model background implicitly; it is not one of the classes)"
            )
        if self.invalid_boxes:
            examples = ", ".join(
                f"id {e['id']} (image {e['image_id']}): {e['bbox']}" for e in self.invalid_examples
            )
            out.append(
                f"{self.invalid_boxes} of {self.num_annotations} boxes are invalid (width or height <= 0, "
                f"not finite, or outside the image): removed from training and from the evaluation "
                f"ground truth alike; e.g. {examples}"
            )
        return out


def _is_background(name) -> bool:
    return isinstance(name, str) and name.strip().strip("_").lower() in _BACKGROUND_NAMES


def sanitize_coco(data: dict, json_file: str = "<json>", max_examples: int = 3) -> Tuple[dict, CocoJsonReport]:
    """Correct annotation ids, background categories and invalid boxes (see the module docstring).

    Args:
        data: a parsed COCO instances dict (as :func:`read_coco_json` returns); not modified.
        json_file: its path, for messages.

    Returns:
        (the corrected dict, or ``data`` itself when nothing changed; the report)

    Raises:
        ValueError: an annotation uses a background-named category, or image ids repeat.
    """
    report = CocoJsonReport(json_file=json_file, num_annotations=len(data["annotations"]))
    image_ids = [img["id"] for img in data["images"]]
    if len(set(image_ids)) != len(image_ids):
        seen, dup = set(), []
        for i in image_ids:
            if i in seen:
                dup.append(i)
            seen.add(i)
        raise ValueError(f"COCO json {json_file!r}: image ids are not unique (repeated: {dup[:5]})")
    sizes = {img["id"]: (img.get("width"), img.get("height")) for img in data["images"]}

    used = {}
    for a in data["annotations"]:
        used[a["category_id"]] = used.get(a["category_id"], 0) + 1
    categories = []
    for c in data["categories"]:
        if _is_background(c["name"]):
            if used.get(c["id"]):
                raise ValueError(
                    f"COCO json {json_file!r}: category id {c['id']} {c['name']!r} names the background but "
                    f"{used[c['id']]} annotations use it; the detectors model background implicitly. "
                    "Remove those annotations, or rename the category if it is a real class."
                )
            report.dropped_categories.append({"id": c["id"], "name": c["name"]})
        else:
            categories.append(c)

    annotations = []
    for a in data["annotations"]:
        w, h = sizes.get(a["image_id"], (None, None))
        if box_is_valid(a["bbox"], w, h):
            annotations.append(a)
            continue
        report.invalid_boxes += 1
        if len(report.invalid_examples) < max_examples:
            report.invalid_examples.append({"id": a.get("id"), "image_id": a["image_id"], "bbox": a["bbox"]})

    ann_ids = [a["id"] for a in annotations if isinstance(a.get("id"), (int, float))]
    if ann_ids and min(ann_ids) <= 0:
        report.annotation_id_shift = int(1 - min(ann_ids))
        annotations = [dict(a, id=a["id"] + report.annotation_id_shift) for a in annotations]

    if not report.changed:
        return data, report
    fixed = dict(data, categories=categories, annotations=annotations)
    fixed["codetr_corrections"] = {"source": json_file, "version": _VERSION, "changes": report.messages()}
    return fixed, report


def _write_atomic(path: str, data: dict) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)  # concurrent writers (training ranks) write the same bytes
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def prepare_coco_json(json_file: str, out_dir: Optional[str] = None) -> Tuple[str, CocoJsonReport]:
    """Read ``json_file``, correct it (:func:`sanitize_coco`) and return the json to use.

    Returns:
        (``json_file`` itself when nothing needed correcting, else the path of the corrected copy
        in ``out_dir`` (default :func:`cache_dir`), named after the file and a hash of its bytes;
        the report). When the default cache folder cannot be written, a folder under the system's
        temporary directory is used instead.
    """
    with open(json_file, "rb") as f:
        raw = f.read()
    data, report = sanitize_coco(_parse(raw, json_file), json_file)
    if not report.changed:
        return json_file, report
    digest = hashlib.sha1(raw + f"codetr-coco-json-v{_VERSION}".encode()).hexdigest()[:16]
    stem = os.path.splitext(os.path.basename(json_file))[0]
    folders = [out_dir] if out_dir else [cache_dir(), os.path.join(tempfile.gettempdir(), f"codetr-{os.getuid()}", "coco_json")]
    for i, folder in enumerate(folders):
        path = os.path.join(folder, f"{stem}-{digest}.json")
        try:
            if not os.path.isfile(path):
                _write_atomic(path, data)
            return path, report
        except OSError:
            if i + 1 == len(folders):
                raise
    raise AssertionError("unreachable")
