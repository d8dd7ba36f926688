"""DINO meta-architecture on tiny models (CPU, seconds)."""
import pytest
import torch
from detectron2.modeling import META_ARCH_REGISTRY

from codetr.modeling.meta_arch import DINO
from support.dino import K, tiny_dino
from support.models import BATCH, make_input
from support.training import assert_overfits_two_images


def _zero_grad_names(model):
    return {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() == 0}


# At initialisation some gradients are exactly zero, by construction of the DINO init:
# - the hidden layers of every box MLP: its last layer is zero-initialised;
# - level_embeds: a query's position only acts through the sampling-offset and attention-weight
#   projections of the encoder's deformable attention, whose weights are zero-initialised.
# After one optimiser step every parameter gets a non-zero gradient; no parameter is unused.
ZERO_AT_INIT = {"transformer.level_embeds"} | {
    f"transformer.{head}.layers.{i}.{w}"
    for head in ("decoder.bbox_embed.0", "decoder.bbox_embed.1", "enc_bbox_embed")
    for i in (0, 1)
    for w in ("weight", "bias")
}


def test_registered():
    assert META_ARCH_REGISTRY.get("DINO") is DINO


def test_training_step_losses_and_gradients():
    model = tiny_dino().train()
    losses = model(BATCH)
    suffixes = ["", "_0", "_enc", "_dn", "_dn_0"]
    assert set(losses) == {f"loss_{n}{s}" for n in ("class", "bbox", "giou") for s in suffixes}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert _zero_grad_names(model) == ZERO_AT_INIT
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    opt.step()
    opt.zero_grad()
    sum(model(BATCH).values()).backward()
    assert _zero_grad_names(model) == set()


def test_eval_returns_instances_in_original_coordinates():
    model = tiny_dino().eval()
    inputs = [make_input(64, 64, seed=3, orig=(128, 96)), make_input(64, 128, seed=4, orig=(32, 64))]
    with torch.no_grad():
        results = model(inputs)
    for r, x in zip(results, inputs):
        inst = r["instances"]
        assert inst.image_size == (x["height"], x["width"])
        assert len(inst) == 30
        b = inst.pred_boxes.tensor
        assert (b[:, 0::2] >= 0).all() and (b[:, 0::2] <= x["width"]).all()
        assert (b[:, 1::2] >= 0).all() and (b[:, 1::2] <= x["height"]).all()
        assert (inst.scores[:-1] >= inst.scores[1:]).all() and inst.pred_classes.max() < K


@pytest.mark.parametrize(
    "sizes",
    [
        [(128, 128), (64, 128)],  # padded to 128 x 128: every level's padded size a multiple of its stride
        # padded to 96 x 160, not a multiple of the extra level's stride 64: the second image's
        # 64 rows give ceil(64 / 64) = 1 valid row at stride 64 (row 1 is centred on padding,
        # pixel row 64), the first image's 128 columns ceil(128 / 64) = 2 valid columns of 3
        [(96, 128), (64, 160)],
        [(32, 96), (96, 32), (64, 64)],  # padded to 96 x 96
    ],
)
def test_batched_inference_equals_single_image(sizes):
    model = tiny_dino().eval()
    inputs = [make_input(h, w, seed=5 + i) for i, (h, w) in enumerate(sizes)]
    with torch.no_grad():
        batched = model(inputs)
        singles = [model([x])[0] for x in inputs]
    for b, s in zip(batched, singles):
        b, s = b["instances"], s["instances"]
        torch.testing.assert_close(b.scores, s.scores, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(b.pred_boxes.tensor, s.pred_boxes.tensor, atol=1e-3, rtol=1e-4)
        assert torch.equal(b.pred_classes, s.pred_classes)


@pytest.mark.parametrize("sizes", [[(96, 128), (64, 160)], [(32, 96), (96, 32), (64, 64)], [(32, 160), (160, 64)]])
def test_batched_masks_and_encoder_memory_equal_single_image(sizes):
    """Per level, an image of a padded batch has exactly the valid positions it has alone (the
    maps of the image run alone, unpadded), and the encoder memory there equals its own.
    (Sizes are multiples of 32: PatchBackbone's unpadded patch convs give floor(size / stride)
    maps, which equal the ceil(size / stride) of a padded conv only at such sizes.)"""
    model = tiny_dino().eval()
    inputs = [make_input(h, w, seed=5 + i) for i, (h, w) in enumerate(sizes)]
    with torch.no_grad():
        batched = model.encode(model.preprocess_image(inputs))
        b_shapes = batched.spatial_shapes.tolist()
        for i, x in enumerate(inputs):
            single = model.encode(model.preprocess_image([x]))
            assert not single.memory_mask.any()  # alone, nothing is padding
            s_shapes = single.spatial_shapes.tolist()
            b_mem = batched.memory[i].split([h * w for h, w in b_shapes])
            s_mem = single.memory[0].split([h * w for h, w in s_shapes])
            for lvl, ((bh, bw), (sh, sw)) in enumerate(zip(b_shapes, s_shapes)):
                mask = batched.masks[lvl][i]
                assert not mask[:sh, :sw].any(), (lvl, (sh, sw))
                assert mask.sum() == bh * bw - sh * sw, (lvl, (sh, sw), mask.int())
                got = b_mem[lvl].reshape(bh, bw, -1)[:sh, :sw]
                torch.testing.assert_close(got, s_mem[lvl].reshape(sh, sw, -1), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("denoising", ["cdn", "dn", None])
def test_empty_images_and_empty_batches_train(denoising):
    model = tiny_dino(denoising).train()
    for batch in ([BATCH[0], make_input(64, 96, seed=7)], [make_input(64, 64, seed=8), make_input(64, 96, seed=9)]):
        losses = model(batch)
        assert all(torch.isfinite(v) for v in losses.values())
        sum(losses.values()).backward()
    # keys stable across batches with and without boxes (logging, DDP); DN keys iff denoising
    assert set(losses) == set(model(BATCH))
    assert any(k.endswith("_dn") for k in losses) == (denoising is not None)


def test_decode_fixed_queries_alone():
    """Co-DETR's entry point: extra fixed-target groups through the shared decoder."""
    model = tiny_dino().train()
    images = model.preprocess_image(BATCH)
    enc = model.encode(images)
    assert [tuple(m.shape[-2:]) for m in model.pyramid(enc)] == enc.shapes
    fixed = model.denoising(model.prepare_targets(BATCH, images.image_sizes))
    fixed_out = model.decode_fixed(enc, fixed)
    assert fixed_out["pred_boxes"].shape == (2, fixed.num_queries, 4) and len(fixed_out["aux_outputs"]) == 1
    losses = model.criterion.fixed_target_losses(fixed_out, fixed, 1.0, "_aux")
    assert all(torch.isfinite(v) for v in losses.values())


def test_targets_are_normalised_by_unpadded_size():
    model = tiny_dino()
    t = model.prepare_targets([BATCH[1]], [(64, 128)])[0]
    torch.testing.assert_close(t["boxes"], torch.tensor([[95 / 128, 30 / 64, 50 / 128, 40 / 64]]))
    assert t["labels"].tolist() == [1]


def test_bfloat16_autocast_training_step():
    model = tiny_dino().train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model(BATCH)
    assert all(torch.isfinite(v) and v.dtype == torch.float32 for v in losses.values())
    sum(losses.values()).backward()


def test_tiny_model_overfits_two_images():
    assert_overfits_two_images(tiny_dino(num_queries=20, seed=1), BATCH, steps=40)


@pytest.mark.parametrize("nms", ["nms", "soft_nms"])
def test_inference_with_class_wise_nms(nms):
    model = tiny_dino().eval()
    # two queries predicting the same class on overlapping boxes, one on a far box
    logits = torch.full((1, 3, K), -10.0)
    logits[0, :, 1] = torch.tensor([3.0, 2.0, 1.0])
    boxes = torch.tensor([[[0.5, 0.5, 0.4, 0.4], [0.5, 0.5, 0.39, 0.4], [0.1, 0.1, 0.1, 0.1]]])
    model.nms, model.nms_iou_threshold, model.select_box_nums_for_evaluation = nms, 0.8, 2
    (r,) = model.inference(logits, boxes, [(100, 200)])
    assert len(r) == 2 and (r.scores[:-1] >= r.scores[1:]).all()
    top = r.pred_boxes.tensor[0]
    torch.testing.assert_close(top, torch.tensor([60.0, 30.0, 140.0, 70.0]))
    if nms == "nms":  # the overlapping duplicate is gone; the far box is second
        torch.testing.assert_close(r.pred_boxes.tensor[1], torch.tensor([10.0, 5.0, 30.0, 15.0]))
    else:  # linear Soft-NMS decays the duplicate below the far box (s * (1 - IoU))
        assert r.scores[1] == pytest.approx(torch.tensor(1.0).sigmoid().item(), rel=1e-5)
    model.nms = None
    (plain,) = model.inference(logits, boxes, [(100, 200)])
    assert plain.scores[1] == pytest.approx(torch.tensor(2.0).sigmoid().item(), rel=1e-5)
