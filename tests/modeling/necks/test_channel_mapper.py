import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import BasicStem, ResNet
from torch import nn

from codetr.modeling.necks import ChannelMapper, masked_group_norm


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


def test_channel_mapper_ignores_padding():
    shapes = {"a": ShapeSpec(channels=6, stride=8), "b": ShapeSpec(channels=10, stride=16)}
    neck = ChannelMapper(shapes, ["a", "b"], out_channels=8, num_outs=4, num_groups=2)
    image = {"a": torch.randn(1, 6, 8, 4), "b": torch.randn(1, 10, 4, 2)}
    expected = neck(image)
    padded = {"a": torch.randn(1, 6, 16, 16), "b": torch.randn(1, 10, 8, 8)}
    padded["a"][:, :, :8, :4] = image["a"]
    padded["b"][:, :, :4, :2] = image["b"]
    mask = torch.ones(1, 128, 128, dtype=torch.bool)
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
