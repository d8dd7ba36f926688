#!/usr/bin/env python
"""Run a detector on an image or a folder of images; draw the detections and write COCO results.

    python tools/demo.py --config-file configs/dino/dino_r50_4scale_12ep.py --weights dino.pth \\
        --input images/ --output out/ [--confidence-threshold 0.3] [train.device=cpu ...]

For every readable image ``out/<name>.jpg`` shows the detections scoring at least
``--confidence-threshold`` (Detectron2's ``Visualizer``; class names from the metadata of the
config's ``dataloader.test`` dataset). ``out/coco_results.json`` holds *all* detections of the
model (the threshold only applies to the drawings) in the COCO results format
(``image_id``, ``category_id`` in the dataset's ids, ``bbox`` [x, y, w, h] in pixels, ``score``);
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


def dataset_metadata(dataset_names):
    """Metadata of the (first) test dataset, with ``thing_classes`` loaded if the registration
    provides them only on first use (COCO json datasets)."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    name = dataset_names if isinstance(dataset_names, str) else list(dataset_names)[0]
    meta = MetadataCatalog.get(name)
    if not hasattr(meta, "thing_classes") and name in DatasetCatalog.list():
        try:
            DatasetCatalog.get(name)  # sets thing_classes / thing_dataset_id_to_contiguous_id
        except Exception as e:  # noqa: BLE001 - names are cosmetic; go on without them
            print(f"warning: could not load dataset {name!r} for its class names ({e}); using class indices",
                  file=sys.stderr)
    return meta


def build_model(cfg):
    from detectron2.config import instantiate

    from codetr.engine import load_for_evaluation

    device = cfg.train.get("device", "cuda")
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"train.device={device!r} but CUDA is not available; add train.device=cpu")
    return load_for_evaluation(cfg, instantiate(cfg.model).to(device)).eval()


def to_coco(instances, image_id: int, contiguous_to_id: Dict[int, int]) -> List[Dict]:
    boxes = instances.pred_boxes.tensor.tolist()
    out = []
    for (x0, y0, x1, y1), score, cls in zip(boxes, instances.scores.tolist(), instances.pred_classes.tolist()):
        out.append({
            "image_id": image_id,
            "category_id": contiguous_to_id.get(cls, cls),
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
    meta = dataset_metadata(cfg.dataloader.test.dataset.names)
    contiguous_to_id = {v: k for k, v in getattr(meta, "thing_dataset_id_to_contiguous_id", {}).items()}
    try:
        model = build_model(cfg)
    except (RuntimeError, CheckpointConversionError) as e:  # no GPU; an unsafe or non-matching checkpoint
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

    names = getattr(meta, "thing_classes", [])
    categories = [{"id": contiguous_to_id.get(i, i), "name": n} for i, n in enumerate(names)]
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
