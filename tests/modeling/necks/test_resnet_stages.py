import pytest
import torch
from detectron2.modeling.backbone import BasicStem, ResNet

from codetr.checkpoint.core import KeyMapper
from codetr.checkpoint.resnet import map_resnet
from codetr.modeling.necks.resnet_stages import resnet_stages


def _resnet(stages):
    return ResNet(BasicStem(3, 64, norm="FrozenBN"), stages, out_features=["res4", "res5"])


def test_default_stages_equal_detectron2s():
    ours = _resnet(resnet_stages(50, stride_in_1x1=False, norm="FrozenBN"))
    ref = _resnet(ResNet.make_default_stages(50, stride_in_1x1=False, norm="FrozenBN"))
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    assert ours.output_shape()["res5"].stride == 32


def _torchvision_into_ours(net, dilated):
    """torchvision ResNet-50 weights (BN statistics randomised) through the converters' map_resnet
    into ``resnet_stages(50, res5_dilation=...)`` with FrozenBN."""
    torch.manual_seed(0)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5), m.bias.normal_(std=0.1)
                m.running_mean.normal_(std=0.1), m.running_var.uniform_(0.5, 1.5)
    mapper = KeyMapper({k: v for k, v in net.state_dict().items() if "num_batches_tracked" not in k}, "test")
    map_resnet(mapper, "", "", drop_fc=True)
    weights, _ = mapper.finish()
    ours = _resnet(resnet_stages(50, res5_dilation=2 if dilated else 1, stride_in_1x1=False, norm="FrozenBN"))
    ours.load_state_dict(weights, strict=True)
    return ours.eval()


@pytest.mark.parametrize("dilated", [False, True])
def test_c5_and_dc5_equal_torchvisions_resnet50(dilated):
    """The DETR family's DC5 is torchvision's ``replace_stride_with_dilation=[False, False, True]``
    (the first res5 block undilated): the same weights give the same res5 as torchvision's."""
    import torchvision

    net = torchvision.models.resnet50(weights=None, replace_stride_with_dilation=[False, False, dilated]).eval()
    ours = _torchvision_into_ours(net, dilated)
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        ref = net.layer4(net.layer3(net.layer2(net.layer1(net.maxpool(net.relu(net.bn1(net.conv1(x))))))))
        out = ours(x)["res5"]
    assert out.shape[-2:] == ((6, 8) if dilated else (3, 4)) and ours.output_shape()["res5"].stride == (16 if dilated else 32)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    if dilated:
        assert ours.res5[0].conv2.dilation == (1, 1) and [b.conv2.dilation for b in ours.res5[1:]] == [(2, 2)] * 2


def test_dc5_of_basic_blocks_dilates_the_later_res5_block():
    dc5 = _resnet(resnet_stages(18, res5_dilation=2, norm="BN"))
    c5 = _resnet(resnet_stages(18, norm="BN"))
    assert {k: v.shape for k, v in dc5.state_dict().items()} == {k: v.shape for k, v in c5.state_dict().items()}
    assert dc5.output_shape()["res5"].stride == 16
    dc5.eval()
    with torch.no_grad():
        out = dc5(torch.zeros(1, 3, 64, 96))
    assert out["res5"].shape[-2:] == out["res4"].shape[-2:] == (4, 6)
    first, second = dc5.res5
    assert first.conv1.stride == first.shortcut.stride == (1, 1) and first.conv1.dilation == first.conv2.dilation == (1, 1)
    assert second.conv1.dilation == second.conv2.dilation == (2, 2) and second.conv1.padding == second.conv2.padding == (2, 2)
    assert all(c.dilation == (1, 1) for b in dc5.res4 for c in (b.conv1, b.conv2))


def test_bad_arguments():
    with pytest.raises(ValueError, match="depth=42"):
        resnet_stages(42)
    with pytest.raises(ValueError, match="res5_dilation=3"):
        resnet_stages(18, res5_dilation=3)
