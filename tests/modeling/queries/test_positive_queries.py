"""Co-DETR's customized positive queries: slot counts, padding with negatives, subsampling,
coordinates of references and targets, content queries."""

import pytest
import torch

from codetr.modeling.heads.base import AssignedSamples
from codetr.modeling.queries.positive_queries import PositiveQueries, select_positive_queries
from support.deformable import sine
from support.queries import K, SIZES, make_samples


def test_count_is_most_positives_and_fewer_are_padded_with_negatives():
    sel = select_positive_queries(make_samples([3, 12], [20, 20]), SIZES, K, max_queries=300, min_queries=9)
    assert sel["labels"].shape == (2, 12)
    assert sel["valid"].all()
    assert sel["positive"].sum(1).tolist() == [3, 12]
    # the 9 padding slots of image 0 are negatives: "no object", no box target
    assert (sel["labels"][0, 3:] == K).all() and (sel["boxes"][0, 3:] == 0).all()
    assert not sel["positive"][0, 3:].any()


def test_minimum_count_and_padding_when_negatives_run_out():
    sel = select_positive_queries(make_samples([2, 1], [4, 30]), SIZES, K, max_queries=300, min_queries=9)
    assert sel["labels"].shape == (2, 9)
    assert sel["valid"].sum(1).tolist() == [6, 9]  # 2 positives + only 4 negatives; 1 + 8
    assert sel["positive"].sum(1).tolist() == [2, 1]
    # padded slots: reference 0.5 (zero logits) as DN padding
    torch.testing.assert_close(sel["ref_boxes"][0, 6:], torch.full((3, 4), 0.5))


def test_negatives_come_from_the_heads_negatives():
    samples = make_samples([2, 2], [15, 15])
    sel = select_positive_queries(samples, SIZES, K, 300, 9)
    scale = torch.tensor([200.0, 100.0, 200.0, 100.0])
    for b in range(2):
        neg = samples.neg_boxes[b] / scale
        neg_cxcywh = torch.stack([(neg[:, 0] + neg[:, 2]) / 2, (neg[:, 1] + neg[:, 3]) / 2,
                                  neg[:, 2] - neg[:, 0], neg[:, 3] - neg[:, 1]], 1)
        chosen = sel["ref_boxes"][b, 2:]
        dist = (chosen[:, None] - neg_cxcywh[None]).abs().amax(-1)
        assert (dist.min(1).values < 1e-5).all()
        assert len(set(dist.argmin(1).tolist())) == 7  # distinct negatives


def test_subsampling_keeps_consistent_random_subsets():
    samples = make_samples([40, 5], [10, 10])
    g = torch.Generator().manual_seed(0)
    sel = select_positive_queries(samples, SIZES, K, max_queries=10, min_queries=9, generator=g)
    assert sel["labels"].shape == (2, 10)
    assert sel["positive"][0].all()
    scale = torch.tensor([200.0, 100.0, 200.0, 100.0])
    # each slot of image 0 is one positive: its reference, label and target belong together
    pos = samples.pos_boxes[0] / scale
    cx = (pos[:, 0] + pos[:, 2]) / 2
    idx = (sel["ref_boxes"][0, :, 0][:, None] - cx[None]).abs().argmin(1)
    assert len(set(idx.tolist())) == 10
    assert idx.tolist() != list(range(10))  # a random subset, not the first ten
    assert torch.equal(sel["labels"][0], samples.pos_labels[0][idx])
    tgt = samples.pos_targets[0][idx] / scale
    expected = torch.stack([(tgt[:, 0] + tgt[:, 2]) / 2, (tgt[:, 1] + tgt[:, 3]) / 2,
                            tgt[:, 2] - tgt[:, 0], tgt[:, 3] - tgt[:, 1]], 1)
    torch.testing.assert_close(sel["boxes"][0], expected)
    g2 = torch.Generator().manual_seed(1)
    other = select_positive_queries(samples, SIZES, K, max_queries=10, min_queries=9, generator=g2)
    assert not torch.equal(other["ref_boxes"][0], sel["ref_boxes"][0])


def test_coordinates_hand_computed():
    samples = AssignedSamples(
        pos_boxes=[torch.tensor([[20.0, 10.0, 60.0, 50.0], [-40.0, -40.0, 88.0, 88.0]])],
        pos_labels=[torch.tensor([3, 1])],
        pos_targets=[torch.tensor([[24.0, 12.0, 64.0, 52.0], [0.0, 0.0, 50.0, 60.0]])],
        neg_boxes=[torch.zeros(0, 4)],
    )
    sel = select_positive_queries(samples, [(80, 160)], K, 300, 1)
    # image 160 wide, 80 high: cx = 40 / 160, cy = 30 / 80, w = 40 / 160, h = 40 / 80
    torch.testing.assert_close(sel["ref_boxes"][0, 0], torch.tensor([0.25, 0.375, 0.25, 0.5]))
    torch.testing.assert_close(sel["boxes"][0, 0], torch.tensor([44 / 160, 32 / 80, 40 / 160, 40 / 80]))
    # an anchor larger than the image: cxcywh (24/160, 24/80, 128/160, 128/80) -> clamped below 1
    # by the logit round trip (inverse_sigmoid eps 1e-3)
    ref = sel["ref_boxes"][0, 1]
    torch.testing.assert_close(ref[:3], torch.tensor([0.15, 0.3, 0.8]))
    assert 0.99 < ref[3] < 1.0
    assert sel["labels"][0].tolist() == [3, 1]


@pytest.mark.parametrize("with_feats", [False, True])
def test_content_queries(with_feats):
    torch.manual_seed(0)
    d = 16
    pq = PositiveQueries(num_heads=2, embed_dim=d, num_classes=K, max_queries=300, min_queries=9,
                         feat_dim=6 if with_feats else None)
    samples = make_samples([3, 1], [20, 3], feats=with_feats)
    g = torch.Generator().manual_seed(0)
    fixed = pq(samples, 1, SIZES, generator=g)
    assert fixed.num_groups == 1 and fixed.group_size == 9 and fixed.num_queries == 9
    expected = pq.pos_trans_norm[1](pq.pos_trans[1](sine(fixed.ref_boxes, d // 2)))
    if with_feats:
        g = torch.Generator().manual_seed(0)
        sel = select_positive_queries(samples, SIZES, K, 300, 9, generator=g)
        # the features follow their samples: image 0 slot 0 is positive 0 (no subsampling)
        torch.testing.assert_close(sel["feats"][0, :3], samples.pos_feats[0])
        expected = expected + pq.feat_trans_norm[1](pq.feat_trans[1](sel["feats"]))
    expected = expected * fixed.valid[..., None]
    torch.testing.assert_close(fixed.content, expected, atol=1e-5, rtol=1e-4)
    assert fixed.valid.sum(1).tolist() == [9, 4]
    assert (fixed.content[1, 4:] == 0).all()
    other = pq(samples, 0, SIZES, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(other.content, fixed.content)  # one projection per head


def test_feat_dim_without_features_is_an_error():
    pq = PositiveQueries(num_heads=1, embed_dim=8, num_classes=K, feat_dim=6)
    with pytest.raises(ValueError, match="features"):
        pq(make_samples([2], [9]), 0, SIZES[:1])
