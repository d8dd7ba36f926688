#!/usr/bin/env python
"""Remove Co-DETR's training-only weights from a checkpoint.

Co-DETR (``codetr.modeling.meta_arch.CoDETR``) keeps its detector under ``detector.`` and,
for training only, the auxiliary heads (``aux_heads.``), the positive-query projections
(``positive_queries.``) and the extra pyramid level (``downsample.``) or the pyramid adapter
(``pyramid_adapter.``). The output holds only
``{"model": detector weights}``: an inference checkpoint of the same size as DINO's.

    python tools/strip_aux_weights.py output/co_dino/model_final.pth co_dino_infer.pth
    python tools/strip_aux_weights.py model_final.pth dino.pth --dino   # keys for a DINO config
    python tools/strip_aux_weights.py model_final.pth out.pth --ema     # the EMA weights

Without ``--dino`` the keys keep their ``detector.`` prefix and load into the Co-DETR config
(``--eval-only train.init_checkpoint=out.pth``; the auxiliary modules are then reported missing,
which does not matter at inference). With ``--dino`` the prefix is removed so that the weights
load into the corresponding DINO config.
"""
import argparse
import sys

import torch

AUX_PREFIXES = ("aux_heads.", "positive_queries.", "downsample.", "pyramid_adapter.")
DETECTOR = "detector."


def strip(state_dict, to_dino=False):
    """Detector weights of a Co-DETR state dict (``module.`` prefixes of DDP removed)."""
    out = {}
    for key, value in state_dict.items():
        key = key[len("module."):] if key.startswith("module.") else key
        if key.startswith(AUX_PREFIXES):
            continue
        if not key.startswith(DETECTOR):
            raise ValueError(f"strip_aux_weights: unexpected key {key!r}; expected a Co-DETR state dict "
                             f"(keys starting with {DETECTOR!r} or {AUX_PREFIXES})")
        out[key[len(DETECTOR):] if to_dino else key] = value
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", help="Co-DETR checkpoint (DetectionCheckpointer .pth)")
    parser.add_argument("output", help="where to write the inference checkpoint")
    parser.add_argument("--dino", action="store_true", help="drop the 'detector.' prefix (load into a DINO config)")
    parser.add_argument("--ema", action="store_true", help="take the EMA weights saved under 'ema'")
    args = parser.parse_args(argv)
    ckpt = torch.load(args.input, map_location="cpu", weights_only=True)
    if args.ema:
        if "ema" not in ckpt:
            sys.exit(f"strip_aux_weights: {args.input} has no 'ema' entry (keys: {sorted(ckpt)})")
        state = {k: v for k, v in ckpt["ema"].items() if k != "n_averaged"}
    else:
        state = ckpt["model"] if "model" in ckpt else ckpt
    stripped = strip(state, args.dino)
    torch.save({"model": stripped}, args.output)
    removed = len(state) - len(stripped)
    print(f"kept {len(stripped)} tensors, removed {removed} auxiliary tensors -> {args.output}")


if __name__ == "__main__":
    main()
