"""co-detr / mmdet-co-dino: exact-format Co-DINO state dicts (ckpt_source_formats) convert into
configs/co_dino (all weights) or configs/dino 5-scale (--drop-training-weights); co-detr's
Co-Deformable-DETR state dicts into configs/co_deformable_detr or configs/dino 4-scale with
Deformable-DETR++ overrides."""
import math
import os

import pytest
import torch
import torch.nn.functional as F
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import LazyConfig, instantiate

from codetr.checkpoint import ShapeMismatchError, SourceNotImplementedError, UnknownKeyError, convert
from codetr.modeling.heads.base import AssignedSamples

from ckpt_source_formats import Dims, co_deformable_detr_official, co_dino_official, meta_shapes

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CO_DINO = os.path.join(REPO, "configs/co_dino/co_dino_5scale_r50_12ep.py")
DINO5 = os.path.join(REPO, "configs/dino/dino_r50_5scale_12ep.py")
CO_DEFORMABLE = os.path.join(REPO, "configs/co_deformable_detr/co_deformable_detr_r50_12ep.py")
DINO4 = os.path.join(REPO, "configs/dino/dino_r50_4scale_12ep.py")
CO_DEFORMABLE_DIMS = Dims(levels=4, queries=300)
SOURCES = {"co-detr": False, "mmdet-co-dino": True}


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_exact_format_converts_to_co_dino_config(source):
    sd = co_dino_official(Dims(levels=5), values="zeros", mmdet3=SOURCES[source])
    result = convert(source, sd)
    assert result.config_overrides == []  # the Co-DINO config has the official position embedding
    convert(source, sd, target=meta_shapes(CO_DINO, result.config_overrides))
    assert {d.key for d in result.dropped} == {k for k in sd if k.endswith("num_batches_tracked")}


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_drop_training_weights_gives_a_dino_5scale_checkpoint(source):
    sd = co_dino_official(Dims(levels=5), values="zeros", mmdet3=SOURCES[source])
    result = convert(source, sd, drop_training_weights=True)
    assert "model.nms=soft_nms" in result.config_overrides and "model.denoising=null" in result.config_overrides
    convert(source, sd, drop_training_weights=True, target=meta_shapes(DINO5, result.config_overrides))
    training = ("rpn_head.", "roi_head.", "bbox_head.", "query_head.downsample.",
                "query_head.transformer.aux_pos_trans", "query_head.label_embedding", "query_head.dn_generator.")
    expected = {k for k in sd if k.startswith(training) or k.endswith("num_batches_tracked")}
    assert {d.key for d in result.dropped} == expected


def test_values_land_where_the_source_uses_them():
    """Spot checks with random values, including the RPN anchor order (Detectron2 anchor j =
    size j // 3, ratio j % 3 is mmdet anchor ratio * 3 + size) and the bias-free neck convs."""
    dims = Dims(levels=5, enc_layers=1, dec_layers=2, d=32, ffn=32, heads=2, points=1, queries=5)
    sd = co_dino_official(dims, values="random", seed=4)
    out = convert("co-detr", sd).state_dict
    perm = [(j % 3) * 3 + j // 3 for j in range(9)]
    assert torch.equal(out["aux_heads.0.rpn.rpn_head.objectness_logits.weight"], sd["rpn_head.rpn_cls.weight"][perm])
    reg = sd["rpn_head.rpn_reg.bias"].view(9, 4)[perm].reshape(-1)
    assert torch.equal(out["aux_heads.0.rpn.rpn_head.anchor_deltas.bias"], reg)
    assert torch.equal(out["detector.neck.convs.2.conv.bias"], torch.zeros(32))
    assert torch.equal(out["detector.neck.extra_convs.0.norm.weight"], sd["neck.extra_convs.0.gn.weight"])
    pairs = {
        "detector.transformer.enc_bbox_embed.layers.2.weight": "query_head.reg_branches.2.4.weight",
        "detector.transformer.decoder.class_embed.1.bias": "query_head.cls_branches.1.bias",
        "detector.transformer.tgt_embed.weight": "query_head.transformer.query_embed.weight",
        "positive_queries.pos_trans_norm.1.weight": "query_head.transformer.aux_pos_trans_norm.1.weight",
        "aux_heads.1.cls_convs.1.bias": "bbox_head.0.cls_convs.0.gn.bias",
        "aux_heads.0.roi_heads.box_predictor.bbox_pred.weight": "roi_head.0.bbox_head.fc_reg.weight",
    }
    for ours, theirs in pairs.items():
        assert torch.equal(out[ours], sd[theirs]), ours


def test_mmdet_co_dino_refuses_a_co_deformable_detr_checkpoint():
    sd = co_deformable_detr_official(Dims(levels=4, enc_layers=1, dec_layers=1, d=16, ffn=16, heads=2, points=1,
                                          queries=4), values="zeros")
    with pytest.raises(SourceNotImplementedError, match="--source co-detr"):
        convert("mmdet-co-dino", sd)


# ----------------------------------------------------------------------------- Co-Deformable-DETR
def test_co_deformable_detr_exact_format_converts_to_its_config():
    sd = co_deformable_detr_official(CO_DEFORMABLE_DIMS, values="zeros")
    result = convert("co-detr", sd, target=meta_shapes(CO_DEFORMABLE))
    assert result.config_overrides == []  # the config has the official structure and position embedding
    assert {d.key for d in result.dropped} == {k for k in sd if k.endswith("num_batches_tracked")}
    assert result.state_dict["positive_queries.head_pos_embed.weight"].shape == (2, 1)


def test_co_deformable_detr_drop_training_weights_gives_a_dino_4scale_checkpoint():
    sd = co_deformable_detr_official(CO_DEFORMABLE_DIMS, values="zeros")
    result = convert("co-detr", sd, drop_training_weights=True)
    overrides = result.config_overrides
    assert {"model.num_queries=300", "model.denoising=null", "model.transformer.decoder.ref_point_head=False",
            "model.transformer.decoder.post_norm=False"} <= set(overrides)
    convert("co-detr", sd, drop_training_weights=True, target=meta_shapes(DINO4, overrides))
    training = ("rpn_head.", "roi_head.", "bbox_head.", "query_head.downsample.", "query_head.transformer.aux_pos_trans",
                "query_head.transformer.pos_feats_", "query_head.transformer.head_pos_embed")
    expected = {k for k in sd if k.startswith(training) or k.endswith("num_batches_tracked")}
    assert {d.key for d in result.dropped} == expected
    # the overridden DINO config is the Co-Deformable-DETR detector
    det = LazyConfig.load(CO_DEFORMABLE).model.detector
    dino = LazyConfig.apply_overrides(LazyConfig.load(DINO4), list(overrides)).model
    for path in ("transformer.select_by", "transformer.enc_outputs",
                 "transformer.decoder.ref_point_head", "transformer.decoder.post_norm", "criterion.binary_enc_loss",
                 "criterion.weight_class", "select_box_nums_for_evaluation", "nms", "denoising"):
        a, b = det, dino
        for part in path.split("."):
            a, b = a[part], b[part]
        assert a == b, path


def test_co_deformable_detr_errors_name_the_key():
    dims = Dims(levels=4, enc_layers=1, dec_layers=1, d=16, ffn=16, heads=2, points=1, queries=4)
    sd = co_deformable_detr_official(dims, values="zeros")
    sd["query_head.transformer.reference_points.weight"] = torch.zeros(2, 16)  # not in the two-stage model
    with pytest.raises(UnknownKeyError, match=r"query_head\.transformer\.reference_points\.weight"):
        convert("co-detr", sd)
    sd = co_deformable_detr_official(dims, values="zeros")
    sd["query_head.transformer.pos_trans.weight"] = torch.zeros(16, 32)  # Co-DINO-like 2C -> C
    with pytest.raises(ShapeMismatchError, match=r"query_head\.transformer\.pos_trans\.weight"):
        convert("co-detr", sd)
    sd = co_deformable_detr_official(CO_DEFORMABLE_DIMS, values="zeros")
    sd["query_head.transformer.head_pos_embed.weight"] = torch.zeros(2, 256)  # the "fixed" embedding
    with pytest.raises(ShapeMismatchError, match=r"positive_queries\.head_pos_embed\.weight"):
        convert("co-detr", sd, target=meta_shapes(CO_DEFORMABLE))


class RecordingCheckpointer(DetectionCheckpointer):
    """Keeps what fvcore's Checkpointer.load only logs: missing / unexpected / mis-shaped keys."""

    def _load_model(self, checkpoint):
        assert checkpoint["matching_heuristics"] is False
        self.incompatible = super()._load_model(checkpoint)
        return self.incompatible


def _official_sine(boxes, d):
    """Co-DETR's get_proposal_pos_embed(inverse_sigmoid(boxes)), written out: 4 x d/2 channels."""
    dim_t = 10000 ** (2 * (torch.arange(d // 2) // 2) / (d // 2))
    pos = boxes[..., None] * 2 * math.pi / dim_t
    return torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=-1).flatten(2)


def test_co_deformable_detr_random_loads_strictly_and_computes_like_the_source(tmp_path):
    """Random official weights (1 encoder / 1 decoder layer, FFN 64; otherwise full size) ->
    a DetectionCheckpointer file that loads into the instantiated config with no missing,
    unexpected or mis-shaped keys (and strictly); the query positions and positive queries of
    the loaded model equal the official formulas evaluated on the source tensors."""
    dims = Dims(levels=4, queries=300, enc_layers=1, dec_layers=1, ffn=64)
    sd = co_deformable_detr_official(dims, values="random", seed=5)
    result = convert("co-detr", sd)
    path = str(tmp_path / "co_deformable.pth")
    torch.save(result.checkpoint(), path)
    shrink = ["model.detector.transformer.encoder.num_layers=1", "model.detector.transformer.decoder.num_layers=1",
              "model.detector.transformer.encoder.ffn_dim=64", "model.detector.transformer.decoder.ffn_dim=64"]
    cfg = LazyConfig.apply_overrides(LazyConfig.load(CO_DEFORMABLE), shrink)
    torch.manual_seed(0)
    model = instantiate(cfg.model).eval()
    checkpointer = RecordingCheckpointer(model)
    checkpointer.load(path)
    bad = checkpointer.incompatible
    assert not bad.missing_keys and not bad.unexpected_keys and not bad.incorrect_shapes
    model.load_state_dict(torch.load(path, weights_only=True)["model"], strict=True)
    msd = model.state_dict()
    q, tr = "query_head.", "query_head.transformer."
    pairs = {
        "detector.transformer.tgt_embed.weight": q + "query_embedding.weight",
        "detector.transformer.pos_trans_norm.bias": tr + "pos_trans_norm.bias",
        "detector.transformer.enc_class_embed.weight": q + "cls_branches.1.weight",
        "detector.transformer.enc_bbox_embed.layers.1.bias": q + "reg_branches.1.2.bias",
        "detector.transformer.decoder.class_embed.0.bias": q + "cls_branches.0.bias",
        "detector.transformer.decoder.layers.0.norm3.weight": tr + "decoder.layers.0.norms.2.weight",
        "positive_queries.feat_trans_norm.1.weight": tr + "pos_feats_norm.1.weight",
        "aux_heads.1.scales.4.scale": "bbox_head.0.scales.4.scale",
        "downsample.norm.weight": q + "downsample.1.weight",
    }
    for ours, theirs in pairs.items():
        assert torch.equal(msd[ours], sd[theirs]), ours

    d, g = 256, torch.Generator().manual_seed(0)
    boxes = torch.rand(2, 7, 4, generator=g) * 0.8 + 0.1
    with torch.no_grad():
        # main queries: query_pos = pos_trans_norm(pos_trans(sine(box)))[..., :d]
        full = F.layer_norm(F.linear(_official_sine(boxes, d), sd[tr + "pos_trans.weight"], sd[tr + "pos_trans.bias"]),
                            (2 * d,), sd[tr + "pos_trans_norm.weight"], sd[tr + "pos_trans_norm.bias"])
        torch.testing.assert_close(model.detector.transformer.proposal_query_pos(boxes), full[..., :d],
                                   atol=1e-4, rtol=1e-4)
        # positive queries of head k: split(LN_k(Linear_k(sine))), content + LN_k(Linear_k(feat)), pos + embed[k]
        h, w = 100, 200
        xyxy = torch.cat([boxes[0, :, :2] - boxes[0, :, 2:] / 4, boxes[0, :, :2] + boxes[0, :, 2:] / 4], -1)
        xyxy = xyxy * torch.tensor([w, h, w, h])
        feats = torch.randn(7, d, generator=g)
        samples = AssignedSamples(pos_boxes=[xyxy], pos_labels=[torch.zeros(7, dtype=torch.long)], pos_targets=[xyxy],
                             neg_boxes=[xyxy[:2] + 1.0], pos_feats=[feats], neg_feats=[feats[:2]])
        for k in range(2):
            fixed = model.positive_queries(samples, k, [(h, w)])
            ref, n = fixed.ref_boxes[:, :7], 7
            out = F.layer_norm(F.linear(_official_sine(ref, d), sd[f"{tr}aux_pos_trans.{k}.weight"],
                                        sd[f"{tr}aux_pos_trans.{k}.bias"]),
                               (2 * d,), sd[f"{tr}aux_pos_trans_norm.{k}.weight"], sd[f"{tr}aux_pos_trans_norm.{k}.bias"])
            feat_q = F.layer_norm(F.linear(feats, sd[f"{tr}pos_feats_trans.{k}.weight"],
                                           sd[f"{tr}pos_feats_trans.{k}.bias"]),
                                  (d,), sd[f"{tr}pos_feats_norm.{k}.weight"], sd[f"{tr}pos_feats_norm.{k}.bias"])
            torch.testing.assert_close(fixed.query_pos[:, :n], out[..., :d] + sd[tr + "head_pos_embed.weight"][k],
                                       atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(fixed.content[:, :n], out[..., d:] + feat_q, atol=1e-4, rtol=1e-4)


def test_co_dino_config_has_the_official_position_embedding():
    from detectron2.config import LazyConfig

    cfg = LazyConfig.load(CO_DINO)
    # official Co-DINO: SinePositionalEncoding(num_feats=128, temperature=20, normalize=True), offset 0
    assert cfg.model.detector.position_embedding.temperature == 20
    assert cfg.model.detector.position_embedding.offset == 0.0
    assert cfg.model.detector.position_embedding.normalize
