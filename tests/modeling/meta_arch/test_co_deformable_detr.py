"""Co-Deformable-DETR (Deformable-DETR++ on the DINO framework): the binary encoder loss on all
positions, Co-Deformable positive queries with ``head_pos_embed``, and a training step of a tiny
Co-Deformable CoDETR (its decoder: tests/modeling/decoders/test_deformable.py; its query
selection: tests/modeling/queries/test_two_stage.py). Checked against independent computations."""
import pytest
import torch
import torch.nn.functional as F

from codetr.layers.position_encoding import PositionEmbeddingSine
from codetr.modeling.criterion import DETRCriterion
from codetr.modeling.decoders import DeformableDecoder
from codetr.modeling.encoders import DeformableEncoder
from codetr.modeling.heads.atss_head import ATSSHead
from codetr.modeling.heads.rcnn_aux import build_rcnn_aux_head
from codetr.modeling.heads.tood_head import TOODHead
from codetr.modeling.meta_arch import DINO, CoDETR
from codetr.modeling.necks import ChannelMapper
from codetr.modeling.queries.denoising import dino_denoising
from codetr.modeling.queries.positive_queries import PositiveQueries, select_positive_queries
from codetr.modeling.transformers import DeformableTransformer
from support.criterion import GT, expected_losses, focal, iou_giou
from support.deformable import D, K, sine
from support.matching import brute_force_assignment
from support.models import BATCH, RES2_RES5, PatchBackbone, make_input
from support.queries import SIZES, make_samples


# ----------------------------------------------------------------------------- binary encoder loss
# encoder outputs of 4 positions per image: position 1 fits ground truth 0 of image 0 in the box
# but scores class 2 (its true label); position 3 has a slightly worse box but scores class 0.
ENC_LOGITS = [
    [[-2.0, -2.0, -1.5], [-3.0, -2.0, 3.0], [2.0, -2.0, -2.0], [2.5, -2.0, -2.0]],
    [[-1.0, 2.0, -2.0], [1.5, -2.0, -1.0], [-2.0, -2.0, -2.0], [0.0, 0.0, 0.0]],
]
ENC_BOXES = [
    [[0.1, 0.1, 0.1, 0.1], [0.3, 0.3, 0.2, 0.2], [0.69, 0.61, 0.3, 0.2], [0.32, 0.28, 0.22, 0.2]],
    [[0.5, 0.5, 0.4, 0.4], [0.48, 0.52, 0.4, 0.38], [0.9, 0.9, 0.1, 0.1], [0.2, 0.2, 0.3, 0.3]],
]


def brute_force_matching(logits, boxes, targets):
    """{(b, q): (label, box) or None}: the minimum-cost injective assignment by enumeration
    (focal class cost 2, L1 5, GIoU 2), all queries listed."""
    out = {}
    for b, t in enumerate(targets):
        labels, gts = t["labels"].tolist(), t["boxes"].tolist()
        q = len(logits[b])

        def cost(qi, g):
            x = logits[b][qi][labels[g]]
            cls = focal(x, True) - focal(x, False)
            l1 = sum(abs(p - v) for p, v in zip(boxes[b][qi], gts[g]))
            return 2 * cls + 5 * l1 - 2 * iou_giou(boxes[b][qi], gts[g])[1]

        best, _ = brute_force_assignment(cost, q, len(gts))
        out.update({(b, qi): None for qi in range(q)})
        out.update({(b, qi): (labels[g], gts[g]) for g, qi in enumerate(best)})
    return out


def assert_losses(actual, expected, suffix=""):
    # rel 1e-4: the implementation's IoU has an eps of 1e-7 on unions of ~0.04 (small boxes)
    for name, value in expected.items():
        assert actual[name + suffix].item() == pytest.approx(value, rel=1e-4, abs=1e-6), name + suffix


def test_binary_encoder_loss_equals_loss_with_all_labels_zero():
    outputs = {
        "pred_logits": torch.tensor(ENC_LOGITS), "pred_boxes": torch.tensor(ENC_BOXES),
        "enc_outputs": {"pred_logits": torch.tensor(ENC_LOGITS), "pred_boxes": torch.tensor(ENC_BOXES)},
    }
    binary = DETRCriterion(K, binary_enc_loss=True)(outputs, GT)
    plain = DETRCriterion(K)(outputs, GT)
    zero = [{"labels": torch.zeros_like(t["labels"]), "boxes": t["boxes"]} for t in GT]
    zero_matching = brute_force_matching(ENC_LOGITS, ENC_BOXES, zero)
    true_matching = brute_force_matching(ENC_LOGITS, ENC_BOXES, GT)
    assert zero_matching != true_matching  # the labels change the matching here
    assert_losses(binary, expected_losses(ENC_LOGITS, ENC_BOXES, zero_matching, normalizer=3), "_enc")
    assert_losses(plain, expected_losses(ENC_LOGITS, ENC_BOXES, true_matching, normalizer=3), "_enc")
    # the decoder layers keep the true labels
    assert_losses(binary, expected_losses(ENC_LOGITS, ENC_BOXES, true_matching, normalizer=3))
    assert GT[0]["labels"].tolist() == [2, 0]  # the targets are not modified in place


# ----------------------------------------------------------------------------- positive queries
@pytest.mark.parametrize("with_feats", [False, True])
def test_co_deformable_positive_queries_hand_computed(with_feats):
    torch.manual_seed(0)
    d = 16
    pq = PositiveQueries(num_heads=2, embed_dim=d, num_classes=K, feat_dim=6 if with_feats else None,
                         style="co_deformable", head_pos_embed="scalar")
    assert pq.pos_trans[0].weight.shape == (2 * d, 2 * d) and pq.pos_trans_norm[1].weight.shape == (2 * d,)
    emb = pq.head_pos_embed
    assert emb.weight.shape == (2, 1) and emb.padding_idx == 1  # official nn.Embedding(2, 1, 1, 256)
    assert (emb.weight != 0).all()  # the official Xavier re-initialisation also fills the padding row
    with torch.no_grad():
        emb.weight.copy_(torch.tensor([[0.75], [-1.25]]))
    samples = make_samples([3, 1], [20, 3], feats=with_feats)
    for k, scalar in ((0, 0.75), (1, -1.25)):
        fixed = pq(samples, k, SIZES, generator=torch.Generator().manual_seed(0))
        sel = select_positive_queries(samples, SIZES, K, 300, 9, generator=torch.Generator().manual_seed(0))
        full = F.layer_norm(F.linear(sine(fixed.ref_boxes, d // 2), pq.pos_trans[k].weight, pq.pos_trans[k].bias),
                            (2 * d,), pq.pos_trans_norm[k].weight, pq.pos_trans_norm[k].bias)
        content = full[..., d:]
        if with_feats:
            content = content + F.layer_norm(F.linear(sel["feats"], pq.feat_trans[k].weight, pq.feat_trans[k].bias),
                                              (d,), pq.feat_trans_norm[k].weight, pq.feat_trans_norm[k].bias)
        valid = fixed.valid[..., None]
        torch.testing.assert_close(fixed.content, content * valid, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(fixed.query_pos, (full[..., :d] + scalar) * valid, atol=1e-5, rtol=1e-4)
        assert (fixed.query_pos[1, 4:] == 0).all()  # padded slots


def test_head_pos_embed_rows_are_trained_by_their_own_head_only():
    pq = PositiveQueries(num_heads=2, embed_dim=8, num_classes=K, style="co_deformable", head_pos_embed="scalar")
    samples = make_samples([3, 2], [20, 20])
    for k in (0, 1):
        pq.zero_grad()
        pq(samples, k, SIZES, generator=torch.Generator().manual_seed(0)).query_pos.sum().backward()
        grad = pq.head_pos_embed.weight.grad[:, 0]
        # d(sum query_pos) / d(weight[k]) = number of valid slots x channels; the other row: 0
        n_valid = 2 * 9 * 8
        torch.testing.assert_close(grad, torch.tensor([n_valid, 0.0] if k == 0 else [0.0, n_valid]))


def test_positive_query_options():
    assert PositiveQueries(2, 8, K, style="co_deformable", head_pos_embed="vector").head_pos_embed.weight.shape == (2, 8)
    assert PositiveQueries(1, 8, K, style="co_deformable", head_pos_embed="scalar").head_pos_embed.padding_idx is None
    none = PositiveQueries(2, 8, K, style="co_deformable")
    assert none.head_pos_embed is None
    fixed = none(make_samples([3, 2], [20, 20]), 1, SIZES)
    assert fixed.query_pos.shape == fixed.content.shape == (2, 9, 8)
    assert PositiveQueries(2, 8, K)(make_samples([3, 2], [20, 20]), 0, SIZES).query_pos is None  # Co-DINO
    with pytest.raises(ValueError, match="style"):
        PositiveQueries(2, 8, K, style="dino")
    with pytest.raises(ValueError, match="head_pos_embed"):
        PositiveQueries(2, 8, K, head_pos_embed="scalar")  # Co-DINO has none


def test_t_head_samples_drive_co_deformable_positive_queries():
    """A T-Head built with ``return_features`` hands Co-Deformable-DETR's positive queries its
    positives with the pyramid feature at each anchor: the content is ``LN(Linear(sine(box)))``
    plus ``LN(Linear(feature))`` of those features, and the gradient reaches the pyramid."""
    from detectron2.structures import Boxes, ImageList, Instances

    torch.manual_seed(0)
    d = 16
    head = TOODHead(K, ["p3", "p4"], [8, 16], in_channels=d, feat_channels=d, stacked_convs=2, num_groups=4,
                    return_features=True).train()
    pq = PositiveQueries(1, d, K, feat_dim=d, style="co_deformable", head_pos_embed="scalar")
    pyramid = {"p3": torch.randn(2, d, 8, 8, requires_grad=True), "p4": torch.randn(2, d, 4, 4, requires_grad=True)}
    images = ImageList(torch.zeros(2, 3, 64, 64), [(64, 64), (56, 48)])
    gts = []
    for size, boxes, labels in (((64, 64), [[5, 6, 40, 30], [20, 18, 60, 62]], [0, 2]),
                                ((56, 48), [[10, 10, 40, 45]], [1])):
        gts.append(Instances(size, gt_boxes=Boxes(torch.tensor(boxes, dtype=torch.float32)),
                             gt_classes=torch.tensor(labels)))
    _, samples = head(images, pyramid, gts)
    fixed = pq(samples, 0, images.image_sizes, generator=torch.Generator().manual_seed(0))
    # independently: a positive's feature = the pyramid map of its anchor's level (side 8 x stride)
    # at its centre / stride; with fewer positives than slots they fill the first slots in order
    def feature_at(b, box):
        stride = round(float(box[2] - box[0]) / 8)
        cx, cy = float(box[0] + box[2]) / 2, float(box[1] + box[3]) / 2
        return pyramid["p3" if stride == 8 else "p4"][b, :, round(cy / stride), round(cx / stride)]

    full = F.layer_norm(F.linear(sine(fixed.ref_boxes, d // 2), pq.pos_trans[0].weight, pq.pos_trans[0].bias),
                        (2 * d,), pq.pos_trans_norm[0].weight, pq.pos_trans_norm[0].bias)
    for b in range(2):
        p = len(samples.pos_boxes[b])
        assert 0 < p <= fixed.content.shape[1] and fixed.positive[b, :p].all() and not fixed.positive[b, p:].any()
        feats = torch.stack([feature_at(b, box) for box in samples.pos_boxes[b]])
        content = full[b, :p, d:] + F.layer_norm(F.linear(feats, pq.feat_trans[0].weight, pq.feat_trans[0].bias),
                                                 (d,), pq.feat_trans_norm[0].weight, pq.feat_trans_norm[0].bias)
        torch.testing.assert_close(fixed.content[b, :p], content, atol=1e-5, rtol=1e-4)
    fixed.content.sum().backward()
    assert pyramid["p3"].grad.abs().sum() > 0 and pq.feat_trans[0].weight.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- the detector
def tiny_co_deformable_detr(seed=0, one_stage="atss"):
    """4 scales (strides 8..64) + p7, Faster R-CNN and ATSS (or T-Head) heads with features, 20
    queries."""
    torch.manual_seed(seed)
    backbone = PatchBackbone(levels=RES2_RES5)
    kw = dict(embed_dim=D, num_heads=4, num_levels=4, num_points=2, ffn_dim=64)
    transformer = DeformableTransformer(
        DeformableEncoder(1, **kw),
        DeformableDecoder(2, num_classes=K, ref_point_head=False, post_norm=False, **kw),
        num_feature_levels=4, num_queries=20, embed_dim=D, num_classes=K,
        select_by="first_class", enc_outputs="all",
    )
    det = DINO(
        backbone=backbone,
        position_embedding=PositionEmbeddingSine(D // 2, normalize=True, offset=-0.5),
        neck=ChannelMapper(backbone.output_shape(), ["res3", "res4", "res5"], D, num_outs=4, num_groups=8),
        transformer=transformer,
        criterion=DETRCriterion(K, class_loss="focal", weight_class=2.0, binary_enc_loss=True),
        denoising=None,
        select_box_nums_for_evaluation=10,
        num_classes=K,
    )
    names, strides = ["p3", "p4", "p5", "p6", "p7"], [8, 16, 32, 64, 128]
    aux = [
        build_rcnn_aux_head(K, names, strides, in_channels=D, num_roi_levels=4, fc_dim=32, pre_nms_topk=(200, 100),
                            post_nms_topk=(100, 100), roi_batch_size_per_image=64, return_features=True),
        ATSSHead(K, names, strides, in_channels=D, feat_channels=D, num_groups=8, loss_scale=12.0,
                 return_features=True)
        if one_stage == "atss" else
        TOODHead(K, names, strides, in_channels=D, feat_channels=D, stacked_convs=2, num_groups=8, loss_scale=12.0,
                 return_features=True),
    ]
    pq = PositiveQueries(2, D, K, feat_dim=D, style="co_deformable", head_pos_embed="scalar")
    return CoDETR(det, aux, pq, pyramid_num_groups=8)


@pytest.mark.parametrize("one_stage", ["atss", "thead"])
def test_co_deformable_detr_training_step(one_stage):
    model = tiny_co_deformable_detr(one_stage=one_stage).train()
    seen = {}
    criterion = model.detector.criterion
    forward = criterion.forward
    criterion.forward = lambda outputs, targets, dn=None: seen.update(enc=outputs["enc_outputs"]) or forward(
        outputs, targets, dn)
    losses = model(BATCH)
    # the encoder loss covers every encoder position (64 x 128 batch: 8x16 + 4x8 + 2x4 + 1x2)
    assert seen["enc"]["pred_logits"].shape == (2, 128 + 32 + 8 + 2, K)
    names = {f"loss_{n}{s}" for n in ("class", "bbox", "giou") for s in ("", "_0", "_enc", "_aux0", "_aux0_0",
                                                                          "_aux1", "_aux1_0")}
    assert names <= set(losses) and not any("_dn" in k for k in losses)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert all(torch.isfinite(g).all() for g in grads.values())
    for name in ("detector.transformer.pos_trans.weight", "detector.transformer.pos_trans_norm.weight",
                 "positive_queries.pos_trans.0.weight", "positive_queries.pos_trans.1.weight",
                 "positive_queries.feat_trans.0.weight", "positive_queries.feat_trans.1.weight",
                 "positive_queries.head_pos_embed.weight", "detector.transformer.tgt_embed.weight"):
        assert name in grads and grads[name].abs().sum() > 0, name
    assert (grads["positive_queries.head_pos_embed.weight"] != 0).all()  # both heads' rows
    keys = model.state_dict().keys()
    assert not any("ref_point_head" in k or k.startswith("detector.transformer.decoder.norm.") for k in keys)
    # inference: the detector alone, 10 detections per image
    model.eval()
    with torch.no_grad():
        out = model([make_input(64, 96, seed=5)])
    assert len(out[0]["instances"]) == 10


def test_co_deformable_pieces_must_fit_together():
    model = tiny_co_deformable_detr()
    det = model.detector
    with pytest.raises(ValueError, match="style"):
        CoDETR(det, list(model.aux_heads), PositiveQueries(2, D, K, feat_dim=D), pyramid_num_groups=8)
    with pytest.raises(ValueError, match="denoising"):
        DINO(det.backbone, det.position_embedding, det.neck, det.transformer, DETRCriterion(K),
             denoising=dino_denoising(K, D, num_dn_queries=10))
