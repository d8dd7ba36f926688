#!/usr/bin/env python
"""COCO AP and the fixed-point residual of a weight-tied refiner (DEQDet, RNNDet) as a function of
the number of inference steps, from one pass over the test set.

    PYTHONPATH=projects python tools/refinement_steps_ap.py \
        --config-file configs/deqdet/deqdet_r18_shapes.py --weights output/deqdet_r18_shapes/model_final.pth \
        --max-steps 50 --output deqdet_steps.json

Per test batch: the backbone and neck once, then ``g`` and ``f`` applied ``--max-steps`` times
(the decoder's step with layer 0, then layer 1, without perturbation: exactly what
inference with ``model.decoder.loop.inference_steps=k`` computes for every k up to the maximum);
the prediction after each step goes through the model's own ``inference`` / ``postprocess`` into
one ``COCOEvaluator`` per step count. The residual after step t (t >= 1) compares the state
z_t = (content, xyzr) with z_{t-1}: mean over queries of ||c_t - c_{t-1}|| / ||c_{t-1}|| (content),
of the centre shift in pixels, and of |dz| + |dr| (log2 scale and aspect).
Prints a table (markdown) and writes the numbers as json.
"""
import argparse
import json
import logging
import os
import sys

import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.evaluation import COCOEvaluator
from detectron2.utils.logger import setup_logger

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "projects"))

from codetr.engine import load_for_evaluation  # noqa: E402
from codetr.modeling.meta_arch import DEQDet, RNNDet  # noqa: E402


def check_weight_tied(model, config_file):
    """Exit with a message naming the config unless ``model`` is a DEQDet or RNNDet (whose
    constructors already check for layers (g, f) in a fixed-point / unrolled loop)."""
    if not isinstance(model, (DEQDet, RNNDet)):
        loop = getattr(getattr(model, "decoder", None), "loop", None)
        raise SystemExit(f"{config_file}: expected a weight-tied refiner (DEQDet or RNNDet: layers g, f in a "
                         f"fixed-point or unrolled loop), got {type(model).__name__} with loop {type(loop).__name__}")


def trajectory(model, inputs, max_steps):
    """Predictions after 0..max_steps applications of f (0 = g alone) and the residual sums."""
    images = model.preprocess_image(inputs)
    norm_sizes = model.normalization_sizes(images, inputs)
    enc = model.encode(images)
    group, _ = model.matching_queries(enc)
    step, state = model.decoder.stepper([group], enc)
    detections, residuals = [], []
    for k in range(max_steps + 1):
        new, pred = step(0 if k == 0 else 1, state)
        if k > 0:
            c_rel = (new.content - state.content).norm(dim=-1) / state.content.norm(dim=-1).clamp_min(1e-12)
            d = new.reference - state.reference
            residuals.append(torch.stack([c_rel.flatten(), d[..., :2].norm(dim=-1).flatten(),
                                          d[..., 2:].abs().sum(-1).flatten()]).sum(1))
        state = new
        results = model.inference(pred["logits"], pred["boxes"], images.image_sizes, norm_sizes)
        detections.append(model.postprocess(results, inputs))
    num_queries = group.content.shape[0] * group.content.shape[1]
    return detections, torch.stack(residuals), num_queries


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config-file", required=True)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--max-steps", type=int, default=50)
    ap.add_argument("--output", required=True, help="json file for the numbers")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if args.max_steps < 1:
        ap.error(f"--max-steps must be >= 1, got {args.max_steps}")
    setup_logger(name="codetr")
    logging.getLogger("detectron2").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)

    cfg = LazyConfig.load(args.config_file)
    cfg.train.device, cfg.train.init_checkpoint = "cpu", args.weights
    model = instantiate(cfg.model)
    check_weight_tied(model, args.config_file)
    model = load_for_evaluation(cfg, model).eval()
    loader = instantiate(cfg.dataloader.test)
    dataset = cfg.dataloader.evaluator.dataset_name
    evaluators = [COCOEvaluator(dataset, output_dir=None) for _ in range(args.max_steps + 1)]
    for e in evaluators:
        e.reset()
    res_sum, count = torch.zeros(args.max_steps, 3, dtype=torch.float64), 0
    with torch.no_grad():
        for inputs in loader:
            detections, residuals, n = trajectory(model, inputs, args.max_steps)
            for e, out in zip(evaluators, detections):
                e.process(inputs, out)
            res_sum += residuals.double()
            count += n
    rows = []
    for k, e in enumerate(evaluators):
        bbox = e.evaluate()["bbox"]
        row = {"steps": k, "AP": bbox["AP"], "AP50": bbox["AP50"], "AP75": bbox["AP75"]}
        if k > 0:
            row.update(zip(("content_rel", "centre_px", "log2_scale_aspect"), (res_sum[k - 1] / count).tolist()))
        rows.append(row)
    with open(args.output, "w") as f:
        json.dump({"config": args.config_file, "weights": args.weights, "rows": rows}, f, indent=1)
    print("| f steps | AP | AP50 | AP75 | residual: content (relative) | centre (px) | |dz|+|dr| (log2) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        res = " | ".join(f"{r[k]:.2e}" for k in ("content_rel", "centre_px", "log2_scale_aspect")) if r["steps"] else "- | - | -"
        print(f"| {r['steps']} | {r['AP']:.1f} | {r['AP50']:.1f} | {r['AP75']:.1f} | {res} |")


if __name__ == "__main__":
    main()
