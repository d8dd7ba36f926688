"""QueryDetector, the shared flow, on a detector that is not DINO: learned queries (contents and
reference boxes, DETR / Deformable-DETR style) over the deformable encoder and decoder. Checks
what the base owns: padding masks, normalisation sizes (padding-as-image too), targets, the
decoder call over query groups, top-k inference in the normalisation frame, postprocessing."""
import pytest
import torch
from torch import nn

from codetr.layers.position_encoding import PositionEmbeddingSine
from codetr.modeling.criterion import DETRCriterion
from codetr.modeling.decoders import DeformableDecoder
from codetr.modeling.encoders import DeformableEncoder
from codetr.modeling.meta_arch import QueryDetector
from codetr.modeling.necks import ChannelMapper
from codetr.modeling.queries import QueryGroup
from codetr.modeling.transformers import DeformableTransformer
from support.models import BATCH, RES2_RES5, PatchBackbone, make_input


D, K, Q = 32, 3, 7


class LearnedQueries(QueryDetector):
    """Matching queries = learned contents on learned reference boxes (no two-stage)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.query_content = nn.Embedding(Q, D)
        self.query_boxes = nn.Embedding(Q, 4)

    def matching_queries(self, enc, fixed=None):
        n = enc.memory.shape[0]
        boxes = self.query_boxes.weight.sigmoid()[None].expand(n, -1, -1)
        return QueryGroup(self.query_content.weight[None].expand(n, -1, -1), boxes), {}


def learned_queries_detector(seed=0):
    torch.manual_seed(seed)
    backbone = PatchBackbone(levels=RES2_RES5)
    kw = dict(embed_dim=D, num_heads=4, num_levels=3, num_points=2, ffn_dim=64)
    transformer = DeformableTransformer(DeformableEncoder(1, **kw), DeformableDecoder(2, num_classes=K, **kw),
                                        num_feature_levels=3, num_queries=Q, embed_dim=D, num_classes=K)
    return LearnedQueries(
        backbone=backbone,
        position_embedding=PositionEmbeddingSine(D // 2, normalize=True, offset=-0.5),
        neck=ChannelMapper(backbone.output_shape(), ["res3", "res4", "res5"], D, num_outs=3, num_groups=8),
        transformer=transformer,
        criterion=DETRCriterion(K),
        select_box_nums_for_evaluation=5,
    )


def test_training_losses_of_a_non_dino_query_detector():
    model = learned_queries_detector().train()
    seen = []
    model.transformer.decoder.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    losses = model(BATCH)
    assert set(losses) == {f"loss_{n}{s}" for n in ("class", "bbox", "giou") for s in ("", "_0")}
    assert all(torch.isfinite(v) for v in losses.values())
    (groups,) = seen  # one decoder call over one group: the learned queries
    assert len(groups) == 1 and groups[0].num_queries == Q
    sum(losses.values()).backward()
    assert model.query_boxes.weight.grad.abs().sum() > 0


def test_masks_targets_and_inference_in_the_normalisation_frame():
    model = learned_queries_detector().eval()
    inputs = [make_input(64, 64, [(8, 8, 40, 30)], [0], seed=1), make_input(64, 128, [(70, 10, 120, 50)], [1], seed=2)]
    images = model.preprocess_image(inputs)
    assert images.mask[0, :, 64:].all() and not images.mask[0, :, :64].any() and not images.mask[1].any()
    assert model.normalization_sizes(images, inputs) == [(64, 64), (64, 128)]
    t = model.prepare_targets(inputs, model.normalization_sizes(images, inputs))
    torch.testing.assert_close(t[0]["boxes"], torch.tensor([[24 / 64, 19 / 64, 32 / 64, 22 / 64]]))
    for x in inputs:
        x["padding_is_image"] = True
    images = model.preprocess_image(inputs)
    assert not images.mask.any()
    sizes = model.normalization_sizes(images, inputs)
    assert sizes == [(64, 128), (64, 128)]
    t = model.prepare_targets(inputs, sizes)
    torch.testing.assert_close(t[0]["boxes"], torch.tensor([[24 / 128, 19 / 64, 32 / 128, 22 / 64]]))
    # predictions normalised by the padded 64 x 128 frame -> absolute boxes of the 64 x 64 image
    logits = torch.full((1, 2, K), -5.0)
    logits[0, 0, 2] = 5.0
    boxes = torch.tensor([[[0.25, 0.5, 0.25, 0.5], [0.5, 0.5, 0.1, 0.1]]])
    (r,) = model.inference(logits, boxes, [(64, 64)], [(64, 128)])
    assert r.image_size == (64, 64) and r.pred_classes[0] == 2
    torch.testing.assert_close(r.pred_boxes.tensor[0], torch.tensor([16.0, 16.0, 48.0, 48.0]))
    with torch.no_grad():
        out = model(inputs)
    assert [len(o["instances"]) for o in out] == [5, 5]


def test_the_base_has_no_matching_queries_of_its_own():
    model = learned_queries_detector()
    with pytest.raises(NotImplementedError):
        QueryDetector.matching_queries(model, None, None)
    with pytest.raises(ValueError, match="nms"):
        LearnedQueries(backbone=model.backbone, position_embedding=model.position_embedding, neck=model.neck,
                       transformer=model.transformer, criterion=model.criterion, nms="greedy")


@pytest.mark.parametrize("padding_is_image", [False, True])
def test_encoder_output_carries_the_normalisation_sizes(padding_is_image):
    """``enc.image_wh`` (what pixel-space decoders normalise by) is ``normalization_sizes`` as
    (w, h), for both kinds of padding; with size_divisibility every image is padded."""
    model = learned_queries_detector().eval()
    model.size_divisibility = 32
    inputs = [make_input(40, 64, seed=1), make_input(64, 72, seed=2), make_input(24, 16, seed=3)]
    for x in inputs:
        x["padding_is_image"] = padding_is_image
    images = model.preprocess_image(inputs)
    assert tuple(images.tensor.shape[-2:]) == (64, 96)
    expected = [(64, 96)] * 3 if padding_is_image else [(40, 64), (64, 72), (24, 16)]
    assert model.normalization_sizes(images, inputs) == expected
    with torch.no_grad():
        enc = model.encode(images)
    assert enc.image_wh.dtype == torch.float32
    assert enc.image_wh.tolist() == [[float(w), float(h)] for h, w in expected]
