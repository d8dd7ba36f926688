"""detrex-dino and dino-official: source-format state dicts (exact keys and shapes, from
ckpt_source_formats) convert and load strictly into configs/dino/*; the layer mappings are checked
numerically against functional versions of the *source* layers."""
import os

import pytest
import torch
import torch.nn.functional as F
from detectron2.config import LazyConfig, instantiate

from codetr.checkpoint import convert, verify_state_dict
from codetr.layers import ms_deform_attn_reference
from codetr.modeling.decoders import DeformableDecoderLayer
from codetr.modeling.encoders import DeformableEncoderLayer, EncoderOutput

from ckpt_source_formats import Dims, co_dino_official, detrex_dino, dino_official, meta_shapes

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = {4: "configs/dino/dino_r50_4scale_12ep.py", 5: "configs/dino/dino_r50_5scale_12ep.py"}
GENERATORS = {"detrex-dino": detrex_dino, "dino-official": dino_official}


def _model_cfg(levels, overrides=()):
    cfg = LazyConfig.load(os.path.join(REPO, CONFIGS[levels]))
    return LazyConfig.apply_overrides(cfg, list(overrides)).model


def _meta_shapes(levels, overrides=()):
    return meta_shapes(os.path.join(REPO, CONFIGS[levels]), overrides)


@pytest.mark.parametrize("source", sorted(GENERATORS))
@pytest.mark.parametrize("levels", [4, 5])
def test_exact_format_converts_to_config_keys_and_shapes(source, levels):
    """Every key of the source format is mapped or dropped, and the result has exactly the
    keys and shapes of the config's model (zeros: names and shapes only)."""
    sd = GENERATORS[source](Dims(levels=levels), values="zeros")
    result = convert(source, sd, target=_meta_shapes(levels))
    dropped = {d.key for d in result.dropped}
    # nothing dropped except tied copies (and, for detrex, nothing else at all)
    assert all(d.reason.startswith("alias of ") for d in result.dropped)
    tied = ("transformer.decoder.class_embed.", "transformer.decoder.bbox_embed.")
    assert dropped == {k for k in sd if k.startswith(tied)}


@pytest.mark.parametrize("source", sorted(GENERATORS))
def test_drop_training_weights_loads_into_model_without_denoising(source):
    sd = GENERATORS[source](Dims(levels=4), values="zeros")
    result = convert(source, sd, drop_training_weights=True)
    assert "label_enc.weight" in {d.key for d in result.dropped}
    assert "model.denoising=null" in result.config_overrides
    verify_state_dict(result.state_dict, _meta_shapes(4, result.config_overrides))


def test_dino_official_r50_5scale_random_loads_strictly_and_keeps_values():
    """Full-size official 5-scale checkpoint with random values: strict load into the real
    model; spot-check values against the source tensors they come from."""
    sd = dino_official(Dims(levels=5), values="random", seed=1)
    result = convert("dino-official", sd)
    model = instantiate(_model_cfg(5, result.config_overrides))
    model.load_state_dict(result.state_dict, strict=True)
    msd = model.state_dict()
    assert torch.equal(msd["backbone.res5.2.conv3.norm.running_var"], sd["backbone.0.body.layer4.2.bn3.running_var"])
    assert torch.equal(msd["backbone.res2.0.shortcut.weight"], sd["backbone.0.body.layer1.0.downsample.0.weight"])
    assert torch.equal(msd["neck.extra_convs.0.conv.weight"], sd["input_proj.4.0.weight"])
    assert torch.equal(msd["neck.convs.0.norm.bias"], sd["input_proj.0.1.bias"])
    assert torch.equal(msd["transformer.level_embeds"], sd["transformer.level_embed"])
    for i in range(6):  # the shared head is copied to every layer
        ours = msd[f"transformer.decoder.bbox_embed.{i}.layers.2.weight"]
        assert torch.equal(ours, sd["bbox_embed.0.layers.2.weight"])
    assert model.position_embedding.temperature == 20 and model.position_embedding.offset == 0.0


def _functional_msda(w, prefix, query, ref_boxes, value, shapes, lsi, heads, levels, points):
    """Deformable attention from the source checkpoint's tensors (Deformable-DETR formulas)."""
    n, q, c = query.shape
    v = F.linear(value, w[prefix + "value_proj.weight"], w[prefix + "value_proj.bias"]).view(n, -1, heads, c // heads)
    off = F.linear(query, w[prefix + "sampling_offsets.weight"], w[prefix + "sampling_offsets.bias"])
    off = off.view(n, q, heads, levels, points, 2)
    att = F.linear(query, w[prefix + "attention_weights.weight"], w[prefix + "attention_weights.bias"])
    att = att.view(n, q, heads, levels * points).softmax(-1).view(n, q, heads, levels, points)
    if ref_boxes.shape[-1] == 4:
        loc = ref_boxes[:, :, None, :, None, :2] + off / points * ref_boxes[:, :, None, :, None, 2:] * 0.5
    else:
        norm = torch.stack([shapes[:, 1], shapes[:, 0]], -1).to(off)
        loc = ref_boxes[:, :, None, :, None, :] + off / norm[None, None, None, :, None, :]
    out = ms_deform_attn_reference(v, shapes, lsi, loc, att)
    return F.linear(out, w[prefix + "output_proj.weight"], w[prefix + "output_proj.bias"])


def _ln(x, w, p):
    return F.layer_norm(x, x.shape[-1:], w[p + "weight"], w[p + "bias"])


# Names of each source's decoder-layer tensors, as in the source code (post-norm layers).
MMCV_DEC = dict(sa="attentions.0.attn.", ca="attentions.1.", sa_norm="norms.0.", ca_norm="norms.1.",
                ffn_norm="norms.2.", fc1="ffns.0.layers.0.0.", fc2="ffns.0.layers.1.")
DEC_NAMES = {
    "co-detr": MMCV_DEC,
    "detrex-dino": dict(sa="attentions.0.attn.", ca="attentions.1.", sa_norm="norms.0.", ca_norm="norms.1.",
                        ffn_norm="norms.2.", fc1="ffns.0.layers.0.0.", fc2="ffns.0.layers.1."),
    "dino-official": dict(sa="self_attn.", ca="cross_attn.", sa_norm="norm2.", ca_norm="norm1.",
                          ffn_norm="norm3.", fc1="linear1.", fc2="linear2."),
}
ENC_NAMES = {
    "co-detr": dict(sa="attentions.0.", sa_norm="norms.0.", ffn_norm="norms.1.", fc1="ffns.0.layers.0.0.",
                    fc2="ffns.0.layers.1."),
    "detrex-dino": dict(sa="attentions.0.", sa_norm="norms.0.", ffn_norm="norms.1.", fc1="ffns.0.layers.0.0.",
                        fc2="ffns.0.layers.1."),
    "dino-official": dict(sa="self_attn.", sa_norm="norm1.", ffn_norm="norm2.", fc1="linear1.", fc2="linear2."),
}


def _ffn(w, names, x):
    h = F.linear(x, w[names["fc1"] + "weight"], w[names["fc1"] + "bias"]).relu()
    return x + F.linear(h, w[names["fc2"] + "weight"], w[names["fc2"] + "bias"])


def _source_decoder_layer(w, names, tgt, query_pos, ref, memory, shapes, lsi, dims):
    """self-attn -> norm -> deformable cross-attn -> norm -> FFN -> norm, from the source tensors."""
    q = (tgt + query_pos).transpose(0, 1)
    sa = names["sa"]
    attn = F.multi_head_attention_forward(
        q, q, tgt.transpose(0, 1), dims.d, dims.heads, w[sa + "in_proj_weight"], w[sa + "in_proj_bias"],
        None, None, False, 0.0, w[sa + "out_proj.weight"], w[sa + "out_proj.bias"], training=False, need_weights=False,
    )[0].transpose(0, 1)
    tgt = _ln(tgt + attn, w, names["sa_norm"])
    ca = _functional_msda(w, names["ca"], tgt + query_pos, ref, memory, shapes, lsi, dims.heads, dims.levels,
                          dims.points)
    tgt = _ln(tgt + ca, w, names["ca_norm"])
    return _ln(_ffn(w, names, tgt), w, names["ffn_norm"])


def _source_encoder_layer(w, names, src, pos, ref, shapes, lsi, dims):
    sa = _functional_msda(w, names["sa"], src + pos, ref, src, shapes, lsi, dims.heads, dims.levels, dims.points)
    src = _ln(src + sa, w, names["sa_norm"])
    return _ln(_ffn(w, names, src), w, names["ffn_norm"])


def _sub(sd, prefix):
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


# source -> (generator, source transformer prefix, converted transformer prefix)
LAYER_CASES = {
    "detrex-dino": (detrex_dino, "transformer.", "transformer."),
    "dino-official": (dino_official, "transformer.", "transformer."),
    "co-detr": (co_dino_official, "query_head.transformer.", "detector.transformer."),
}


@pytest.mark.parametrize("source", sorted(LAYER_CASES))
def test_converted_layers_compute_what_the_source_layers_compute(source):
    """Our encoder/decoder layers loaded from the converted tensors equal functional versions
    of the source layers on the source tensors (catches swapped norms / projections)."""
    gen, src_t, dst_t = LAYER_CASES[source]
    dims = Dims(levels=4, enc_layers=2, dec_layers=2, d=32, ffn=48, heads=4, points=2, queries=10,
                resnet="resnet18" if source == "dino-official" else "resnet50")
    sd = gen(dims, values="random", seed=3)
    out = convert(source, sd).state_dict
    torch.manual_seed(0)
    shapes = torch.tensor([[6, 5], [3, 3], [2, 2], [1, 1]])
    lsi = torch.cat([shapes.new_zeros(1), shapes.prod(1).cumsum(0)[:-1]])
    s = int(shapes.prod(1).sum())
    memory, pos = torch.randn(2, s, dims.d), torch.randn(2, s, dims.d)
    ref_pts = torch.rand(2, s, dims.levels, 2)
    tgt, query_pos = torch.randn(2, 7, dims.d), torch.randn(2, 7, dims.d)
    boxes = torch.cat([torch.rand(2, 7, 2) * 0.6 + 0.2, torch.rand(2, 7, 2) * 0.3 + 0.05], -1)
    valid_ratios = torch.rand(2, dims.levels, 2) * 0.5 + 0.5
    # the per-level reference boxes the layer samples around: boxes in each level's padded frame
    ref_boxes = boxes[:, :, None] * torch.cat([valid_ratios, valid_ratios], -1)[:, None]
    enc = EncoderOutput(memory=memory, memory_mask=None, memory_pos=pos, spatial_shapes=shapes,
                        level_start_index=lsi, valid_ratios=valid_ratios, features=(), masks=())

    for i in range(dims.dec_layers):
        src_w = _sub(sd, f"{src_t}decoder.layers.{i}.")
        layer = DeformableDecoderLayer(dims.d, dims.heads, dims.levels, dims.points, dims.ffn).eval()
        layer.load_state_dict(_sub(out, f"{dst_t}decoder.layers.{i}."), strict=True)
        with torch.no_grad():
            ours = layer(tgt, query_pos, boxes, enc, None)
        ref = _source_decoder_layer(src_w, DEC_NAMES[source], tgt, query_pos, ref_boxes, memory, shapes, lsi, dims)
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-4)
    for i in range(dims.enc_layers):
        src_w = _sub(sd, f"{src_t}encoder.layers.{i}.")
        layer = DeformableEncoderLayer(dims.d, dims.heads, dims.levels, dims.points, dims.ffn).eval()
        layer.load_state_dict(_sub(out, f"{dst_t}encoder.layers.{i}."), strict=True)
        with torch.no_grad():
            ours = layer(memory, pos, ref_pts, shapes, lsi, None)
        ref = _source_encoder_layer(src_w, ENC_NAMES[source], memory, pos, ref_pts, shapes, lsi, dims)
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-4)
