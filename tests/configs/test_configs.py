"""Every config under configs/ that defines a ``model`` instantiates, with size overrides that keep
it small (the structure is the config's own; only widths, depths and query counts shrink)."""
import glob
import os

import pytest
import torch
from detectron2.config import LazyConfig, instantiate

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = sorted(
    os.path.relpath(p, ROOT)
    for p in glob.glob(os.path.join(ROOT, "configs", "**", "*.py"), recursive=True)
    if os.sep + "common" + os.sep not in p
)

# dotted key -> value, applied when the key exists in the config (other detectors' configs may
# add their own entries here)
SHRINK = {
    "model.num_queries": 10,
    "model.select_box_nums_for_evaluation": 10,
    "model.transformer.encoder.num_layers": 1,
    "model.transformer.decoder.num_layers": 1,
    "model.transformer.encoder.ffn_dim": 64,
    "model.transformer.decoder.ffn_dim": 64,
    "model.denoising.num_dn_queries": 4,
    # Co-DETR configs wrap their DINO under model.detector (LSJ pads test images to 1024: not here)
    "model.detector.select_box_nums_for_evaluation": 10,
    "model.detector.transformer.encoder.num_layers": 1,
    "model.detector.transformer.decoder.num_layers": 1,
    "model.detector.transformer.encoder.ffn_dim": 64,
    "model.detector.transformer.decoder.ffn_dim": 64,
    "model.detector.denoising.num_dn_queries": 4,
    "model.detector.size_divisibility": 0,
    # AdaMixer / DEQDet / RNNDet: smaller decoder layers (the loop and the layer count are kept)
    "model.decoder.layers.ffn_dim": 64,
    "model.decoder.layers.in_points": 4,
    "model.decoder.layers.out_points": 8,
    "model.detector.decoder.layers.ffn_dim": 64,  # Co-DEQDet: its DEQDet under model.detector
    "model.detector.decoder.layers.in_points": 4,
    "model.detector.decoder.layers.out_points": 8,
    # dense-head detectors (TOOD): an untrained head scores ~0.01 (its prior), below the 0.05
    # test threshold
    "model.head.test_score_thresh": 0.0,
}


def _set_if_present(cfg, dotted, value):
    node, *path = dotted.split(".")
    node = cfg.get(node)
    for key in path[:-1]:
        if node is None or not hasattr(node, "get"):
            return
        node = node.get(key)
    if node is not None and hasattr(node, "get") and node.get(path[-1]) is not None:
        node[path[-1]] = value


def _fake_input(h, w):
    from detectron2.structures import Boxes, Instances

    inst = Instances((h, w))
    inst.gt_boxes = Boxes(torch.tensor([[4.0, 6.0, 40.0, 50.0]]))  # inside a 96 x 128 image
    inst.gt_classes = torch.tensor([0])
    return {"image": torch.randint(0, 256, (3, h, w), dtype=torch.uint8), "instances": inst, "height": h, "width": w}


def test_configs_found():
    assert any(c.startswith(os.path.join("configs", "dino")) for c in CONFIGS), CONFIGS


@pytest.mark.parametrize("path", CONFIGS)
def test_config_instantiates(path):
    cfg = LazyConfig.load(os.path.join(ROOT, path))
    if "model" not in cfg:
        pytest.skip(f"{path} defines no model")
    if os.sep + "models" + os.sep not in path:  # a top-level (trainable) config
        for key in ("dataloader", "optimizer", "lr_multiplier", "train"):
            assert key in cfg, f"{path} has no {key!r}"
    for key, value in SHRINK.items():
        _set_if_present(cfg, key, value)
    if "train" in cfg and cfg.train.get("iters_per_epoch") is None:
        # train_net.py derives these from the dataset before building the model
        cfg.train.iters_per_epoch = 10
        cfg.train.max_iter = int(round(cfg.train.epochs * 10))
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    assert isinstance(model, torch.nn.Module)
    # one CPU training step and one inference on a 96 x 128 image
    model.train()
    losses = model([_fake_input(96, 128)])
    assert losses and all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        out = model([_fake_input(96, 128)])
    assert len(out) == 1 and len(out[0]["instances"]) > 0


LITE0_CONFIGS = [c for c in CONFIGS if c.endswith("_lite0_shapes.py")]


def test_lite0_configs_found():
    assert len(LITE0_CONFIGS) >= 10, LITE0_CONFIGS


@pytest.mark.parametrize("path", LITE0_CONFIGS)
def test_lite0_config_is_its_r18_parent_with_the_pretrained_backbone(path):
    """A ``*_lite0_shapes`` config equals its ``*_r18_shapes`` counterpart except for the backbone
    (the pretrained EfficientNet-Lite0, FrozenBN, stem + stages 1-2 frozen; TOOD: the FPN's
    bottom-up), TF's normalisation, the neck's input widths / feature, the output folder and, in
    the DETR family, the backbone LR x 0.1."""
    from omegaconf import OmegaConf

    from codetr.modeling.backbones import EfficientNetLite

    parts = []
    trees = []
    for p in (path, path.replace("_lite0_", "_r18_")):
        tree = OmegaConf.to_container(LazyConfig.load(os.path.join(ROOT, p)), resolve=False)
        tree.pop("detector", None)  # the Co- parents' alias of their detector before co_detr copied it
        model = tree["model"].get("detector", tree["model"])
        neck = model.get("neck", {})
        backbone = model["backbone"].pop("bottom_up") if "bottom_up" in model["backbone"] else model.pop("backbone")
        parts.append({
            "backbone": backbone,
            "pixel": (model.pop("pixel_mean", None), model.pop("pixel_std", None)),
            "neck": (neck.pop("input_shapes", None), neck.pop("in_feature", None)),
            "lr_factors": tree["optimizer"]["params"].pop("lr_factors"),
            "output_dir": tree["train"].pop("output_dir"),
            "init_checkpoint": tree["train"]["init_checkpoint"],
        })
        trees.append(tree)
    assert trees[0] == trees[1]  # nothing else differs
    lite0, parent = parts
    backbone = lite0["backbone"]
    assert backbone["_target_"] is EfficientNetLite
    assert (backbone["variant"], backbone["pretrained"], backbone["norm"], backbone["freeze_at"]) == (
        "lite0", True, "FrozenBN", 3)
    assert lite0["pixel"] == ([127.0] * 3, [128.0] * 3)  # TF's (x - 127) / 128
    assert lite0["init_checkpoint"] == ""  # the backbone loads the installed weights itself
    assert lite0["output_dir"] == "./output/" + os.path.basename(path)[: -len(".py")]
    detr_family = any(k in path for k in ("dino", "detr_lite0", "conditional_detr", "dab_detr", "dn_detr"))
    assert lite0["lr_factors"] == ({"backbone": 0.1} if detr_family else parent["lr_factors"])
