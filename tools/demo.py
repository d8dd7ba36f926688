#!/usr/bin/env python
"""Run a detector on an image or a folder of images; draw the detections and write COCO results.

    python tools/demo.py --config-file configs/dino/dino_r50_4scale_12ep.py --weights dino.pth \\
        --input images/ --output out/ [--confidence-threshold 0.3] [train.device=cpu ...]

For every readable image ``out/<name>.jpg`` shows the detections scoring at least
``--confidence-threshold`` (Detectron2's ``Visualizer``; class names from the metadata of the
config's ``dataloader.test`` dataset). ``out/coco_results.json`` holds *all* detections of the
model (the threshold only applies to the drawings) in the COCO results format
(``image_id``, ``category_id`` in the dataset's ids, ``bbox`` [x, y, w, h] in pixels, ``score``);
the ids are those of the config's test dataset (a ``codetr.data.coco_json_dataset`` node is
registered from its json; a registered dataset is loaded if its metadata lacks them), which must
have the model's class count: when they cannot be found the demo refuses, unless
``--class-index-ids`` asks for the class indices 0..K-1 instead;
``out/coco_images.json`` lists the images (``id``, ``file_name``, ``height``, ``width``), the
categories, and the files that could not be read. Images are preprocessed by the config's test
mapper (the resize used for evaluation) and predicted one at a time on ``train.device``.

``--weights`` is read without executing code from it and must fit the model (see
``codetr.checkpoint.Checkpointer``); ``--allow-unsafe-pickle`` and
``train.init_checkpoint_partial=True`` opt out of these checks.

Unreadable images are reported (and listed in ``coco_images.json``) while the others are still
processed; the exit status is 0 when every image was processed, 1 when some failed, 2 when none
could be processed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Dict, List, Optional

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "projects"))

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config-file", required=True, help="a LazyConfig python file")
    p.add_argument("--weights", required=True, help="checkpoint (e.g. from tools/convert_checkpoint.py or training)")
    p.add_argument("--input", required=True, help="an image file or a folder of images (not recursive)")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--confidence-threshold", type=float, default=0.3, help="minimum score of drawn detections")
    p.add_argument("--allow-unsafe-pickle", action="store_true",
                   help="allow full unpickling of --weights (can execute code: only for files you trust); "
                        "same as train.allow_unsafe_pickle=True")
    p.add_argument("--class-index-ids", action="store_true",
                   help="write the class indices 0..K-1 as category_id (when the config's test dataset, whose ids "
                        "are used otherwise, is not available)")
    p.add_argument("opts", nargs="*", help="config overrides KEY=VALUE, e.g. train.device=cpu")
    return p


def list_inputs(path: str):
    """(image files, skipped non-image files) of a file or a folder (sorted, not recursive)."""
    if os.path.isfile(path):
        return [path], []
    if not os.path.isdir(path):
        raise FileNotFoundError(f"--input {path!r} is neither a file nor a folder")
    files = sorted(os.path.join(path, f) for f in os.listdir(path) if os.path.isfile(os.path.join(path, f)))
    images = [f for f in files if f.lower().endswith(IMAGE_EXTENSIONS)]
    return images, [f for f in files if f not in images]


class CategoryIdError(ValueError):
    """The category ids of the config's test dataset cannot be found (or do not fit the model)."""


def dataset_metadata(dataset_cfg):
    """The name and metadata of the config's (first) test dataset with its category ids
    (``thing_dataset_id_to_contiguous_id``): a ``coco_json_dataset`` node (``json_file``,
    ``image_root``) is registered here (the demo does not instantiate the dataset); a registered
    dataset whose metadata gets its ids only when its dicts are loaded (COCO json) is loaded.
    Raises ``CategoryIdError`` when the ids cannot be found."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from codetr.data import register_coco_json

    names = dataset_cfg.get("names", None)
    if names is None:
        raise CategoryIdError("dataloader.test.dataset has no 'names': the dataset's category ids are unknown")
    name = names if isinstance(names, str) else list(names)[0]
    registered = name in DatasetCatalog.list()
    if not registered and dataset_cfg.get("json_file", None) and dataset_cfg.get("image_root", None):
        try:
            register_coco_json(name, dataset_cfg.json_file, dataset_cfg.image_root)
        except (OSError, ValueError) as e:
            raise CategoryIdError(f"cannot register the test dataset {name!r} for its category ids: {e}") from e
        registered = True
    meta = MetadataCatalog.get(name)
    if not meta.get("thing_dataset_id_to_contiguous_id", None) and registered:
        try:
            DatasetCatalog.get(name)  # load_coco_json sets thing_classes / thing_dataset_id_to_contiguous_id
        except Exception as e:  # noqa: BLE001 - any loading failure: say which dataset and why
            raise CategoryIdError(f"cannot load the test dataset {name!r} for its category ids: {e}") from e
    if not meta.get("thing_dataset_id_to_contiguous_id", None):
        why = "has no category ids in its metadata" if registered else "is not registered"
        raise CategoryIdError(
            f"the config's test dataset {name!r} {why}, so the category ids of coco_results.json are unknown. "
            "Register it (codetr.data.register_coco_json), point dataloader.test.dataset at your json "
            "(codetr.data.coco_json_dataset, see datasets/README.md), or pass --class-index-ids to write the "
            "class indices 0..K-1 as category_id"
        )
    return name, meta


def category_ids(name: str, meta, num_classes: Optional[int]) -> Dict[int, int]:
    """class index -> the dataset's category id; ``CategoryIdError`` unless the dataset has
    ``num_classes`` categories (the model's; ``None``: not known, not checked)."""
    mapping = {v: k for k, v in meta.thing_dataset_id_to_contiguous_id.items()}
    if sorted(mapping) != list(range(len(mapping))) or num_classes is not None and len(mapping) != num_classes:
        raise CategoryIdError(
            f"the test dataset {name!r} has {len(mapping)} categories (ids {sorted(mapping.values())[:10]}) but "
            f"the model has num_classes={num_classes}: its class indices cannot be mapped to the dataset's ids. "
            "Use the config of the dataset the model was trained on"
        )
    return mapping


def build_model(cfg):
    from detectron2.config import instantiate

    from codetr.engine import load_for_evaluation

    device = cfg.train.get("device", "cuda")
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"train.device={device!r} but CUDA is not available; add train.device=cpu")
    return load_for_evaluation(cfg, instantiate(cfg.model).to(device)).eval()


def to_coco(instances, image_id: int, contiguous_to_id: Dict[int, int]) -> List[Dict]:
    """COCO result dicts of ``instances``; ``contiguous_to_id`` maps every class index."""
    boxes = instances.pred_boxes.tensor.tolist()
    out = []
    for (x0, y0, x1, y1), score, cls in zip(boxes, instances.scores.tolist(), instances.pred_classes.tolist()):
        out.append({
            "image_id": image_id,
            "category_id": contiguous_to_id[cls],
            "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
            "score": round(score, 5),
        })
    return out


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    from detectron2.config import LazyConfig, instantiate
    from PIL import Image
    from tqdm import tqdm

    from codetr.checkpoint import CheckpointConversionError
    from codetr.data.checks import model_num_classes
    from codetr.data.mapper_utils import read_image_rgb
    from codetr.engine.visualize import require_visualizer

    Visualizer = require_visualizer()
    if not os.path.isfile(args.weights):
        print(f"error: --weights {args.weights!r} is not a file", file=sys.stderr)
        return 2
    cfg = LazyConfig.apply_overrides(LazyConfig.load(args.config_file), args.opts)
    cfg.train.init_checkpoint = args.weights
    if args.allow_unsafe_pickle:
        cfg.train.allow_unsafe_pickle = True
    try:
        images, skipped = list_inputs(args.input)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not images:
        print(f"error: no image files in {args.input!r}", file=sys.stderr)
        return 2
    mapper = instantiate(cfg.dataloader.test.mapper)
    try:
        if args.class_index_ids:
            from detectron2.data import MetadataCatalog

            names = cfg.dataloader.test.dataset.get("names", None) or "__demo_no_dataset__"
            dataset, meta = None, MetadataCatalog.get(names if isinstance(names, str) else list(names)[0])
        else:
            dataset, meta = dataset_metadata(cfg.dataloader.test.dataset)
        model = build_model(cfg)
        num_classes = model_num_classes(model)
        if args.class_index_ids:
            if num_classes is None:
                raise CategoryIdError("--class-index-ids: the model's class count is unknown")
            contiguous_to_id = {i: i for i in range(num_classes)}
        else:
            contiguous_to_id = category_ids(dataset, meta, num_classes)
    except (RuntimeError, CheckpointConversionError, CategoryIdError) as e:
        # no GPU; an unsafe or non-matching checkpoint; the dataset's category ids unknown
        print(f"error: {e}", file=sys.stderr)
        return 2
    os.makedirs(args.output, exist_ok=True)

    results, image_infos, failed, used_names = [], [], [], set()
    bar = tqdm(images, desc="demo", unit="img", disable=len(images) == 1, file=sys.stderr)
    for image_id, path in enumerate(bar, start=1):
        try:
            inputs = mapper({"file_name": path, "image_id": image_id})
        except (OSError, ValueError) as e:
            failed.append({"file_name": path, "error": str(e)})
            tqdm.write(f"error: skipping unreadable image {path}: {e}", file=sys.stderr)
            continue
        with torch.no_grad():
            instances = model([inputs])[0]["instances"].to("cpu")
        results.extend(to_coco(instances, image_id, contiguous_to_id))
        image_infos.append({"id": image_id, "file_name": path, "height": inputs["height"], "width": inputs["width"]})
        image = read_image_rgb(path)  # predictions are in original-image coordinates
        shown = instances[instances.scores >= args.confidence_threshold]
        drawn = Visualizer(image, meta).draw_instance_predictions(shown).get_image()
        stem = os.path.splitext(os.path.basename(path))[0]
        name, k = stem, 1
        while name in used_names:
            k += 1
            name = f"{stem}_{k}"
        used_names.add(name)
        Image.fromarray(drawn).save(os.path.join(args.output, f"{name}.jpg"), quality=90)

    names = list(meta.get("thing_classes", None) or [])
    categories = [{"id": contiguous_to_id[i], "name": names[i] if i < len(names) else str(i)}
                  for i in sorted(contiguous_to_id)]
    with open(os.path.join(args.output, "coco_results.json"), "w") as f:
        json.dump(results, f)
    with open(os.path.join(args.output, "coco_images.json"), "w") as f:
        json.dump({"images": image_infos, "categories": categories, "failed": failed}, f, indent=1)
    print(f"{len(image_infos)} image(s) processed, {len(results)} detections -> {args.output}")
    if skipped:
        print(f"{len(skipped)} non-image file(s) ignored (extensions other than {', '.join(IMAGE_EXTENSIONS)})")
    if failed:
        unread = ", ".join(f["file_name"] for f in failed)
        print(f"{len(failed)} image(s) could not be read: {unread}", file=sys.stderr)
        return 1 if image_infos else 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
