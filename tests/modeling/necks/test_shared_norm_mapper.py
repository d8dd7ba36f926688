import pytest
import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec

from codetr.modeling.necks.shared_norm_mapper import SharedNormChannelMapper

SHAPES = {"res2": ShapeSpec(channels=3, stride=4), "res3": ShapeSpec(channels=5, stride=8)}


@pytest.mark.parametrize("kernel_size,activation", [(3, True), (1, False)])
def test_matches_conv_act_and_one_shared_group_norm(kernel_size, activation):
    torch.manual_seed(0)
    neck = SharedNormChannelMapper(SHAPES, ["res2", "res3"], out_channels=8, kernel_size=kernel_size,
                                   activation=activation, num_groups=4).double()
    with torch.no_grad():
        neck.norm.weight.normal_()
        neck.norm.bias.normal_()
    feats = {"res2": torch.randn(2, 3, 8, 6, dtype=torch.float64), "res3": torch.randn(2, 5, 4, 3, dtype=torch.float64)}
    outs = neck(feats)
    for name, conv, out in zip(["res2", "res3"], neck.convs, outs):
        x = F.conv2d(feats[name], conv.weight, conv.bias, padding=(kernel_size - 1) // 2)
        if activation:
            x = x.clamp_min(0)
        torch.testing.assert_close(out, F.group_norm(x, 4, neck.norm.weight, neck.norm.bias))
    assert [s.stride for s in neck.output_shape()] == [4, 8]
    assert len(list(neck.norm.parameters())) == 2  # one norm for all levels


@pytest.mark.parametrize("kernel_size", [3, 1])
def test_padding_does_not_change_the_image_region(kernel_size):
    """The padded positions hold arbitrary values (a backbone's outputs there are not zero)."""
    torch.manual_seed(1)
    neck = SharedNormChannelMapper(SHAPES, ["res2", "res3"], out_channels=8, kernel_size=kernel_size,
                                   num_groups=4).double()
    alone = {"res2": torch.randn(1, 3, 4, 4, dtype=torch.float64), "res3": torch.randn(1, 5, 2, 2, dtype=torch.float64)}
    padded = {"res2": torch.randn(1, 3, 8, 6, dtype=torch.float64),
              "res3": torch.randn(1, 5, 4, 3, dtype=torch.float64)}
    padded["res2"][..., :4, :4] = alone["res2"]
    padded["res3"][..., :2, :2] = alone["res3"]
    mask = torch.ones(1, 32, 24, dtype=torch.bool)
    mask[:, :16, :16] = False
    a = neck(alone)
    b = neck(padded, mask)
    # masked_group_norm takes its statistics in float32 (GroupNorm's own are float64 here)
    torch.testing.assert_close(b[0][..., :4, :4], a[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b[1][..., :2, :2], a[1], atol=1e-5, rtol=1e-5)
