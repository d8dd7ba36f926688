"""Key map of the official AdaMixer / DEQDet decoder layers into AdaMixerRefiner, on generated
state dicts with the releases' exact keys and shapes."""
import pytest
import torch

from codetr.checkpoint.adamixer import map_adamixer_layers
from codetr.checkpoint.core import KeyMapper, UnknownKeyError, verify_state_dict
from codetr.modeling.decoders.adamixer import AdaMixerDecoderLayer
from codetr.modeling.decoders.fixed_point import FixedPointRefinement
from codetr.modeling.decoders.refinement import AdaMixerRefiner, SequentialRefinement

from ckpt_adamixer_formats import official_state_dict


def _convert(sd):
    m = KeyMapper(sd, "test")
    n = map_adamixer_layers(m, "roi_head.bbox_head.", "decoder.")
    out, dropped = m.finish()
    return n, out, dropped


def test_deqdet_release_shapes_match_the_refiner():
    """Full DEQDet R50 sizes (P_in 64, 80 classes), on the meta device (no memory)."""
    n, out, dropped = _convert(official_state_dict(2, device="meta"))
    assert n == 2
    assert len(dropped) == 2 * 12 and all("instance_interactive_conv" in d.key for d in dropped)
    with torch.device("meta"):
        refiner = AdaMixerRefiner([AdaMixerDecoderLayer(in_points=64) for _ in range(2)], 80, FixedPointRefinement())
    target = {f"decoder.{k}": tuple(v.shape) for k, v in refiner.state_dict().items()}
    verify_state_dict(out, target)


def test_adamixer_release_shapes_match_the_refiner():
    """AdaMixer R50 1x: 6 stages, P_in 32, no DIIHead leftovers."""
    n, out, dropped = _convert(official_state_dict(6, device="meta", p_in=32, dii=False))
    assert n == 6 and dropped == []
    with torch.device("meta"):
        refiner = AdaMixerRefiner([AdaMixerDecoderLayer(in_points=32) for _ in range(6)], 80, SequentialRefinement(6))
    verify_state_dict(out, {f"decoder.{k}": tuple(v.shape) for k, v in refiner.state_dict().items()})


def test_values_land_in_the_right_modules():
    kw = dict(c=16, heads=2, ffn=32, groups=2, p_in=4, p_out=3, classes=5)
    sd = official_state_dict(2, **kw)
    _, out, _ = _convert(sd)
    refiner = AdaMixerRefiner([AdaMixerDecoderLayer(16, 2, 32, num_groups=2, in_points=4, out_points=3)
                               for _ in range(2)], 5, FixedPointRefinement())
    refiner.load_state_dict({k[len("decoder."):]: v for k, v in out.items()}, strict=True)
    f, src = refiner.layers[1], "roi_head.bbox_head.1."
    # the three LayerNorms of a layer have the same shape: check each by value
    assert torch.equal(f.norm1.weight, sd[src + "attention_norm.weight"])
    assert torch.equal(f.norm2.weight, sd[src + "sampling_n_mixing.norm.weight"])
    assert torch.equal(f.norm3.bias, sd[src + "ffn_norm.bias"])
    assert torch.equal(refiner.class_heads[1].fcs[1].weight, sd[src + "cls_fcs.1.weight"])
    assert torch.equal(refiner.box_heads[1].fcs[0].weight, sd[src + "reg_fcs.0.weight"])
    assert torch.equal(refiner.box_heads[0].fc.bias, sd["roi_head.bbox_head.0.fc_reg.bias"])
    assert torch.equal(f.iof_tau, sd[src + "iof_tau"])


def test_unknown_layer_keys_are_reported():
    sd = official_state_dict(1, c=16, heads=2, ffn=32, groups=2, p_in=4, p_out=3, classes=5)
    sd["roi_head.bbox_head.0.mask_head.weight"] = torch.zeros(1)
    with pytest.raises(UnknownKeyError, match="mask_head"):
        _convert(sd)


@pytest.mark.parametrize("conv_name,content_name,kernel", [("convs", "init_proposal_features", 3),
                                                            ("lateral_convs", "init_content_features", 1)])
def test_neck_and_queries(conv_name, content_name, kernel):
    from detectron2.layers import ShapeSpec

    from codetr.checkpoint.adamixer import map_adamixer_neck, map_fixed_box_queries
    from codetr.modeling.necks.shared_norm_mapper import SharedNormChannelMapper
    from codetr.modeling.queries.whole_image import WholeImageQueries

    in_channels = [256, 512, 1024, 2048]
    sd = {}
    for i, c in enumerate(in_channels):
        sd[f"neck.{conv_name}.{i}.conv.weight"] = torch.randn(256, c, kernel, kernel)
        sd[f"neck.{conv_name}.{i}.conv.bias"] = torch.randn(256)
    sd["neck.gn_out.weight"], sd["neck.gn_out.bias"] = torch.randn(256), torch.randn(256)
    sd["rpn_head.init_proposal_bboxes.weight"] = torch.tensor([0.5, 0.5, 1.0, 1.0]).repeat(100, 1)
    sd[f"rpn_head.{content_name}.weight"] = torch.randn(100, 256)
    m = KeyMapper(sd, "test")
    assert map_adamixer_neck(m) == 4
    map_fixed_box_queries(m)
    out, dropped = m.finish()
    assert dropped == []
    shapes = {f"res{i + 2}": ShapeSpec(channels=c, stride=4 * 2 ** i) for i, c in enumerate(in_channels)}
    model = torch.nn.Module()
    model.neck = SharedNormChannelMapper(shapes, list(shapes), kernel_size=kernel, activation=kernel == 3)
    model.queries = WholeImageQueries(100, 256)
    model.load_state_dict(out, strict=True)
    assert torch.equal(model.neck.convs[2].weight, sd[f"neck.{conv_name}.2.conv.weight"])
    assert torch.equal(model.neck.norm.bias, sd["neck.gn_out.bias"])
    assert torch.equal(model.queries.content, sd[f"rpn_head.{content_name}.weight"])


def test_whole_deqdet_checkpoint_is_accounted_for():
    import torchvision

    from codetr.checkpoint.adamixer import convert_deqdet_state_dict

    with torch.device("meta"):
        resnet = torchvision.models.resnet50().state_dict()  # mmdet's ResNet uses the same names, no fc
    sd = {f"backbone.{k}": v for k, v in resnet.items() if not k.startswith("fc.")}
    sd.update(official_state_dict(2, device="meta"))
    for i, c in enumerate([256, 512, 1024, 2048]):
        sd[f"neck.convs.{i}.conv.weight"] = torch.empty(256, c, 3, 3, device="meta")
        sd[f"neck.convs.{i}.conv.bias"] = torch.empty(256, device="meta")
    sd["neck.gn_out.weight"] = sd["neck.gn_out.bias"] = torch.empty(256, device="meta")
    sd["rpn_head.init_proposal_bboxes.weight"] = torch.empty(100, 4, device="meta")
    sd["rpn_head.init_proposal_features.weight"] = torch.empty(100, 256, device="meta")
    out, dropped = convert_deqdet_state_dict(sd)
    assert "backbone.res5.2.conv3.norm.running_var" in out and "backbone.stem.conv1.weight" in out
    assert "decoder.layers.1.mixing.out_proj.weight" in out and "queries.content" in out and "neck.norm.weight" in out
    assert {d.key.split(".")[0] for d in dropped} <= {"backbone", "roi_head"}
    sd["roi_head.bbox_head.2.extra.weight"] = torch.empty(1, device="meta")
    with pytest.raises(UnknownKeyError, match="extra"):
        convert_deqdet_state_dict(sd)
