"""deqdet-official / adamixer-official: whole official R50 / R101 checkpoints (generated with the
releases' exact keys and shapes, on the meta device) convert into the configs they select and load
strictly into the instantiated models."""
import os

import pytest
import torch
import torchvision
from detectron2.config import LazyConfig, instantiate

from codetr.checkpoint import convert, get_source

from ckpt_adamixer_formats import official_state_dict
from ckpt_source_formats import meta_shapes

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEQDET_1X = os.path.join(REPO, "configs/deqdet/deqdet_r50_1x.py")
DEQDET_2X = os.path.join(REPO, "configs/deqdet/deqdet_r50_2x.py")
ADAMIXER_1X = os.path.join(REPO, "configs/adamixer/adamixer_r50_1x.py")


def official_checkpoint(deqdet=True, queries=100, depth=50):
    """A whole official state dict on the meta device: mmdet ResNet (torchvision names, no fc),
    the neck (DEQDet ChannelMapperWithGN 3x3 ``convs.i.conv`` / AdaMixer ChannelMapping 1x1
    ``lateral_convs.i.conv``, shared ``gn_out``), the initial queries and the decoder layers (DEQDet:
    g and f with DIIHead leftovers, P_in 64; AdaMixer: 6 stages, P_in 32)."""
    with torch.device("meta"):
        resnet = getattr(torchvision.models, f"resnet{depth}")().state_dict()
    sd = {f"backbone.{k}": v for k, v in resnet.items() if not k.startswith("fc.")}
    if deqdet:
        sd.update(official_state_dict(2, device="meta"))
    else:
        sd.update(official_state_dict(6, device="meta", p_in=32, dii=False))
    conv, kernel = ("convs", 3) if deqdet else ("lateral_convs", 1)
    for i, c in enumerate([256, 512, 1024, 2048]):
        sd[f"neck.{conv}.{i}.conv.weight"] = torch.empty(256, c, kernel, kernel, device="meta")
        sd[f"neck.{conv}.{i}.conv.bias"] = torch.empty(256, device="meta")
    sd["neck.gn_out.weight"] = torch.empty(256, device="meta")
    sd["neck.gn_out.bias"] = torch.empty(256, device="meta")
    sd["rpn_head.init_proposal_bboxes.weight"] = torch.empty(queries, 4, device="meta")
    content = "init_proposal_features" if deqdet else "init_content_features"
    sd[f"rpn_head.{content}.weight"] = torch.empty(queries, 256, device="meta")
    return sd


def load_strictly(config, overrides, state_dict):
    cfg = LazyConfig.apply_overrides(LazyConfig.load(config), list(overrides))
    with torch.device("meta"):
        model = instantiate(cfg.model)
    model.load_state_dict(state_dict, strict=True, assign=True)  # keys and shapes
    return model


@pytest.mark.parametrize("source,deqdet,queries,depth,config,overrides", [
    ("deqdet-official", True, 100, 50, DEQDET_1X, []),
    ("deqdet-official", True, 300, 50, DEQDET_2X, []),
    ("deqdet-official", True, 300, 101, DEQDET_2X, ["model.backbone.stages.depth=101"]),
    ("adamixer-official", False, 100, 50, ADAMIXER_1X, []),
    ("adamixer-official", False, 300, 101, ADAMIXER_1X, ["model.backbone.stages.depth=101", "model.num_queries=300"]),
])
def test_release_converts_into_its_config_and_loads_strictly(source, deqdet, queries, depth, config, overrides):
    sd = official_checkpoint(deqdet, queries, depth)
    src = get_source(source)
    result = convert(source, sd)
    assert os.path.join(REPO, src.select_config(result.state_dict)) == config
    assert result.config_overrides == overrides
    convert(source, sd, target=meta_shapes(config, overrides))  # same keys and shapes
    model = load_strictly(config, overrides, result.state_dict)
    assert model.num_queries == queries and type(model).__name__ == ("DEQDet" if deqdet else "AdaMixer")
    # only num_batches_tracked and (DEQDet) the unused DIIHead dynamic conv are dropped
    dropped = {d.key.split(".")[0] + ("/dii" if "instance_interactive_conv" in d.key else "") for d in result.dropped}
    assert dropped == ({"backbone", "roi_head/dii"} if deqdet else {"backbone"})


def test_sources_are_listed(capsys):
    import importlib.util

    path = os.path.join(REPO, "tools/convert_checkpoint.py")
    spec = importlib.util.spec_from_file_location("convert_checkpoint", path)
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    assert cli.main(["--list-sources"]) == 0
    out = capsys.readouterr().out
    assert "deqdet-official" in out and "adamixer-official" in out
