"""DN on 2-d reference points (DN on Conditional DETR): only the centres are noised."""
import pytest
import torch

from codetr.modeling.coders import PointCoder
from codetr.modeling.queries.denoising import DenoisingGenerator, apply_centre_noise, dn_detr_denoising

NUM_CLASSES = 5
DIM = 8


def test_apply_centre_noise_moves_centres_within_bound_and_keeps_sizes():
    torch.manual_seed(0)
    boxes = torch.tensor([[0.5, 0.4, 0.2, 0.1], [0.3, 0.7, 0.06, 0.3]]).repeat(5000, 1)
    noised = apply_centre_noise(boxes, 0.4)
    assert torch.equal(noised[:, 2:], boxes[:, 2:])  # sizes untouched, exactly
    shift = (noised[:, :2] - boxes[:, :2]).abs()
    bound = 0.4 * boxes[:, 2:] / 2  # |dx| < 0.4 * w / 2, |dy| < 0.4 * h / 2
    assert (shift <= bound + 1e-7).all()
    assert ((shift / bound).amax(0) > 0.99).all()  # uniform over the whole range
    assert ((noised[:, :2] - boxes[:, :2]) / bound).mean(0).abs().max() < 0.03  # symmetric
    # clamped to the image
    edge = torch.tensor([[0.01, 0.99, 0.5, 0.5]]).repeat(1000, 1)
    out = apply_centre_noise(edge, 1.0)
    assert out[:, :2].min() >= 0 and out[:, :2].max() <= 1 and (out[:, 0] == 0).any()


def test_generator_centre_only_noise_for_point_decoders():
    torch.manual_seed(1)
    gen = dn_detr_denoising(NUM_CLASSES, DIM, num_groups=400, label_noise_scale=0.2, noise_sizes=False)
    targets = [
        {"labels": torch.tensor([2, 4]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.1], [0.3, 0.6, 0.1, 0.3]])},
        {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.7, 0.2, 0.3, 0.2]])},
    ]
    dn = gen(targets)
    assert dn.num_groups == 400 and dn.group_size == 2
    v = dn.valid
    # sizes of the references untouched (up to the logit round trip), centres noised within bound
    torch.testing.assert_close(dn.ref_boxes[..., 2:][v], dn.boxes[..., 2:][v], atol=1e-6, rtol=0)
    shift = (dn.ref_boxes[..., :2] - dn.boxes[..., :2]).abs()[v]
    assert (shift <= 0.4 * dn.boxes[..., 2:][v] / 2 + 1e-6).all()
    assert (shift > 1e-4).float().mean() > 0.99
    # targets are the clean boxes and labels
    for b, t in enumerate(targets):
        n = len(t["labels"])
        for g in (0, 399):
            assert torch.equal(dn.labels[b, g * 2:g * 2 + n], t["labels"])
            assert torch.equal(dn.boxes[b, g * 2:g * 2 + n], t["boxes"])
    # a point decoder's reference: the noised centre
    points = PointCoder().from_boxes(dn.ref_boxes)
    assert torch.equal(points, dn.ref_boxes[..., :2])
    # labels flipped at the configured rate (a flip may redraw the same class: 0.2 * 4 / 5),
    # read back from the content; indicator bit 1
    assert (dn.content[..., -1][v] == 1).all()
    with torch.no_grad():
        noised = torch.cdist(dn.content[..., :-1][v], gen.label_embedding.weight).argmin(-1)
    assert noised.max() < NUM_CLASSES  # never the "unknown" row
    rate = (noised != dn.labels[v]).float().mean().item()
    assert rate == pytest.approx(0.2 * 4 / 5, abs=0.02)


def test_sizes_are_noised_by_default():
    torch.manual_seed(2)
    dn = dn_detr_denoising(NUM_CLASSES, DIM, num_groups=50)(
        [{"labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}]
    )
    assert (dn.ref_boxes[0, :, 2:] - 0.2).abs().max() > 0.05


def test_centre_only_noise_needs_dn_mode():
    with pytest.raises(ValueError, match="noise_sizes=False with mode='cdn'"):
        DenoisingGenerator(NUM_CLASSES, DIM, mode="cdn", noise_sizes=False)
