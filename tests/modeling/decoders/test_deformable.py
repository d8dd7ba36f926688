"""The deformable decoder with Co-Deformable-DETR's options (given query positions fixed across
layers, no final norm) and the choice of query positions per group; checked against independent
computations."""
import pytest
import torch
import torch.nn.functional as F

from codetr.layers.position_encoding import PositionEmbeddingSine
from codetr.modeling.criterion import DETRCriterion
from codetr.modeling.decoders import DeformableDecoder
from codetr.modeling.encoders import DeformableEncoder
from codetr.modeling.meta_arch import DINO
from codetr.modeling.necks import ChannelMapper
from codetr.modeling.queries import QueryGroup
from codetr.modeling.queries.denoising import dino_denoising
from codetr.modeling.transformers import DeformableTransformer
from support.deformable import D, HEADS, K, decode, deformable_transformer, encode, logit, sine
from support.models import RES2_RES5, PatchBackbone


def test_decoder_given_query_pos_is_used_unchanged_and_heads_read_raw_outputs():
    tr = deformable_transformer()
    dec = tr.decoder
    assert dec.ref_point_head is None and dec.norm is None
    assert not any(n.startswith(("ref_point_head", "norm")) for n, _ in dec.named_parameters())
    for box in dec.bbox_embed:  # non-trivial refinement
        torch.nn.init.normal_(box.layers[-1].weight, std=0.5)
    enc = encode(tr, pad=True)
    g = torch.Generator().manual_seed(3)
    tgt, pos = torch.randn(1, 5, D, generator=g), torch.randn(1, 5, D, generator=g)
    ref = torch.rand(1, 5, 4, generator=g) * 0.5 + 0.25
    seen, outs = [], []
    for layer in dec.layers:
        layer.register_forward_pre_hook(lambda m, args: seen.append(args[1]))
        layer.register_forward_hook(lambda m, args, out: outs.append(out))
    out = decode(tr, enc, [QueryGroup(tgt, ref, pos)])
    assert len(seen) == 2 and all(p is pos for p in seen)  # the very same tensor at every layer
    # heads on the raw layer outputs, look-forward-twice references
    r0 = ref
    r1 = (dec.bbox_embed[0](outs[0]) + logit(r0)).sigmoid()
    for i, (o, r) in enumerate(zip(outs, (r0, r1))):
        torch.testing.assert_close(out["hidden"][i], o)
        torch.testing.assert_close(out["logits"][i], F.linear(o, dec.class_embed[i].weight, dec.class_embed[i].bias))
        torch.testing.assert_close(out["boxes"][i], (dec.bbox_embed[i](o) + logit(r)).sigmoid())
    # a different query_pos changes the outputs (it is used), none is an error
    assert not torch.allclose(decode(tr, enc, [QueryGroup(tgt, ref, pos + 1)])["logits"], out["logits"])
    with pytest.raises(ValueError, match="query_pos"):
        decode(tr, enc, [QueryGroup(tgt, ref)])


def test_query_positions_are_chosen_per_group_and_options_are_checked():
    layer = dict(embed_dim=D, num_heads=HEADS, num_levels=2, num_points=2, ffn_dim=48)
    dec = DeformableDecoder(1, num_classes=K, **layer)
    # a decoder with a ref_point_head: a group with its own positions keeps them, a group without
    # takes ref_point_head(reference)
    dino_style = DeformableTransformer(DeformableEncoder(1, **layer), dec, num_feature_levels=2, num_queries=4,
                                       embed_dim=D, num_classes=K)
    enc = encode(dino_style)
    g = torch.Generator().manual_seed(4)
    ref_a, ref_b = torch.rand(1, 3, 4, generator=g) * 0.5 + 0.25, torch.rand(1, 2, 4, generator=g) * 0.5 + 0.25
    pos_b = torch.randn(1, 2, D, generator=g)
    seen = []
    dec.layers[0].register_forward_pre_hook(lambda m, args: seen.append(args[1]))
    dec([QueryGroup(torch.randn(1, 3, D, generator=g), ref_a), QueryGroup(torch.randn(1, 2, D, generator=g), ref_b,
                                                                           pos_b)], enc)
    e = sine(ref_a, D // 2)  # DINO's order: y, x, w, h
    e = torch.cat([e[..., D // 2:D], e[..., :D // 2], e[..., D:]], -1)
    head = dec.ref_point_head.layers
    torch.testing.assert_close(seen[0][:, :3], head[1](head[0](e).relu()), atol=1e-5, rtol=1e-4)
    assert torch.equal(seen[0][:, 3:], pos_b)
    with pytest.raises(ValueError, match="coordinates"):
        dec([QueryGroup(torch.zeros(1, 2, D), torch.full((1, 2, 2), 0.5))], enc)
    # the decoder decides who computes the matching positions: pos_trans exists only without ref_point_head
    assert not dino_style.proposal_positions and not hasattr(dino_style, "pos_trans")
    assert dino_style.select_queries(enc)[0].query_pos is None
    assert deformable_transformer().proposal_positions and hasattr(deformable_transformer(), "pos_trans")
    backbone = PatchBackbone(levels=RES2_RES5)
    with pytest.raises(ValueError, match="denoising queries take their positions from the decoder's ref_point_head"):
        DINO(backbone=backbone, position_embedding=PositionEmbeddingSine(D // 2, normalize=True),
             neck=ChannelMapper(backbone.output_shape(), ["res4", "res5"], D, num_outs=2, num_groups=8),
             transformer=deformable_transformer(), criterion=DETRCriterion(K), denoising=dino_denoising(K, D, 10),
             num_classes=K)
    with pytest.raises(ValueError, match="select_by"):
        deformable_transformer(select_by="min")
