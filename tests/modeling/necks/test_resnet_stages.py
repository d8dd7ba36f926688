import pytest
import torch
from detectron2.modeling.backbone import BasicStem, ResNet

from codetr.modeling.necks.resnet_stages import resnet_stages


def _resnet(stages):
    return ResNet(BasicStem(3, 64, norm="FrozenBN"), stages, out_features=["res4", "res5"])


def test_default_stages_equal_detectron2s():
    ours = _resnet(resnet_stages(50, stride_in_1x1=False, norm="FrozenBN"))
    ref = _resnet(ResNet.make_default_stages(50, stride_in_1x1=False, norm="FrozenBN"))
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    assert ours.output_shape()["res5"].stride == 32


def test_dc5_res5_stride_16_dilated_same_keys():
    dc5 = _resnet(resnet_stages(50, res5_dilation=2, stride_in_1x1=False, norm="FrozenBN"))
    c5 = _resnet(resnet_stages(50, stride_in_1x1=False, norm="FrozenBN"))
    assert {k: v.shape for k, v in dc5.state_dict().items()} == {k: v.shape for k, v in c5.state_dict().items()}
    assert dc5.output_shape()["res5"].stride == 16
    with torch.no_grad():
        out = dc5(torch.zeros(1, 3, 64, 96))
    assert out["res5"].shape[-2:] == out["res4"].shape[-2:] == (4, 6)
    convs = [b.conv2 for b in dc5.res5]
    assert all(c.dilation == (2, 2) and c.padding == (2, 2) for c in convs) and convs[0].stride == (1, 1)
    assert all(b.conv2.dilation == (1, 1) for b in dc5.res4)


def test_dc5_of_basic_blocks_dilates_both_convs_of_res5():
    dc5 = _resnet(resnet_stages(18, res5_dilation=2, norm="BN"))
    c5 = _resnet(resnet_stages(18, norm="BN"))
    assert {k: v.shape for k, v in dc5.state_dict().items()} == {k: v.shape for k, v in c5.state_dict().items()}
    assert dc5.output_shape()["res5"].stride == 16
    dc5.eval()
    with torch.no_grad():
        out = dc5(torch.zeros(1, 3, 64, 96))
    assert out["res5"].shape[-2:] == out["res4"].shape[-2:] == (4, 6)
    for b in dc5.res5:
        assert b.conv1.dilation == b.conv2.dilation == (2, 2) and b.conv1.padding == b.conv2.padding == (2, 2)
    assert dc5.res5[0].conv1.stride == (1, 1) and dc5.res5[0].shortcut.stride == (1, 1)
    assert all(c.dilation == (1, 1) for b in dc5.res4 for c in (b.conv1, b.conv2))


def test_bad_arguments():
    with pytest.raises(ValueError, match="depth=42"):
        resnet_stages(42)
    with pytest.raises(ValueError, match="res5_dilation=3"):
        resnet_stages(18, res5_dilation=3)
