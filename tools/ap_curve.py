#!/usr/bin/env python
"""Print the COCO AP curve of one or more training runs (from their metrics.json) as a markdown
table, one column group per run.

    python tools/ap_curve.py output/dino_r18_shapes output/co_dino_r18_shapes
    python tools/ap_curve.py --loss loss_giou --window 100 output/dab_detr_r18_shapes output/dn_detr_r18_shapes

``--loss NAME`` adds, per run and evaluation point, the mean of a logged loss over the last
``--window`` logged iterations before it (progress where the AP is still ~0).
"""
import argparse
import json
import os
import sys


def ap_points(output_dir):
    """[(iteration, AP, AP50)] of every evaluation recorded in output_dir/metrics.json."""
    path = os.path.join(output_dir, "metrics.json")
    if not os.path.isfile(path):
        sys.exit(f"ap_curve: no metrics.json in {output_dir!r}")
    points, last_train_iter = {}, -1
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            record = json.loads(line)
            if "total_loss" in record:
                last_train_iter = max(last_train_iter, record["iteration"])
            if "bbox/AP" in record:
                points[record["iteration"]] = (record["bbox/AP"], record["bbox/AP50"])
    # an evaluation logged at iteration i follows i + 1 training iterations (the final one is
    # logged one past the last iteration)
    done = {min(it + 1, last_train_iter + 1): v for it, v in points.items()}
    return sorted((n, ap, ap50) for n, (ap, ap50) in done.items())


def loss_means(output_dir, name, window, iterations):
    """{iteration: mean of ``name`` over the logged records with iteration in [it - window, it)}."""
    records = []
    with open(os.path.join(output_dir, "metrics.json")) as f:
        for line in f:
            if line.strip():
                record = json.loads(line)
                if name in record:
                    records.append((record["iteration"], record[name]))
    if not records:
        sys.exit(f"ap_curve: no {name!r} logged in {output_dir!r}")
    means = {}
    for it in iterations:
        values = [v for i, v in records if it - window <= i < it]
        if values:
            means[it] = sum(values) / len(values)
    return means


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dirs", nargs="+")
    parser.add_argument("--loss", help="also the mean of this logged loss before each evaluation")
    parser.add_argument("--window", type=int, default=100, help="iterations averaged for --loss")
    args = parser.parse_args()
    runs = {d: {it: (ap, ap50) for it, ap, ap50 in ap_points(d)} for d in args.output_dirs}
    iterations = sorted({it for points in runs.values() for it in points})
    losses = {d: loss_means(d, args.loss, args.window, iterations) for d in args.output_dirs} if args.loss else {}
    names = [os.path.basename(os.path.normpath(d)) for d in args.output_dirs]
    per_run = ["AP", "AP50"] + ([args.loss] if args.loss else [])
    print("| iterations trained | " + " | ".join(f"{n} {c}" for n in names for c in per_run) + " |")
    print("|---|" + "---|" * len(per_run) * len(names))
    for it in iterations:
        cells = []
        for d in args.output_dirs:
            ap, ap50 = runs[d].get(it, (None, None))
            cells += ["-" if ap is None else f"{ap:.1f}", "-" if ap50 is None else f"{ap50:.1f}"]
            if args.loss:
                value = losses[d].get(it)
                cells.append("-" if value is None else f"{value:.3f}")
        print(f"| {it} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
