"""The QueryDecoder driver with a stub layer: the loop, refinement, look-forward-twice, shared
heads, per-group query positions, the attention mask, and the box coders on hand cases."""
import math

import pytest
import torch
from torch import nn

from codetr.modeling.decoders import BoxCoder, PointCoder, QueryDecoder
from codetr.modeling.queries import QueryGroup

C, K = 6, 3


def logit(x):
    return torch.log(x / (1 - x))


class StubLayer(nn.Module):
    """content + Linear(query_pos) + Linear(reference): records what it was given."""

    num_heads = 2

    def __init__(self, ref_dim=4):
        super().__init__()
        self.pos = nn.Linear(C, C)
        self.ref = nn.Linear(ref_dim, C)
        self.calls = []

    def forward(self, content, query_pos, reference, enc, attn_mask):
        self.calls.append({"query_pos": query_pos, "reference": reference, "enc": enc, "attn_mask": attn_mask})
        return content + self.pos(query_pos) + self.ref(reference)


class StubPosition(nn.Module):
    def __init__(self, ref_dim=4):
        super().__init__()
        self.proj = nn.Linear(ref_dim, C)

    def forward(self, reference):
        return self.proj(reference)


def box_mlp():
    return nn.Sequential(nn.Linear(C, C), nn.ReLU(), nn.Linear(C, 4))


def decoder(num_layers=3, ref_dim=4, shared=False, norm=False, refine=True, look_forward_twice=True, head=True):
    torch.manual_seed(0)
    layers = [StubLayer(ref_dim) for _ in range(num_layers)]
    cls = nn.Linear(C, K) if shared else [nn.Linear(C, K) for _ in range(num_layers)]
    box = box_mlp() if shared else [box_mlp() for _ in range(num_layers)]
    return QueryDecoder(layers, cls, box, box_coder=BoxCoder() if ref_dim == 4 else PointCoder(),
                        ref_point_head=StubPosition(ref_dim) if head else None,
                        norm=nn.LayerNorm(C) if norm else None, refine=refine,
                        look_forward_twice=look_forward_twice)


def group(q=4, ref_dim=4, seed=1, pos=False):
    g = torch.Generator().manual_seed(seed)
    return QueryGroup(torch.randn(2, q, C, generator=g), torch.rand(2, q, ref_dim, generator=g) * 0.6 + 0.2,
                      torch.randn(2, q, C, generator=g) if pos else None)


ENC = object()  # the driver hands the encoder output through untouched


@pytest.mark.parametrize("norm", [False, True])
@pytest.mark.parametrize("look_forward_twice", [True, False])
def test_loop_refinement_and_predictions(norm, look_forward_twice):
    dec = decoder(norm=norm, look_forward_twice=look_forward_twice)
    g = group()
    out = dec([g], ENC)
    assert out.logits.shape == (3, 2, 4, K) and out.boxes.shape == (3, 2, 4, 4) and out.hidden.shape == (3, 2, 4, C)
    # independent unrolling of the recurrence
    content, ref, prev = g.content, g.reference, g.reference
    for i, layer in enumerate(dec.layers):
        call = layer.calls[0]
        assert call["enc"] is ENC and call["attn_mask"] is None
        torch.testing.assert_close(call["reference"], ref)
        assert not call["reference"].requires_grad or i == 0
        pos = dec.ref_point_head(ref)
        torch.testing.assert_close(call["query_pos"], pos)
        o = content + layer.pos(pos) + layer.ref(ref)
        h = dec.norm(o) if norm else o
        torch.testing.assert_close(out.hidden[i], h)
        torch.testing.assert_close(out.logits[i], dec.class_embed[i](h))
        torch.testing.assert_close(out.boxes[i], torch.sigmoid(dec.bbox_embed[i](h) + logit(prev)))
        new = torch.sigmoid(dec.bbox_embed[i](o) + logit(ref))
        content, ref = o, new.detach()
        prev = new if look_forward_twice else ref


@pytest.mark.parametrize("look_forward_twice", [True, False])
def test_look_forward_twice_gradient_reaches_the_previous_box_head(look_forward_twice):
    dec = decoder(look_forward_twice=look_forward_twice)
    out = dec([group()], ENC)
    out.boxes[2].sum().backward()
    grad = dec.bbox_embed[1][2].weight.grad
    assert (grad is not None and grad.abs().sum() > 0) == look_forward_twice
    assert dec.bbox_embed[0][2].weight.grad is None or dec.bbox_embed[0][2].weight.grad.abs().sum() == 0


def test_no_refinement_with_points_and_shared_heads():
    """Conditional-DETR-style: 2-d reference points fixed for all layers, one shared head pair."""
    dec = decoder(ref_dim=2, shared=True, refine=False)
    g = group(ref_dim=2)
    out = dec([g], ENC)
    for i, layer in enumerate(dec.layers):
        assert torch.equal(layer.calls[0]["reference"], g.reference)
        h = out.hidden[i]
        torch.testing.assert_close(out.logits[i], dec.class_embed(h))
        delta = dec.bbox_embed(h)
        xy = torch.sigmoid(delta[..., :2] + logit(g.reference))
        torch.testing.assert_close(out.boxes[i], torch.cat([xy, torch.sigmoid(delta[..., 2:])], -1))
    # one copy of the shared heads' parameters
    assert sum(1 for n, _ in dec.named_parameters() if n.startswith("class_embed.")) == 2


def test_query_positions_chosen_per_group_and_mask_expanded():
    dec = decoder(num_layers=2)
    a, b = group(q=3, seed=1), group(q=2, seed=2, pos=True)
    mask = torch.zeros(2, 5, 5, dtype=torch.bool)
    mask[:, 3:, :3] = True
    mask[:, 0, 0] = True  # the diagonal is reopened
    dec([a, b], ENC, mask)
    for layer in dec.layers:
        call = layer.calls[0]
        torch.testing.assert_close(call["query_pos"][:, :3], dec.ref_point_head(call["reference"][:, :3]))
        assert torch.equal(call["query_pos"][:, 3:], b.query_pos)  # the same at every layer
        expected = mask.clone()
        expected[:, 0, 0] = False
        assert torch.equal(call["attn_mask"], expected.repeat_interleave(StubLayer.num_heads, 0))
    # all groups with positions: the decoder needs no ref_point_head
    no_head = decoder(num_layers=1, head=False)
    c = group(q=2, pos=True)
    no_head([c], ENC)
    assert no_head.layers[0].calls[0]["query_pos"] is c.query_pos


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="query_pos"):
        decoder(head=False)([group()], ENC)
    with pytest.raises(ValueError, match="2 coordinates"):
        decoder()([group(ref_dim=2)], ENC)
    with pytest.raises(ValueError, match="2 class_embed modules for 3 layers"):
        QueryDecoder([StubLayer() for _ in range(3)], [nn.Linear(C, K)] * 2, box_mlp())


def test_box_coder_hand_cases():
    coder = BoxCoder()
    ref = torch.tensor([[0.5, 0.25, 0.2, 0.5]])
    delta = torch.tensor([[math.log(3.0), 0.0, 0.0, -math.log(3.0)]])
    # logit(0.5) + log 3 -> 0.75; logit(0.5) - log 3 -> 0.25; the others unchanged
    torch.testing.assert_close(coder.decode(delta, ref), torch.tensor([[0.75, 0.25, 0.2, 0.25]]))
    torch.testing.assert_close(coder.refine(delta, ref), coder.decode(delta, ref))
    assert coder.from_boxes(ref) is ref and coder.ref_dim == 4


def test_point_coder_hand_cases():
    coder = PointCoder()
    point = torch.tensor([[0.5, 0.25]])
    delta = torch.tensor([[math.log(3.0), 0.0, 0.0, -math.log(3.0)]])
    # centre offsets from logit(point); width / height from 0: sigmoid(0) = 0.5, sigmoid(-log 3) = 0.25
    torch.testing.assert_close(coder.decode(delta, point), torch.tensor([[0.75, 0.25, 0.5, 0.25]]))
    torch.testing.assert_close(coder.refine(delta, point), torch.tensor([[0.75, 0.25]]))
    torch.testing.assert_close(coder.from_boxes(torch.tensor([[0.3, 0.6, 0.2, 0.1]])), torch.tensor([[0.3, 0.6]]))
    assert coder.ref_dim == 2
