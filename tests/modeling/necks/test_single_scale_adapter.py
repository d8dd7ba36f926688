import pytest
import torch
import torch.nn.functional as F

from codetr.modeling.necks import SingleScalePyramidAdapter


def _conv_gn(conv_gn, x, stride):
    y = F.conv2d(x, conv_gn.conv.weight, conv_gn.conv.bias, stride=stride, padding=1)
    return F.group_norm(y, conv_gn.norm.num_groups, conv_gn.norm.weight, conv_gn.norm.bias, conv_gn.norm.eps)


def _randomise(m):
    torch.manual_seed(1)
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.2)


def test_levels_strides_and_explicit_computation_without_padding():
    adapter = SingleScalePyramidAdapter(16, in_stride=32, strides=(8, 16, 32, 64, 128), num_groups=4).double()
    _randomise(adapter)
    x = torch.randn(2, 16, 4, 6).double()
    mask = torch.zeros(2, 4, 6, dtype=torch.bool)
    out = adapter([x], [mask])
    assert [tuple(o.shape[-2:]) for o in out] == [(16, 24), (8, 12), (4, 6), (2, 3), (1, 2)]
    assert out[2] is x
    up = lambda t: F.interpolate(t, scale_factor=2.0, mode="bilinear", align_corners=False)  # noqa: E731
    p16 = _conv_gn(adapter.up_convs[0], up(x), 1)
    p8 = _conv_gn(adapter.up_convs[1], up(p16), 1)
    p64 = _conv_gn(adapter.down_convs[0], x, 2)
    p128 = _conv_gn(adapter.down_convs[1], p64, 2)
    for got, want in zip(out, [p8, p16, x, p64, p128]):
        torch.testing.assert_close(got, want)


def test_dc5_input_and_parameter_names():
    adapter = SingleScalePyramidAdapter(16, in_stride=16, num_groups=4)
    assert len(adapter.up_convs) == 1 and len(adapter.down_convs) == 3
    assert adapter.strides == [8, 16, 32, 64, 128]
    out = adapter([torch.randn(1, 16, 8, 8)], [torch.zeros(1, 8, 8, dtype=torch.bool)])
    assert [o.shape[-1] for o in out] == [16, 8, 4, 2, 1]


def test_padding_content_is_ignored_and_downsampled_levels_equal_single_image():
    adapter = SingleScalePyramidAdapter(16, in_stride=32, num_groups=4).double().eval()
    _randomise(adapter)
    single = torch.randn(1, 16, 4, 6).double()
    batch = torch.randn(2, 16, 8, 8).double()  # padding filled with noise
    batch[0, :, :4, :6] = single[0]
    mask = torch.ones(2, 8, 8, dtype=torch.bool)
    mask[0, :4, :6] = False
    mask[1, :8, :8] = False
    out = adapter([batch], [mask])
    noisy = batch.clone()
    noisy[0, :, 4:] += 5.0
    noisy[0, :, :, 6:] -= 3.0
    for level, (a, b) in enumerate(zip(out, adapter([noisy], [mask]))):
        if level != 2:  # (level 2 is the input itself) no other level reads the padded content
            torch.testing.assert_close(a[0], b[0])
    ref = adapter([single], [torch.zeros(1, 4, 6, dtype=torch.bool)])
    for level, (h, w) in zip((3, 4), ((2, 3), (1, 2))):
        torch.testing.assert_close(out[level][0, :, :h, :w], ref[level][0])


def test_bad_arguments():
    with pytest.raises(ValueError, match="in_stride=4"):
        SingleScalePyramidAdapter(16, in_stride=4, num_groups=4)
    with pytest.raises(ValueError, match="powers of two"):
        SingleScalePyramidAdapter(16, in_stride=32, strides=(8, 32, 64), num_groups=4)
    adapter = SingleScalePyramidAdapter(16, num_groups=4)
    with pytest.raises(ValueError, match="one encoder level"):
        adapter([torch.zeros(1, 16, 2, 2)] * 2, [torch.zeros(1, 2, 2, dtype=torch.bool)] * 2)
