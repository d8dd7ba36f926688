"""Conditional DETR / DAB-DETR / DN-DETR sources (official and detrex): source-format state dicts
(exact keys and shapes, from ckpt_single_scale_formats) convert and load strictly into
configs/{conditional_detr,dab_detr,dn_detr}."""
import os

import pytest
import torch
from detectron2.config import LazyConfig, instantiate

from codetr.checkpoint import (
    COCO_THING_IDS,
    CheckpointConversionError,
    MissingKeyError,
    ShapeMismatchError,
    UnknownKeyError,
    convert,
    get_source,
)

from ckpt_single_scale_formats import SingleDims, detrex, official
from ckpt_source_formats import meta_shapes

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = {
    "conditional": "configs/conditional_detr/conditional_detr_r50_50ep.py",
    "dab": "configs/dab_detr/dab_detr_r50_50ep.py",
    "dn": "configs/dn_detr/dn_detr_r50_50ep.py",
}
SOURCES = {
    ("official", "conditional"): "conditional-detr-official",
    ("official", "dab"): "dab-detr-official",
    ("official", "dn"): "dn-detr-official",
    ("detrex", "conditional"): "detrex-conditional-detr",
    ("detrex", "dab"): "detrex-dab-detr",
    ("detrex", "dn"): "detrex-dn-detr",
}
GEN = {"official": official, "detrex": detrex}


def _shapes(kind):
    return meta_shapes(os.path.join(REPO, CONFIG[kind]))


@pytest.mark.parametrize("origin,kind", sorted(SOURCES))
def test_exact_format_converts_to_config_keys_and_shapes(origin, kind):
    """Every source key is mapped or dropped; the result has exactly the config model's keys
    and shapes; only tied copies and detrex's unused projections are dropped."""
    sd = GEN[origin](kind, values="zeros")
    source = SOURCES[(origin, kind)]
    result = convert(source, sd, target=_shapes(kind))
    assert get_source(source).select_config(result.state_dict) == CONFIG[kind]
    dropped = {d.key for d in result.dropped}
    expected = set()
    if kind != "conditional":
        expected |= {k for k in sd if k.startswith("transformer.decoder.bbox_embed.")}
    if origin == "detrex":
        expected |= {k for k in sd if ".attentions.1.query_pos_proj." in k and ".layers.0." not in k}
        if kind != "conditional":
            expected |= {k for k in sd if k.endswith("ffns.0.activation.weight")}
    assert dropped == expected
    assert len(result.state_dict) + len(dropped) == len(sd)


DC5_CONFIG = {
    "conditional": "configs/conditional_detr/conditional_detr_r50_dc5_50ep.py",
    "dab": "configs/dab_detr/dab_detr_r50_dc5_50ep.py",
    "dn": "configs/dn_detr/dn_detr_r50_dc5_50ep.py",
}


@pytest.mark.parametrize("kind", sorted(DC5_CONFIG))
def test_detrex_dc5_torchvision_backbone_converts_into_the_dc5_config(kind):
    """detrex's DC5 checkpoints (TorchvisionResNet under ``backbone.body.``) convert into the DC5
    configs' keys and shapes, the backbone weights landing in the Detectron2 names."""
    sd = detrex(kind, dc5=True)
    assert sum(k.startswith("backbone.body.") for k in sd) == 265  # torchvision R50 without fc and step counters
    result = convert(SOURCES[("detrex", kind)], sd, target=meta_shapes(os.path.join(REPO, DC5_CONFIG[kind])))
    assert DC5_CONFIG[kind] in get_source(SOURCES[("detrex", kind)]).configs
    out = result.state_dict
    assert torch.equal(out["backbone.stem.conv1.weight"], sd["backbone.body.conv1.weight"])
    assert torch.equal(out["backbone.res5.2.conv3.norm.running_var"], sd["backbone.body.layer4.2.bn3.running_var"])
    assert torch.equal(out["backbone.res3.0.shortcut.weight"], sd["backbone.body.layer2.0.downsample.0.weight"])
    assert not any(k.startswith("backbone.body.") for k in out)


def test_dn_detr_official_random_loads_strictly_and_keeps_values():
    sd = official("dn", values="random", seed=1)
    result = convert("dn-detr-official", sd)
    model = instantiate(LazyConfig.load(os.path.join(REPO, CONFIG["dn"])).model)
    model.load_state_dict(result.state_dict, strict=True)
    msd = model.state_dict()
    ids = list(COCO_THING_IDS)
    assert torch.equal(msd["transformer.decoder.class_embed.weight"], sd["class_embed.weight"][ids])
    assert torch.equal(msd["transformer.decoder.class_embed.bias"][0], sd["class_embed.bias"][1])  # person = id 1
    label = msd["denoising.label_embedding.weight"]
    assert label.shape == (81, 255)
    assert torch.equal(label[:80], sd["label_enc.weight"][ids]) and torch.equal(label[80], sd["label_enc.weight"][91])
    # the matching queries' content: the "unknown" row with indicator 0
    torch.testing.assert_close(model.denoising.matching_content(),
                               torch.cat([sd["label_enc.weight"][91], torch.zeros(1)]))
    assert torch.equal(msd["transformer.queries.refpoint_embed.weight"], sd["refpoint_embed.weight"])
    assert torch.equal(msd["transformer.decoder.spatial_query.ref_anchor_head.layers.1.weight"],
                       sd["transformer.decoder.ref_anchor_head.layers.1.weight"])
    assert torch.equal(msd["transformer.decoder.spatial_query.query_scale.layers.0.bias"],
                       sd["transformer.decoder.query_scale.layers.0.bias"])
    assert torch.equal(msd["transformer.decoder.ref_point_head.layers.0.weight"],
                       sd["transformer.decoder.ref_point_head.layers.0.weight"])
    assert torch.equal(msd["transformer.encoder.query_scale.layers.1.weight"],
                       sd["transformer.encoder.query_scale.layers.1.weight"])
    assert torch.equal(msd["transformer.decoder.layers.0.ca_qpos_proj.weight"],
                       sd["transformer.decoder.layers.0.ca_qpos_proj.weight"])
    assert torch.equal(msd["transformer.decoder.layers.4.activation.weight"], sd["transformer.decoder.layers.4.activation.weight"])
    assert torch.equal(msd["neck.proj.weight"], sd["input_proj.weight"])
    assert torch.equal(msd["backbone.res5.2.conv3.norm.running_var"], sd["backbone.0.body.layer4.2.bn3.running_var"])
    assert torch.equal(msd["transformer.decoder.bbox_embed.layers.2.bias"], sd["bbox_embed.layers.2.bias"])


def test_conditional_detr_official_maps_query_side_ref_point_head():
    sd = official("conditional", values="random", seed=2)
    result = convert("conditional-detr-official", sd, target=_shapes("conditional")).state_dict
    assert torch.equal(result["transformer.queries.ref_point_head.layers.1.weight"],
                       sd["transformer.decoder.ref_point_head.layers.1.weight"])
    assert result["transformer.queries.ref_point_head.layers.1.weight"].shape == (2, 256)
    assert torch.equal(result["transformer.queries.query_embed.weight"], sd["query_embed.weight"])
    assert torch.equal(result["transformer.decoder.layers.3.ca_qpos_sine_proj.bias"],
                       sd["transformer.decoder.layers.3.ca_qpos_sine_proj.bias"])


def test_detrex_dn_detr_values_land_in_the_right_modules():
    sd = detrex("dn", values="random", seed=3)
    result = convert("detrex-dn-detr", sd, target=_shapes("dn")).state_dict
    pairs = {
        "transformer.decoder.layers.2.sa_kpos_proj.weight": "transformer.decoder.layers.2.attentions.0.key_pos_proj.weight",
        "transformer.decoder.layers.2.self_attn.out_proj.bias": "transformer.decoder.layers.2.attentions.0.out_proj.bias",
        "transformer.decoder.layers.0.ca_qpos_proj.weight": "transformer.decoder.layers.0.attentions.1.query_pos_proj.weight",
        "transformer.decoder.layers.5.ca_qpos_sine_proj.weight":
            "transformer.decoder.layers.5.attentions.1.query_pos_sine_proj.weight",
        "transformer.decoder.layers.5.cross_attn.out_proj.weight": "transformer.decoder.layers.5.attentions.1.out_proj.weight",
        "transformer.decoder.layers.1.norm3.weight": "transformer.decoder.layers.1.norms.2.weight",
        "transformer.decoder.layers.1.linear1.weight": "transformer.decoder.layers.1.ffns.0.layers.0.0.weight",
        "transformer.decoder.layers.1.activation.weight": "transformer.decoder.layers.1.ffns.0.layers.0.1.weight",
        "transformer.encoder.layers.3.self_attn.in_proj_weight": "transformer.encoder.layers.3.attentions.0.attn.in_proj_weight",
        "transformer.encoder.layers.3.linear2.bias": "transformer.encoder.layers.3.ffns.0.layers.1.bias",
        "transformer.encoder.layers.3.norm2.weight": "transformer.encoder.layers.3.norms.1.weight",
        "transformer.decoder.norm.weight": "transformer.decoder.post_norm_layer.weight",
        "transformer.queries.refpoint_embed.weight": "anchor_box_embed.weight",
        "denoising.label_embedding.weight": "denoising_generator.label_encoder.weight",
        "transformer.decoder.class_embed.weight": "class_embed.weight",
    }
    for ours, theirs in pairs.items():
        assert torch.equal(result[ours], sd[theirs]), ours


def test_detrex_checkpoints_converted_from_official_releases_also_convert():
    """detrex's own converter writes ``ffns.0.layers.0.1`` only and no unused query_pos_proj."""
    sd = detrex("dn", values="zeros")
    sd = {k: v for k, v in sd.items()
          if not k.endswith("ffns.0.activation.weight")
          and not (".attentions.1.query_pos_proj." in k and ".layers.0." not in k)}
    result = convert("detrex-dn-detr", sd, target=_shapes("dn"))
    assert {d.key for d in result.dropped} == {k for k in sd if k.startswith("transformer.decoder.bbox_embed.")}


def test_errors_name_the_problem():
    sd = official("dab", values="zeros")
    with pytest.raises(CheckpointConversionError, match="transformer.patterns.weight"):
        convert("dab-detr-official", dict(sd, **{"transformer.patterns.weight": torch.zeros(3, 256)}))
    with pytest.raises(UnknownKeyError, match="label_enc.weight"):  # a DN-DETR file given as DAB-DETR
        convert("dab-detr-official", official("dn", values="zeros"))
    with pytest.raises(MissingKeyError, match="label_enc.weight"):
        convert("dn-detr-official", sd)
    bad = official("dn", values="zeros")
    bad["label_enc.weight"] = torch.zeros(81, 255)
    with pytest.raises(ShapeMismatchError, match="label_enc"):
        convert("dn-detr-official", bad)
    cond = official("conditional", values="zeros")
    cond["class_embed.weight"] = torch.zeros(80, 256)
    with pytest.raises(ShapeMismatchError, match="class_embed.weight"):
        convert("conditional-detr-official", cond)
    no_first = official("conditional", values="zeros")
    del no_first["transformer.decoder.layers.0.ca_qpos_proj.weight"]
    with pytest.raises(MissingKeyError, match="layers.0.ca_qpos_proj.weight"):
        convert("conditional-detr-official", no_first, target=_shapes("conditional"))
    small = official("conditional", SingleDims(dec_layers=5), values="zeros")
    with pytest.raises(MissingKeyError, match="layers.5"):
        convert("conditional-detr-official", small, target=_shapes("conditional"))


def test_cli_official_dn_detr_file_with_args_namespace(tmp_path, capsys):
    """An official DN-DETR file ({'model', 'optimizer', 'epoch', 'args'}, args a pickled Namespace)
    -> CLI (--allow-pickle) -> verified against the DN-DETR config."""
    import argparse
    import importlib.util

    spec = importlib.util.spec_from_file_location("convert_checkpoint", os.path.join(REPO, "tools", "convert_checkpoint.py"))
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    src, out = str(tmp_path / "checkpoint.pth"), str(tmp_path / "converted.pth")
    sd = official("dn", values="zeros")
    torch.save({"model": {"module." + k: v.clone() for k, v in sd.items()}, "optimizer": {}, "epoch": 49,
                "args": argparse.Namespace(scalar=5)}, src)
    assert cli.main(["--source", "dn-detr-official", src, out]) == 1  # pickle refused
    assert cli.main(["--source", "dn-detr-official", src, out, "--allow-pickle"]) == 0
    text = capsys.readouterr().out
    assert "verified against configs/dn_detr/dn_detr_r50_50ep.py" in text
    converted = torch.load(out, weights_only=True)["model"]
    assert converted["denoising.label_embedding.weight"].shape == (81, 255)
