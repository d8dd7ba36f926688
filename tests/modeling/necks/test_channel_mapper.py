import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import BasicStem, ResNet
from torch import nn

from codetr.modeling.necks import ChannelMapper, masked_group_norm, padding_mask_at_stride


def _resnet18(out_features):
    stem = BasicStem(in_channels=3, out_channels=64, norm="FrozenBN")
    stages = ResNet.make_default_stages(depth=18, norm="FrozenBN")
    return ResNet(stem, stages, out_features=out_features, freeze_at=1)


@pytest.mark.parametrize(
    "in_features,num_outs,strides",
    [(["res3", "res4", "res5"], 4, [8, 16, 32, 64]), (["res2", "res3", "res4", "res5"], 5, [4, 8, 16, 32, 64])],
)
def test_channel_mapper_scales(in_features, num_outs, strides):
    backbone = _resnet18(in_features).eval()
    neck = ChannelMapper(backbone.output_shape(), in_features, out_channels=32, num_outs=num_outs, num_groups=8)
    assert neck.strides == strides
    assert [s.stride for s in neck.output_shape()] == strides
    image = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        outs = neck(backbone(image))
    assert len(outs) == num_outs
    for out, stride in zip(outs, strides):
        assert out.shape == (1, 32, -(-64 // stride), -(-96 // stride))


def test_masked_group_norm():
    norm = nn.GroupNorm(2, 4)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    x = torch.randn(2, 4, 3, 5)
    torch.testing.assert_close(masked_group_norm(x, norm, torch.zeros(2, 3, 5, dtype=torch.bool)), norm(x))
    padded = torch.randn(2, 4, 6, 7) * 100
    padded[:, :, :3, :5] = x
    mask = torch.ones(2, 6, 7, dtype=torch.bool)
    mask[:, :3, :5] = False
    torch.testing.assert_close(masked_group_norm(padded, norm, mask)[:, :, :3, :5], norm(x))


@pytest.mark.parametrize("pad", [128, 96])  # 96: not a multiple of the stride-64 level
def test_channel_mapper_ignores_padding(pad):
    shapes = {"a": ShapeSpec(channels=6, stride=8), "b": ShapeSpec(channels=10, stride=16)}
    neck = ChannelMapper(shapes, ["a", "b"], out_channels=8, num_outs=4, num_groups=2)
    image = {"a": torch.randn(1, 6, 8, 4), "b": torch.randn(1, 10, 4, 2)}  # a 64 x 32 image
    expected = neck(image)
    padded = {"a": torch.randn(1, 6, pad // 8, pad // 8), "b": torch.randn(1, 10, pad // 16, pad // 16)}
    padded["a"][:, :, :8, :4] = image["a"]
    padded["b"][:, :, :4, :2] = image["b"]
    mask = torch.ones(1, pad, pad, dtype=torch.bool)
    mask[:, :64, :32] = False
    outs = neck(padded, mask)
    for out, exp in zip(outs, expected):
        h, w = exp.shape[-2:]
        torch.testing.assert_close(out[..., :h, :w], exp, atol=1e-5, rtol=1e-4)


def test_conv_gn_weight_gradient_under_cpu_bf16_autocast_matches_fp32():
    """Tiny maps (the extra pyramid levels of small images) through a 3x3 stride-2 ConvGN: under
    CPU bf16 autocast the gradients must be finite and close to float32's. torch 2.14's CPU bf16
    convolution gets the weight gradient of such shapes wrong or NaN in a large fraction of
    calls, which is why ConvGN computes its convolution in float32 there."""
    from codetr.modeling.necks.channel_mapper import ConvGN

    torch.manual_seed(0)
    layer = ConvGN(128, 128, 3, 2, 32)
    for shape in [(1, 128, 1, 1), (2, 128, 3, 1)] * 10:
        x = torch.randn(shape)
        grads = []
        for amp in (False, True):
            layer.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                out = layer(x)
            (out.float() * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
            grads.append(layer.conv.weight.grad.clone())
        assert torch.isfinite(grads[1]).all()
        torch.testing.assert_close(grads[1], grads[0], rtol=0.02, atol=0.02 * float(grads[0].abs().max()))


def _valid_extent(mask):
    """(rows, cols) of the valid top-left block of a (H, W) padding mask, checked to be a block."""
    rows, cols = int((~mask[:, 0]).sum()), int((~mask[0]).sum())
    expected = torch.ones_like(mask)
    expected[:rows, :cols] = False
    assert torch.equal(mask, expected)
    return rows, cols


def test_padding_mask_at_stride_hand_computed():
    mask = torch.ones(1, 96, 160, dtype=torch.bool)
    mask[0, :64, :128] = False  # a 64 x 128 image padded to 96 x 160
    # stride 64: a (2, 3) map; rows centred on pixels 0, 64 -> 1 valid; columns 0, 64, 128 -> 2 valid
    out = padding_mask_at_stride(mask, 64)
    assert out.shape == (1, 2, 3)
    assert out[0].tolist() == [[False, False, True], [True, True, True]]
    # composition: stride 32 then a stride-2 conv
    torch.testing.assert_close(padding_mask_at_stride(padding_mask_at_stride(mask, 32), 2), out)
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 3\)"):
        padding_mask_at_stride(mask, 64, size=(3, 3))
    with pytest.raises(ValueError, match="stride"):
        padding_mask_at_stride(mask, 0)


def test_padding_mask_at_stride_matches_the_maps_of_the_image_alone():
    """Independent check against real convolutions: ResNet-18 (stem, max-pool, stride-2 3x3 and
    1x1 convs) and the neck's extra 3x3 stride-2 levels. For an h x w image padded to H x W, the
    mask of each level has the shape of the padded map, and its valid block is exactly the map
    the image gives when run alone, unpadded (the positions centred on the image)."""
    backbone = _resnet18(["res3", "res4", "res5"]).eval()
    neck = ChannelMapper(backbone.output_shape(), ["res3", "res4", "res5"], out_channels=8, num_outs=5, num_groups=2)
    pad_h, pad_w = 200, 136  # no multiple of 64 or 128
    with torch.no_grad():
        padded_maps = neck(backbone(torch.zeros(1, 3, pad_h, pad_w)))
        for h, w in [(200, 136), (129, 65), (97, 100), (64, 33), (31, 1), (1, 130)]:
            alone = neck(backbone(torch.zeros(1, 3, h, w)))
            mask = torch.ones(1, pad_h, pad_w, dtype=torch.bool)
            mask[0, :h, :w] = False
            for stride, padded_map, alone_map in zip(neck.strides, padded_maps, alone):
                level_mask = padding_mask_at_stride(mask, stride, padded_map.shape[-2:])
                assert _valid_extent(level_mask[0]) == tuple(alone_map.shape[-2:]), (h, w, stride)
