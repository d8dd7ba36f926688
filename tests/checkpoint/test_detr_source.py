"""The facebookresearch/detr release format (exact key names and shapes, from
ckpt_single_scale_formats.detr_official) converts, every key mapped, into configs/detr and loads
strictly, each value in its module; the class head keeps the 80 COCO ids then "no object"."""
import os

import pytest
import torch
from detectron2.config import LazyConfig, instantiate

from codetr.checkpoint import COCO_THING_IDS, MissingKeyError, ShapeMismatchError, UnknownKeyError, convert, get_source

from ckpt_single_scale_formats import SingleDims, detr_official
from ckpt_source_formats import meta_shapes

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = "configs/detr/detr_r50_500ep.py"


def test_exact_format_maps_every_key_to_the_config_keys_and_shapes():
    sd = detr_official(values="zeros")
    assert len(sd) == 458  # 265 ResNet-50 + 72 encoder + 108 decoder + 13 others
    result = convert("detr-official", sd, target=meta_shapes(os.path.join(REPO, CONFIG)))
    assert result.dropped == []
    assert len(result.state_dict) == len(sd)
    assert get_source("detr-official").select_config(result.state_dict) == CONFIG


def test_values_land_in_the_right_modules_and_load_strictly():
    sd = detr_official(values="random", seed=4)
    out = convert("detr-official", sd).state_dict
    model = instantiate(LazyConfig.load(os.path.join(REPO, CONFIG)).model)
    model.load_state_dict(out, strict=True)
    msd = model.state_dict()
    ids = list(COCO_THING_IDS) + [91]
    assert torch.equal(msd["transformer.decoder.class_embed.weight"], sd["class_embed.weight"][ids])
    assert torch.equal(msd["transformer.decoder.class_embed.bias"][-1], sd["class_embed.bias"][91])  # no object
    assert torch.equal(msd["transformer.decoder.class_embed.bias"][0], sd["class_embed.bias"][1])  # person = id 1
    for key in ("transformer.decoder.layers.3.multihead_attn.in_proj_weight", "transformer.decoder.layers.5.norm3.bias",
                "transformer.encoder.layers.2.self_attn.out_proj.weight", "transformer.decoder.norm.weight"):
        assert torch.equal(msd[key], sd[key]), key
    assert torch.equal(msd["transformer.queries.query_embed.weight"], sd["query_embed.weight"])
    assert torch.equal(msd["transformer.decoder.bbox_embed.layers.2.weight"], sd["bbox_embed.layers.2.weight"])
    assert torch.equal(msd["neck.proj.weight"], sd["input_proj.weight"])
    assert torch.equal(msd["backbone.res5.2.conv3.norm.running_var"], sd["backbone.0.body.layer4.2.bn3.running_var"])
    assert torch.equal(msd["backbone.stem.conv1.weight"], sd["backbone.0.body.conv1.weight"])


def test_errors_name_the_problem():
    sd = detr_official(values="zeros")
    with pytest.raises(ShapeMismatchError, match="class_embed.weight"):  # a head without the 91 COCO ids
        convert("detr-official", dict(sd, **{"class_embed.weight": torch.zeros(81, 256)}))
    with pytest.raises(UnknownKeyError, match="bbox_attention"):  # a segmentation checkpoint
        convert("detr-official", dict(sd, **{"bbox_attention.q_linear.weight": torch.zeros(256, 256)}))
    no_query = dict(sd)
    del no_query["query_embed.weight"]
    with pytest.raises(MissingKeyError, match="query_embed.weight"):
        convert("detr-official", no_query)
    with pytest.raises(MissingKeyError, match="layers.5"):
        convert("detr-official", detr_official(SingleDims(dec_layers=5, queries=100), values="zeros"),
                target=meta_shapes(os.path.join(REPO, CONFIG)))
