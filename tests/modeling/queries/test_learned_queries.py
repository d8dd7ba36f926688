import pytest
import torch

from codetr.modeling.queries.denoising import dino_denoising, dn_detr_denoising
from codetr.modeling.queries.learned import LearnedAnchorQueries, LearnedPointQueries


def test_point_queries_reference_is_sigmoid_of_mlp_of_the_query_embedding():
    torch.manual_seed(0)
    q = LearnedPointQueries(5, 8)
    g = q(3)
    e = q.query_embed.weight
    l0, l1 = q.ref_point_head.layers
    expected = torch.sigmoid((e @ l0.weight.T + l0.bias).relu() @ l1.weight.T + l1.bias)
    assert g.reference.shape == (3, 5, 2) and g.content.shape == (3, 5, 8) and g.query_pos.shape == (3, 5, 8)
    torch.testing.assert_close(g.reference[2], expected)
    assert torch.equal(g.query_pos[1], e) and (g.content == 0).all()
    g.reference.sum().backward()
    assert q.query_embed.weight.grad.abs().sum() > 0


def test_anchor_queries_sigmoid_of_logits_and_initialisations():
    torch.manual_seed(1)
    q = LearnedAnchorQueries(4000, 8)
    g = q(2)
    assert g.query_pos is None and g.reference.shape == (2, 4000, 4) and (g.content == 0).all()
    torch.testing.assert_close(g.reference[1], q.refpoint_embed.weight.sigmoid())
    w = q.refpoint_embed.weight
    assert w.mean().abs() < 0.05 and (w.std() - 1).abs() < 0.05  # official: N(0, 1) logits
    r = LearnedAnchorQueries(4000, 8, random_xy=True)
    xy = r(1).reference[0, :, :2]
    assert xy.min() >= 0 and xy.max() <= 1
    # uniform in (0, 1) after the sigmoid (within the logit clamp of inverse_sigmoid)
    assert (xy.mean(0) - 0.5).abs().max() < 0.02 and ((xy < 0.25).float().mean() - 0.25).abs() < 0.02
    assert r.refpoint_embed.weight.requires_grad
    with pytest.raises(ValueError, match=r"expected \(8,\)"):
        q(1, content=torch.zeros(7))


def test_dn_detr_matching_content_is_unknown_row_with_indicator_zero():
    torch.manual_seed(2)
    gen = dn_detr_denoising(5, 8)
    content = gen.matching_content()
    assert content.shape == (8,) and content[-1] == 0
    assert torch.equal(content[:-1], gen.label_embedding.weight[5])
    g = LearnedAnchorQueries(3, 8)(2, content=content)
    assert torch.equal(g.content[1, 2], content)
    g.content.sum().backward()
    grad = gen.label_embedding.weight.grad
    assert grad[5].abs().sum() > 0 and grad[:5].abs().sum() == 0
    with pytest.raises(ValueError, match="only mode 'dn'"):
        dino_denoising(5, 8).matching_content()
