"""Measure, on random-weight models, the effect of each departure from the official code (or from
detrex) that MODEL_ZOO.md "Departures from the official code" lists, and of the post-processing
switches (``codetr.modeling.postprocess``).

    PYTHONPATH=projects OMP_NUM_THREADS=1 python tools/measure_departures.py [--images 4] [--seed 0]

Every model is a shipped config's (``configs/*/..._r18_shapes.py``: the small widths, random
initialisation, no weights needed) on rendered ``shapes_val`` images; the numbers say how much the
outputs move, not what it does to a trained model's AP (no COCO evaluation runs here). CPU only,
about a minute.
"""
from __future__ import annotations

import argparse
import dataclasses
import os

import numpy as np
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from codetr.data.shapes import render_image
from codetr.modeling.queries.denoising import flip_labels

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build(config: str, seed: int):
    """The config's model with random weights (seeded), in eval mode."""
    cfg = LazyConfig.load(os.path.join(ROOT, "configs", config))
    cfg.train.max_iter = 1000  # TOOD's ATSS -> TAL switch interpolates it
    torch.manual_seed(seed)
    return instantiate(cfg.model).eval()


def spread_box_heads(model, gain: float = 1.0):
    """Every box-regression layer (``nn.Linear`` with 4 outputs) drawn from N(0, gain^2 / fan_in)
    instead of its zero initialisation, so that the random model's boxes move away from their
    references and cross the image border as a trained model's do."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Linear) and m.out_features == 4:
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * gain / m.in_features ** 0.5)
    return model


def shapes_inputs(n, with_targets: bool = False):
    """Rendered shapes_val images (``n`` of them, or the listed indices) as Detectron2 inputs;
    "height" / "width" 1.5x the network input."""
    inputs = []
    for i in (range(n) if isinstance(n, int) else n):
        image, objects = render_image(0, "val", i)
        h, w = image.shape[:2]
        x = {"image": torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).contiguous(),
             "height": int(h * 1.5), "width": int(w * 1.5)}
        if with_targets:
            inst = Instances((h, w))
            xywh = torch.tensor([o["bbox"] for o in objects], dtype=torch.float32).reshape(-1, 4)
            inst.gt_boxes = Boxes(torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1))
            inst.gt_classes = torch.tensor([o["category_id"] - 1 for o in objects], dtype=torch.int64)
            x["instances"] = inst
        inputs.append(x)
    return inputs


@torch.no_grad()
def detect(model, inputs):
    return [o["instances"] for o in model(inputs)]


def outside(inst: Instances) -> int:
    """Detections whose box is not inside the image (a coordinate beyond the border)."""
    b = inst.pred_boxes.tensor
    h, w = inst.image_size
    return int(((b[:, 0] < 0) | (b[:, 1] < 0) | (b[:, 2] > w) | (b[:, 3] > h)).sum())


def compare_postprocessing(name, config, official, detectron2, seed, n, gain=1.0, **settings):
    """Official switches vs Detectron2's on the same random-weight model (box heads spread by
    ``gain``) and images; ``settings``: other attributes to set first."""
    model = spread_box_heads(build(config, seed), gain)
    for key, value in settings.items():
        _set(model, key, value)
    inputs = shapes_inputs(n)
    for key in official:  # neither clipping nor dropping: how many predictions cross the border
        _set(model, key, False)
    raw = detect(model, inputs)
    for key, value in official.items():
        _set(model, key, value)
    a = detect(model, inputs)
    for key, value in detectron2.items():
        _set(model, key, value)
    b = detect(model, inputs)
    rows = []
    for r0, ra, rb in zip(raw, a, b):
        k = min(len(ra), len(rb))
        labels = int((ra.pred_classes[:k] != rb.pred_classes[:k]).sum())
        boxes = float((ra.pred_boxes.tensor[:k] - rb.pred_boxes.tensor[:k]).abs().max()) if k else 0.0
        scores = float((ra.scores[:k] - rb.scores[:k]).abs().max()) if k else 0.0
        rows.append((len(ra), len(rb), outside(r0), labels, boxes, scores))
    extra = dict(settings, **({"box-head gain": gain} if gain != 1.0 else {}))
    print(f"\n{name}: official {official} vs Detectron2 {detectron2}" + (f", with {extra}" if extra else ""))
    print("  per image: detections official / Detectron2, predictions beyond the border (unclipped), labels "
          "differing at the same rank, max |box diff| px and |score diff| at the same rank")
    for i, r in enumerate(rows):
        print(f"  image {i}: {r[0]} / {r[1]}, {r[2]} beyond, {r[3]} labels, {r[4]:.2f} px, {r[5]:.3g}")


def _set(model, key, value):
    owner = model
    *path, last = key.split(".")
    for p in path:
        owner = getattr(owner, p)
    setattr(owner, last, value)


def padded_denoising_slots(seed: int):
    """Ours: padded DN slots hidden as attention keys and out of every loss. detrex: visible and
    trained as "no object" (emulated by marking every slot valid: the criterion then gives a valid
    non-positive slot the background classification loss, the attention mask no longer hides it)."""
    model = build("dino/dino_r18_shapes.py", seed).train()
    batch = shapes_inputs(4, with_targets=True)
    print("\npadded denoising slots (DINO r18 shapes, 4 images, GT per image "
          f"{[len(x['instances']) for x in batch]})")
    generator = model.denoising
    make = generator.forward
    results = {}
    for mode in ("ours", "detrex"):
        def patched(targets, _mode=mode):
            fixed = make(targets)
            if _mode == "detrex":
                fixed = dataclasses.replace(fixed, valid=torch.ones_like(fixed.valid))
            return fixed
        generator.forward = patched
        torch.manual_seed(seed + 1)  # the same noise in both runs
        with EventStorage(0):
            results[mode] = {k: float(v) for k, v in model(batch).items()}
    del generator.forward
    dn = [k for k in results["ours"] if "_dn" in k]
    matching = [k for k in results["ours"] if "_dn" not in k]
    worst_match = max(abs(results["ours"][k] - results["detrex"][k]) for k in matching)
    print(f"  matching / encoder losses: max |difference| {worst_match:.3g} (matching queries never see DN queries)")
    for k in sorted(dn):
        if k.endswith(("_dn", "_dn_0")):
            o, d = results["ours"][k], results["detrex"][k]
            print(f"  {k}: ours {o:.5f}, detrex-style {d:.5f} ({(d - o) / o * 100:+.3g}%)")


def padding_masks(seed: int):
    """Ours: padding masks everywhere (encoder, decoder cross-attention, position embeddings),
    batched inference = single-image inference. detrex: an all-zero mask at inference (DINO,
    Conditional / DAB-DETR), and no mask in the conditional / DAB decoder's cross-attention in
    training either."""
    print("\npadding masks (random weights, box heads spread; shapes_val image 3 (203 x 234) alone and batched "
          "with image 1 (334 x 257), i.e. padded in both directions)")
    inputs = shapes_inputs([1, 3])
    for name, config in (("DINO", "dino/dino_r18_shapes.py"), ("Conditional DETR", "conditional_detr/"
                                                                "conditional_detr_r18_shapes.py")):
        model = spread_box_heads(build(config, seed))
        with torch.no_grad():
            single = detect(model, inputs[1:])[0]
            batched = detect(model, inputs)[1]
            preprocess = model.preprocess_image

            def no_mask(batched_inputs, _pre=preprocess):
                images = _pre(batched_inputs)
                images.mask = torch.zeros_like(images.mask)
                return images

            model.preprocess_image = no_mask
            unmasked = detect(model, inputs)[1]
            model.preprocess_image = preprocess
        print(f"  {name}: batched vs alone, max |difference| of the sorted top-{len(single)} scores: ours "
              f"{_diff(batched, single):.2g}, without masks (detrex) {_diff(unmasked, single):.3g}")

    model = spread_box_heads(build("conditional_detr/conditional_detr_r18_shapes.py", seed)).train()
    batch = shapes_inputs([1, 3], with_targets=True)
    images = model.preprocess_image(batch)
    targets = model.prepare_targets(batch, model.normalization_sizes(images, batch))
    enc = model.encode(images)
    losses = {}
    for mode, e in (("ours", enc), ("detrex", dataclasses.replace(enc, memory_mask=torch.zeros_like(enc.memory_mask)))):
        with EventStorage(0), torch.no_grad():
            losses[mode] = {k: float(v) for k, v in model.criterion(model.forward_queries(e), targets, None).items()}
    for k in ("loss_class", "loss_bbox", "loss_giou"):
        o, d = losses["ours"][k], losses["detrex"][k]
        print(f"  Conditional DETR training, decoder cross-attention unmasked: {k} {o:.5f} -> {d:.5f} "
              f"({(d - o) / o * 100:+.3g}%)")


def _diff(a: Instances, b: Instances) -> float:
    """Max |difference| of the (descending) score lists: independent of near-tie reorderings."""
    return float((a.scores - b.scores).abs().max())


def frozen_stages():
    """ResNet-50 trainable parameters with the official DETR code's freezing (stem + res2,
    ``freeze_at=2``) and detrex's (stem only, ``freeze_at=1``)."""
    print("\nResNet-50 freezing (conditional_detr_r50's backbone)")
    cfg = LazyConfig.load(os.path.join(ROOT, "configs", "conditional_detr", "conditional_detr_r50_50ep.py"))
    counts = {}
    for freeze_at in (2, 1):
        cfg.model.backbone.freeze_at = freeze_at
        backbone = instantiate(cfg.model.backbone)
        counts[freeze_at] = sum(p.numel() for p in backbone.parameters() if p.requires_grad)
    print(f"  trainable: freeze_at=2 {counts[2] / 1e6:.3f} M, freeze_at=1 {counts[1] / 1e6:.3f} M "
          f"(res2: {(counts[1] - counts[2]) / 1e6:.3f} M more trained by detrex); the forward pass is the same")


def label_noise(seed: int):
    """DN-DETR label flipping: the official ``randint(0, num_classes)`` over the 91 COCO-id slots
    (11 of them no class), ours over the 80 contiguous classes, detrex's over 81 (+ "unknown")."""
    torch.manual_seed(seed)
    labels = torch.randint(0, 80, (1_000_000,))
    flipped = flip_labels(labels, 0.2, 80)
    print("\nDN-DETR label noise (probability 0.2)")
    print(f"  ours: {float((flipped != labels).float().mean()) * 100:.2f}% of DN labels change (0.2 x 79/80), "
          "never to a non-class; official: 0.2 x 11/91 = 2.42% get one of the 11 unused COCO ids; detrex: "
          "0.2 / 81 = 0.25% get the 'unknown' index 80")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    d2 = {"detectron2_postprocess": True}
    compare_postprocessing("Co-DINO (co_dino_r18_shapes, Soft-NMS 0.8 on the top 900, 100 kept)",
                           "co_dino/co_dino_r18_shapes.py", {"detector.clip_before_nms": True,
                                                              "detector.detectron2_postprocess": False},
                           {"detector.clip_before_nms": False, "detector.detectron2_postprocess": True},
                           args.seed, args.images)
    compare_postprocessing("Co-DINO, larger boxes", "co_dino/co_dino_r18_shapes.py",
                           {"detector.clip_before_nms": True, "detector.detectron2_postprocess": False},
                           {"detector.clip_before_nms": False, "detector.detectron2_postprocess": True},
                           args.seed, args.images, gain=4.0)
    compare_postprocessing("TOOD (tood_r18_shapes; random scores are ~0.01: score threshold 0.005 here, 0.05 in the "
                           "config)", "tood/tood_r18_shapes.py",
                           {"head.test_clip_before_nms": False, "detectron2_postprocess": False},
                           {"head.test_clip_before_nms": True, **d2}, args.seed, args.images,
                           **{"head.test_score_thresh": 0.005})
    compare_postprocessing("DEQDet (deqdet_r18_shapes, 100 queries)", "deqdet/deqdet_r18_shapes.py",
                           {"detectron2_postprocess": False}, d2, args.seed, args.images, gain=0.05)
    compare_postprocessing("Conditional DETR (conditional_detr_r18_shapes, top 100)",
                           "conditional_detr/conditional_detr_r18_shapes.py", {"detectron2_postprocess": False}, d2,
                           args.seed, args.images)
    padded_denoising_slots(args.seed)
    padding_masks(args.seed)
    frozen_stages()
    label_noise(args.seed)


if __name__ == "__main__":
    main()
