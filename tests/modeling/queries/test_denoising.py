import pytest
import torch

from codetr.modeling.queries.denoising import (
    DenoisingGenerator,
    apply_centre_size_noise,
    apply_corner_noise,
    centre_size_noise_offsets,
    corner_noise_offsets,
    dino_denoising,
    dn_detr_denoising,
    dynamic_num_groups,
    flip_labels,
)
from codetr.modeling.queries.fixed_target import build_query_attention_mask

NUM_CLASSES = 7
DIM = 8


def make_targets(counts, seed=0):
    g = torch.Generator().manual_seed(seed)
    targets = []
    for n in counts:
        centre = torch.rand(n, 2, generator=g) * 0.4 + 0.3
        size = torch.rand(n, 2, generator=g) * 0.2 + 0.05
        targets.append(
            {"labels": torch.randint(0, NUM_CLASSES, (n,), generator=g), "boxes": torch.cat([centre, size], 1)}
        )
    return targets


def cxcywh_to_xyxy(b):
    return torch.cat([b[..., :2] - b[..., 2:] / 2, b[..., :2] + b[..., 2:] / 2], -1)


# ----------------------------------------------------------------------------- groups and layout
@pytest.mark.parametrize("num_dn_queries,max_gt,expected", [(100, 3, 33), (100, 1, 100), (100, 100, 1), (100, 250, 1), (100, 0, 1)])
def test_dynamic_num_groups(num_dn_queries, max_gt, expected):
    assert dynamic_num_groups(num_dn_queries, max_gt) == expected


def test_cdn_group_count_and_layout():
    targets = make_targets([3, 1])
    gen = dino_denoising(NUM_CLASSES, DIM, num_dn_queries=10)
    dn = gen(targets)
    assert dn.num_groups == 10 // 3 and dn.group_size == 2 * 3
    n = dn.num_groups * dn.group_size
    assert dn.num_queries == n
    assert dn.content.shape == (2, n, DIM) and dn.ref_boxes.shape == (2, n, 4)
    assert dn.labels.shape == (2, n) and dn.boxes.shape == (2, n, 4)
    # per group: 3 positive slots then 3 negative slots; image 1 has one box -> slots 1, 2, 4, 5 padded
    group_valid = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 0, 0, 1, 0, 0]], dtype=torch.bool)
    group_positive = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]], dtype=torch.bool)
    assert torch.equal(dn.valid, group_valid.repeat(1, dn.num_groups))
    assert torch.equal(dn.positive, group_positive.repeat(1, dn.num_groups))


def test_cdn_targets_are_the_clean_ground_truth():
    targets = make_targets([3, 2], seed=1)
    dn = dino_denoising(NUM_CLASSES, DIM, num_dn_queries=6, label_noise_ratio=1.0)(targets)
    for b, t in enumerate(targets):
        n = len(t["labels"])
        for g in range(dn.num_groups):
            pos = slice(g * 6, g * 6 + n)
            neg = slice(g * 6 + 3, g * 6 + 3 + n)
            assert torch.equal(dn.labels[b, pos], t["labels"])  # targets are not label-noised
            torch.testing.assert_close(dn.boxes[b, pos], t["boxes"])
            assert (dn.labels[b, neg] == NUM_CLASSES).all()  # negatives: "no object"
            assert (dn.boxes[b, neg] == 0).all()


def test_padding_slots_are_empty():
    dn = dino_denoising(NUM_CLASSES, DIM, num_dn_queries=8)(make_targets([4, 2]))
    pad = ~dn.valid
    assert pad.sum() == dn.num_groups * 2 * 2  # image 1 misses 2 positive + 2 negative slots per group
    assert (dn.content[pad] == 0).all()
    assert (dn.ref_boxes[pad] == 0.5).all()
    assert (dn.labels[pad] == NUM_CLASSES).all()
    assert (dn.boxes[pad] == 0).all()
    assert not dn.positive[pad].any()


def test_zero_box_image_in_batch():
    dn = dino_denoising(NUM_CLASSES, DIM)(make_targets([0, 2]))
    assert dn.num_groups == 50 and dn.group_size == 4
    assert not dn.valid[0].any() and (dn.content[0] == 0).all()
    assert dn.valid[1].all()


@pytest.mark.parametrize("gen, group_size", [(dino_denoising(NUM_CLASSES, DIM), 2),
                                             (dn_detr_denoising(NUM_CLASSES, DIM), 1),
                                             (dn_detr_denoising(NUM_CLASSES, DIM, noise_sizes=False), 1)])
def test_batch_without_boxes_gives_one_group_of_padding(gen, group_size):
    """No box in the batch: one group of padding slots (no loss), whose content still comes from
    the label embedding (zero gradient), so that a worker without boxes runs the same modules as
    the others (DDP, issue 19)."""
    dn = gen(make_targets([0, 0]))
    assert dn.num_groups == 1 and dn.group_size == group_size and dn.num_queries == group_size
    assert dn.content.shape == (2, group_size, DIM) and not dn.valid.any() and not dn.positive.any()
    assert (dn.content == 0).all() and (dn.ref_boxes == 0.5).all() and (dn.boxes == 0).all()
    assert (dn.labels == NUM_CLASSES).all()
    dn.content.sum().backward()
    grad = gen.label_embedding.weight.grad
    assert grad is not None and (grad == 0).all()
    # the attention mask: the padding slot sees only itself, the matching queries never see it
    mask = dn.attn_mask(3)
    assert mask.shape == (2, group_size + 3, group_size + 3)
    assert mask[:, group_size:, :group_size].all() and not mask[:, group_size:, group_size:].any()


def test_content_is_label_embedding_and_differentiable():
    gen = dino_denoising(NUM_CLASSES, DIM, num_dn_queries=4, label_noise_ratio=0.0)
    targets = make_targets([2], seed=3)
    dn = gen(targets)
    weight = gen.label_embedding.weight
    assert weight.shape == (NUM_CLASSES, DIM)
    expected = weight[targets[0]["labels"]].repeat(2 * dn.num_groups, 1).view(dn.num_groups, 2, 2, DIM)
    torch.testing.assert_close(dn.content[0].view(dn.num_groups, 2, 2, DIM), expected)
    dn.content.sum().backward()
    assert weight.grad is not None and weight.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- label noise
def test_flip_labels_rate():
    torch.manual_seed(0)
    labels = torch.randint(0, 10, (40000,))
    flipped = flip_labels(labels, 0.25, 10)
    assert flipped.min() >= 0 and flipped.max() < 10
    # a flip draws any class, the same one with probability 1/10
    rate = (flipped != labels).float().mean().item()
    assert rate == pytest.approx(0.25 * 0.9, abs=0.01)
    assert torch.equal(flip_labels(labels, 0.0, 10), labels)


def test_generator_label_flip_rate_dino_convention():
    """DINO: label_noise_ratio 0.5 -> flip probability 0.25; read the noised label back from the content."""
    torch.manual_seed(1)
    num_classes = 5
    gen = dino_denoising(num_classes, 16, num_dn_queries=2000, label_noise_ratio=0.5, box_noise_scale=0.0)
    targets = [{"labels": torch.tensor([2]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}]
    dn = gen(targets)
    with torch.no_grad():
        noised = torch.cdist(dn.content[0], gen.label_embedding.weight).argmin(-1)
    rate = (noised != 2).float().mean().item()
    assert rate == pytest.approx(0.25 * 4 / 5, abs=0.03)


# ----------------------------------------------------------------------------- box noise
def test_corner_noise_ranges():
    torch.manual_seed(2)
    n = 20000
    boxes = torch.cat([torch.rand(n, 2) * 0.5 + 0.25, torch.rand(n, 2) * 0.3 + 0.01], 1)
    negative = torch.arange(n) % 2 == 1
    scale = 0.4
    offsets = corner_noise_offsets(boxes, negative, scale)
    half = torch.cat([boxes[:, 2:], boxes[:, 2:]], 1) / 2
    ratio = offsets.abs() / (half * scale)  # in units of lambda * half size
    assert (ratio[~negative] < 1).all() and ratio[~negative].min() < 0.01
    assert (ratio[negative] >= 1 - 1e-6).all() and (ratio[negative] < 2 + 1e-6).all()
    assert ratio[negative].max() > 1.99
    assert (offsets > 0).float().mean().item() == pytest.approx(0.5, abs=0.02)  # random sign


def test_reference_boxes_are_valid_even_for_crossed_negatives():
    torch.manual_seed(7)
    targets = make_targets([5, 3], seed=8)
    dn = dino_denoising(NUM_CLASSES, DIM, num_dn_queries=100, box_noise_scale=1.0)(targets)
    # negatives at scale 1 often cross their corners (w or h <= 0): the logit round trip clamps
    assert dn.ref_boxes.min() >= 1e-3 - 1e-6 and dn.ref_boxes.max() <= 1 - 1e-3 + 1e-6
    assert not dn.ref_boxes.requires_grad


def test_corner_noise_is_clamped_to_image():
    torch.manual_seed(3)
    boxes = torch.tensor([[0.05, 0.95, 0.1, 0.1]]).repeat(1000, 1)
    noised = apply_corner_noise(boxes, torch.ones(1000, dtype=torch.bool), 1.0)
    xyxy = cxcywh_to_xyxy(noised)
    assert xyxy.min() >= -1e-6 and xyxy.max() <= 1 + 1e-6


def test_centre_size_noise_ranges():
    torch.manual_seed(4)
    n = 20000
    boxes = torch.cat([torch.rand(n, 2) * 0.5 + 0.25, torch.rand(n, 2) * 0.3 + 0.01], 1)
    scale = 0.4
    off = centre_size_noise_offsets(boxes, scale)
    wh = boxes[:, 2:]
    assert (off[:, :2].abs() < scale * wh / 2).all()  # centre stays inside the box
    assert (off[:, 2:].abs() < scale * wh).all()  # size in w * (1 +- lambda)
    assert (off[:, :2].abs() / (scale * wh / 2)).max() > 0.99
    noised = apply_centre_size_noise(boxes, scale)
    assert noised.min() >= 0 and noised.max() <= 1


def test_generator_positive_references_within_noise_bound():
    torch.manual_seed(5)
    scale = 0.4
    targets = [{"labels": torch.tensor([1, 3]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.1], [0.3, 0.6, 0.1, 0.3]])}]
    dn = dino_denoising(NUM_CLASSES, DIM, num_dn_queries=200, box_noise_scale=scale)(targets)
    pos = dn.positive[0]
    ref = cxcywh_to_xyxy(dn.ref_boxes[0, pos])
    gt = cxcywh_to_xyxy(dn.boxes[0, pos])
    half = torch.cat([dn.boxes[0, pos, 2:], dn.boxes[0, pos, 2:]], 1) / 2
    assert ((ref - gt).abs() <= scale * half + 1e-5).all()
    assert not torch.allclose(ref, gt)


def test_zero_noise_reference_is_ground_truth():
    targets = make_targets([2, 1], seed=6)
    dn = dino_denoising(NUM_CLASSES, DIM, box_noise_scale=0.0)(targets)
    valid = dn.valid
    target_boxes = torch.cat([t["boxes"] for t in targets])
    ref = dn.ref_boxes[valid].view(-1, 4)
    # every valid slot (positive or negative) carries the clean box when the noise scale is 0
    assert all(any(torch.allclose(r, b, atol=1e-5) for b in target_boxes) for r in ref)


# ----------------------------------------------------------------------------- DN-DETR mode
def test_dn_detr_mode_indicator_and_groups():
    targets = make_targets([3, 1], seed=7)
    gen = dn_detr_denoising(NUM_CLASSES, DIM)
    assert gen.label_embedding.weight.shape == (NUM_CLASSES + 1, DIM - 1)
    assert gen.label_flip_prob == 0.2 and gen.box_noise_scale == 0.4
    dn = gen(targets)
    assert dn.num_groups == 5 and dn.group_size == 3
    assert dn.content.shape == (2, 15, DIM)
    assert torch.equal(dn.positive, dn.valid)  # no negatives
    assert (dn.content[..., -1][dn.valid] == 1).all()
    assert (dn.content[~dn.valid] == 0).all()
    assert torch.equal(dn.labels[0, :3], targets[0]["labels"])
    assert dn.labels[1, 1:3].eq(NUM_CLASSES).all()


def test_fixed_groups_do_not_depend_on_gt_count():
    gen = DenoisingGenerator(NUM_CLASSES, DIM, mode="cdn", num_dn_queries=None, fixed_num_groups=3)
    assert gen(make_targets([9])).num_groups == 3
    assert gen(make_targets([1])).num_groups == 3


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(mode="dab"),
        dict(num_dn_queries=100, fixed_num_groups=5),
        dict(num_dn_queries=None, fixed_num_groups=None),
        dict(num_dn_queries=0),
        dict(label_flip_prob=1.5),
        dict(box_noise_scale=-1.0),
    ],
)
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        DenoisingGenerator(NUM_CLASSES, DIM, **kwargs)


# ----------------------------------------------------------------------------- attention mask
def test_fixed_queries_attn_mask_method():
    dn = dino_denoising(NUM_CLASSES, DIM, num_dn_queries=4)(make_targets([2, 1]))
    mask = dn.attn_mask(5)
    total = dn.num_queries + 5
    assert mask.shape == (2, total, total)
    assert torch.equal(mask, build_query_attention_mask(dn.num_groups, dn.group_size, 5, dn.valid))
