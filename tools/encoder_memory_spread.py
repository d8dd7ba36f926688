#!/usr/bin/env python
"""How much a DETR-style encoder's memory varies across positions: a collapse diagnostic.

    PYTHONPATH=projects python tools/encoder_memory_spread.py \
        --config-file configs/conditional_detr/conditional_detr_r18_shapes.py \
        --weights output/conditional_detr_r18_shapes/model_final.pth --images 16

On the first ``--images`` test images, one at a time (no padding), for the encoder's input (the
neck output, flattened over levels) and its output (``EncoderOutput.memory``): the standard
deviation of each channel over the image's positions, averaged over channels and images, divided
by the root mean square of the values (so 0 = every position holds the same vector, about 1 =
positions as different as the values are large). A detector whose queries all predict the same box
(the "mean box" plateau) typically shows an encoder output far more uniform than its input.

Also how much the predictions depend on the image: the standard deviation over the images of each
query's predicted box (normalised cxcywh), averaged over queries and coordinates (0 = every image
gets the same boxes from the same queries).
"""
import argparse
import logging
import os
import sys

import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.utils.logger import setup_logger

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "projects"))

from codetr.engine import load_for_evaluation  # noqa: E402


def relative_spread(x: torch.Tensor) -> float:
    """x (S, C) of one image -> mean over channels of std over positions / rms of x."""
    return (x.std(0).mean() / x.pow(2).mean().sqrt().clamp_min(1e-12)).item()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config-file", required=True)
    ap.add_argument("--weights", default="", help="checkpoint (default: the config's random initialisation)")
    ap.add_argument("--images", type=int, default=16)
    args = ap.parse_args()
    if args.images < 1:
        ap.error(f"--images must be >= 1, got {args.images}")
    setup_logger(name="codetr")
    logging.getLogger("detectron2").setLevel(logging.WARNING)
    torch.manual_seed(0)
    cfg = LazyConfig.load(args.config_file)
    cfg.train.device, cfg.train.init_checkpoint = "cpu", args.weights
    model = load_for_evaluation(cfg, instantiate(cfg.model)).eval()
    model = getattr(model, "detector", model)  # Co-DETR wraps its detector
    inputs, outputs, boxes = [], [], []
    with torch.no_grad():
        for i, batch in enumerate(instantiate(cfg.dataloader.test)):
            if i >= args.images:
                break
            images = model.preprocess_image(batch[:1])
            features = model.neck(model.backbone(images.tensor), images.mask)
            inputs.append(relative_spread(torch.cat([f[0].flatten(1).t() for f in features])))
            enc = model.encode(images)
            outputs.append(relative_spread(enc.memory[0]))
            boxes.append(model.forward_queries(enc)["pred_boxes"][0])
    print(f"{args.config_file} {args.weights or '(random init)'}: {len(inputs)} images; relative spread over "
          f"positions: encoder input {sum(inputs) / len(inputs):.3f}, encoder output {sum(outputs) / len(outputs):.3f}; "
          f"box std over images {torch.stack(boxes).std(0).mean().item():.4f}")


if __name__ == "__main__":
    main()
