#!/usr/bin/env python
"""Print the COCO AP curve of one or more training runs (from their metrics.json) as a markdown
table, one column group per run.

    python tools/ap_curve.py output/dino_r18_shapes output/co_dino_r18_shapes
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


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dirs", nargs="+")
    args = parser.parse_args()
    runs = {d: {it: (ap, ap50) for it, ap, ap50 in ap_points(d)} for d in args.output_dirs}
    iterations = sorted({it for points in runs.values() for it in points})
    names = [os.path.basename(os.path.normpath(d)) for d in args.output_dirs]
    print("| iterations trained | " + " | ".join(f"{n} AP | {n} AP50" for n in names) + " |")
    print("|---|" + "---|---|" * len(names))
    for it in iterations:
        cells = []
        for d in args.output_dirs:
            ap, ap50 = runs[d].get(it, (None, None))
            cells += ["-" if ap is None else f"{ap:.1f}", "-" if ap50 is None else f"{ap50:.1f}"]
        print(f"| {it} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
