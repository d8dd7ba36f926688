"""co-detr / mmdet-co-dino: exact-format Co-DINO state dicts (ckpt_source_formats) convert into
configs/co_dino (all weights) or configs/dino 5-scale (--drop-training-weights)."""
import os

import pytest
import torch

from codetr.checkpoint import SourceNotImplementedError, convert

from ckpt_source_formats import Dims, co_dino_official, meta_shapes

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CO_DINO = os.path.join(REPO, "configs/co_dino/co_dino_5scale_r50_12ep.py")
DINO5 = os.path.join(REPO, "configs/dino/dino_r50_5scale_12ep.py")
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


def test_co_deformable_detr_checkpoint_is_refused_clearly():
    sd = co_dino_official(Dims(levels=5, enc_layers=1, dec_layers=1, d=16, ffn=16, heads=2, points=1, queries=4),
                          values="zeros")
    sd["query_head.transformer.pos_trans.weight"] = torch.zeros(32, 32)
    with pytest.raises(SourceNotImplementedError, match="Co-Deformable-DETR"):
        convert("co-detr", sd)


def test_co_dino_config_has_the_official_position_embedding():
    from detectron2.config import LazyConfig

    cfg = LazyConfig.load(CO_DINO)
    # official Co-DINO: SinePositionalEncoding(num_feats=128, temperature=20, normalize=True), offset 0
    assert cfg.model.detector.position_embedding.temperature == 20
    assert cfg.model.detector.position_embedding.offset == 0.0
    assert cfg.model.detector.position_embedding.normalize
