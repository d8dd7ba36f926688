"""The DETR decoder against an independent reimplementation of facebookresearch/detr's
``TransformerDecoderLayer.forward_post`` / ``TransformerDecoder`` (return_intermediate) written
with explicit per-head matrix products on the same weights: positions added to queries and keys
only, post-norm, one shared final LayerNorm for every layer's output, boxes ``sigmoid(MLP)``."""
import math

import torch
import torch.nn.functional as F

from codetr.modeling.decoders import DETRDecoder, DETRDecoderLayer, DirectBoxCoder
from codetr.modeling.encoders.output import EncoderOutput
from codetr.modeling.queries import LearnedPositionQueries

C, M, FFN = 16, 4, 32


def mha(q_in, k_in, v_in, attn, key_padding_mask=None, attn_mask=None):
    """Standard multi-head attention from ``attn``'s packed in-projection, one head at a time."""
    wq, wk, wv = attn.in_proj_weight.chunk(3)
    bq, bk, bv = attn.in_proj_bias.chunk(3)
    q, k, v = q_in @ wq.T + bq, k_in @ wk.T + bk, v_in @ wv.T + bv
    d = C // M
    heads = []
    for h in range(M):
        sl = slice(h * d, (h + 1) * d)
        logits = q[..., sl] @ k[..., sl].transpose(-1, -2) / math.sqrt(d)  # (N, Q, S)
        if key_padding_mask is not None:
            logits = logits.masked_fill(key_padding_mask[:, None, :], float("-inf"))
        if attn_mask is not None:
            logits = logits.masked_fill(attn_mask, float("-inf"))
        heads.append(logits.softmax(-1) @ v[..., sl])
    return torch.cat(heads, -1) @ attn.out_proj.weight.T + attn.out_proj.bias


def reference_layer(layer, tgt, memory, pos, query_pos, memory_mask=None, attn_mask=None):
    """DETR's forward_post (relu, eval mode: no dropout)."""
    q = k = tgt + query_pos
    tgt = F.layer_norm(tgt + mha(q, k, tgt, layer.self_attn, attn_mask=attn_mask), (C,),
                       layer.norm1.weight, layer.norm1.bias)
    tgt2 = mha(tgt + query_pos, memory + pos, memory, layer.multihead_attn, key_padding_mask=memory_mask)
    tgt = F.layer_norm(tgt + tgt2, (C,), layer.norm2.weight, layer.norm2.bias)
    tgt2 = F.linear(F.relu(F.linear(tgt, layer.linear1.weight, layer.linear1.bias)), layer.linear2.weight,
                    layer.linear2.bias)
    return F.layer_norm(tgt + tgt2, (C,), layer.norm3.weight, layer.norm3.bias)


def randomize(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3 + (1.0 if p.dim() == 1 and p.shape[0] == C else 0.0))
    return module


def memory_inputs(seed=1, n=2, s=10):
    g = torch.Generator().manual_seed(seed)
    memory, pos = torch.randn(n, s, C, generator=g), torch.randn(n, s, C, generator=g)
    mask = torch.zeros(n, s, dtype=torch.bool)
    mask[1, 7:] = True  # the second image's last 3 memory positions are padding
    return memory, pos, mask


def test_layer_equals_the_official_computation():
    layer = randomize(DETRDecoderLayer(C, M, FFN, dropout=0.1)).eval()
    g = torch.Generator().manual_seed(2)
    tgt, query_pos = torch.randn(2, 5, C, generator=g), torch.randn(2, 5, C, generator=g)
    memory, pos, mask = memory_inputs()
    got = layer.attend(tgt, query_pos, memory, pos, mask)
    torch.testing.assert_close(got, reference_layer(layer, tgt, memory, pos, query_pos, mask), rtol=1e-5, atol=1e-5)
    # the positions enter queries and keys only: a value computed without them differs
    assert not torch.allclose(got, layer.attend(tgt, torch.zeros_like(query_pos), memory, pos, mask), atol=1e-3)
    # padded memory is never attended to
    changed = memory.clone()
    changed[1, 7:] = 100.0
    torch.testing.assert_close(layer.attend(tgt, query_pos, changed, pos, mask), got)
    # a self-attention mask (True = blocked) is applied as given
    block = torch.zeros(5, 5, dtype=torch.bool)
    block[0, 1:] = True
    torch.testing.assert_close(layer.attend(tgt, query_pos, memory, pos, mask, attn_mask=block),
                               reference_layer(layer, tgt, memory, pos, query_pos, mask, attn_mask=block),
                               rtol=1e-5, atol=1e-5)


def test_decoder_equals_the_official_stack():
    """Zero content and the query embedding at every layer; every layer's output goes through the
    one shared LayerNorm, then the shared heads: logits over K + 1, boxes sigmoid(MLP)."""
    torch.manual_seed(0)
    k = 3
    decoder = randomize(DETRDecoder(3, C, M, FFN, dropout=0.1, num_classes=k)).eval()
    queries = randomize(LearnedPositionQueries(6, C), seed=3)
    memory, pos, mask = memory_inputs()
    enc = EncoderOutput.from_levels([memory.transpose(1, 2).reshape(2, C, 2, 5)],
                                    [mask.reshape(2, 2, 5)], [pos.transpose(1, 2).reshape(2, C, 2, 5)])
    group = queries(2)
    assert group.reference.shape == (2, 6, 0) and torch.equal(group.content, torch.zeros(2, 6, C))
    with torch.no_grad():
        out = decoder([group], enc)
        query_pos = queries.query_embed.weight[None].expand(2, -1, -1)
        tgt = torch.zeros(2, 6, C)
        for i, layer in enumerate(decoder.layers):
            tgt = reference_layer(layer, tgt, memory, pos, query_pos, mask)
            hs = F.layer_norm(tgt, (C,), decoder.norm.weight, decoder.norm.bias)
            torch.testing.assert_close(out.hidden[i], hs, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(out.logits[i], hs @ decoder.class_embed.weight.T + decoder.class_embed.bias,
                                       rtol=1e-5, atol=1e-5)
            mlp = decoder.bbox_embed.layers
            box = mlp[2](F.relu(mlp[1](F.relu(mlp[0](hs))))).sigmoid()
            torch.testing.assert_close(out.boxes[i], box, rtol=1e-5, atol=1e-5)
    assert out.logits.shape == (3, 2, 6, k + 1)


def test_official_initialisation_and_names():
    torch.manual_seed(0)
    decoder = DETRDecoder(2, C, M, FFN, num_classes=5)
    names = {n for n, _ in decoder.named_parameters()}
    assert {"layers.0.self_attn.in_proj_weight", "layers.1.multihead_attn.out_proj.bias", "layers.0.norm3.weight",
            "norm.weight", "class_embed.weight", "bbox_embed.layers.2.bias"} <= names
    assert decoder.class_embed.out_features == 6
    for layer in decoder.layers:  # attention biases start at 0 (nn.MultiheadAttention), matrices xavier
        for attn in (layer.self_attn, layer.multihead_attn):
            assert torch.equal(attn.in_proj_bias, torch.zeros(3 * C))
            assert torch.equal(attn.out_proj.bias, torch.zeros(C))
            bound = math.sqrt(6 / (C + C))  # xavier-uniform bound of the (C, C) output projection
            assert attn.out_proj.weight.abs().max() <= bound
    # the class head keeps PyTorch's default initialisation: no focal prior on its bias
    assert decoder.class_embed.bias.abs().max() <= 1 / math.sqrt(C)


def test_direct_box_coder():
    coder = DirectBoxCoder()
    delta = torch.randn(2, 3, 4)
    torch.testing.assert_close(coder.decode(delta, delta[..., :0]), delta.sigmoid())
    assert coder.from_boxes(torch.rand(2, 3, 4)).shape == (2, 3, 0)
