"""Small models of every shipped detector family, deterministic weights and a fixed batch: the
fixture of the behaviour-preservation test (``test_reference_outputs.py``) and of the script that
recorded the reference values (``record_reference_outputs.py``).

Keep the builders in step with the code (class names, module paths, constructor arguments) but
never change what they build: the same state-dict keys, options and data as the recorded run.

Precision: float64 where every piece supports it; float32 for the families with a Faster R-CNN
auxiliary head (Detectron2's RPN casts its boxes to float32 for NMS).

Weights do not depend on module creation order: after building, every state-dict entry is
filled from a generator seeded by a stable hash (CRC32) of its key. Dropout is 0 everywhere.
"""
from __future__ import annotations

import math
import zlib
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F
from detectron2.modeling.backbone import FPN, BasicStem, ResNet
from detectron2.modeling.backbone.resnet import BasicBlock
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from codetr.layers.position_encoding import PositionEmbeddingSine
from codetr.modeling.criterion import DETRCriterion
from codetr.modeling.decoders import DeformableDecoder
from codetr.modeling.encoders import DeformableEncoder
from codetr.modeling.heads.atss_head import ATSSHead
from codetr.modeling.heads.rcnn_aux import build_rcnn_aux_head
from codetr.modeling.heads.tood_head import TOODHead
from codetr.modeling.decoders import ConditionalDecoder
from codetr.modeling.decoders.fixed_point import FixedPointRefinement, UnrolledRefinement
from codetr.modeling.decoders.refinement import AdaMixerRefiner, SequentialRefinement, adamixer_layers
from codetr.modeling.encoders import DETREncoder
from codetr.modeling.matcher import HungarianMatcher
from codetr.modeling.meta_arch import DINO, TOOD, AdaMixer, CoDETR, ConditionalDETR, DEQDet, RNNDet
from codetr.modeling.meta_arch.tood import LastLevelP6P7
from codetr.modeling.necks import ChannelMapper, InputProjection, SingleScalePyramidAdapter
from codetr.modeling.necks.shared_norm_mapper import SharedNormChannelMapper
from codetr.modeling.queries import LearnedAnchorQueries, LearnedPointQueries
from codetr.modeling.queries.denoising import dino_denoising, dn_detr_denoising
from codetr.modeling.queries.whole_image import WholeImageQueries
from codetr.modeling.queries.positive_queries import PositiveQueries
from codetr.modeling.transformers import DeformableTransformer, SingleScaleTransformer
from support.models import RES2_RES5, PatchBackbone

D, K = 32, 3  # hidden width, classes
SIZE_DIVISIBILITY = 128
IMAGE_SIZES = [(256, 192), (224, 160)]  # (h, w); the batch pads to 256 x 256
ORIGINAL_SIZES = [(512, 384), (336, 240)]  # "height" / "width": detections are rescaled to these
GT = [
    ([(10.0, 12.0, 90.0, 100.0), (100.0, 140.0, 180.0, 250.0), (40.0, 30.0, 70.0, 60.0)], [0, 2, 1]),
    ([(20.0, 16.0, 150.0, 120.0), (60.0, 150.0, 110.0, 210.0)], [1, 1]),
]
SEED = 1234


# ----------------------------------------------------------------------------- builders
def dino(scales: int = 4, denoising: str = "cdn", look_forward_twice: bool = True, class_loss: str = "focal",
         nms=None, num_queries: int = 20) -> DINO:
    """DINO (CDN) or DN-Deformable-DETR (``denoising="dn"``, no look-forward-twice); ``scales`` 4
    (res3..res5 + 1, strides 8..64) or 5 (res2..res5 + 1, strides 4..64)."""
    backbone = PatchBackbone(levels=RES2_RES5)
    feats = ["res2", "res3", "res4", "res5"][-(scales - 1):]
    kw = dict(embed_dim=D, num_heads=4, num_levels=scales, num_points=2, ffn_dim=64, dropout=0.0)
    transformer = DeformableTransformer(
        DeformableEncoder(1, **kw), DeformableDecoder(2, num_classes=K, look_forward_twice=look_forward_twice, **kw),
        num_feature_levels=scales, num_queries=num_queries, embed_dim=D, num_classes=K,
    )
    dn = dino_denoising(K, D, num_dn_queries=10) if denoising == "cdn" else dn_detr_denoising(K, D, num_groups=2)
    return DINO(
        backbone=backbone,
        position_embedding=PositionEmbeddingSine(D // 2, normalize=True, offset=-0.5),
        neck=ChannelMapper(backbone.output_shape(), feats, D, num_outs=scales, num_groups=8),
        transformer=transformer,
        criterion=DETRCriterion(K, class_loss=class_loss),
        denoising=dn,
        select_box_nums_for_evaluation=30,
        size_divisibility=SIZE_DIVISIBILITY,
        nms=nms,
        nms_pre_topk=50,
        num_classes=K,
    )


def _pyramid(scales: int):
    first = 7 - scales
    return [f"p{i}" for i in range(first, 8)], [2**i for i in range(first, 8)]


def _rcnn(scales: int, feats: bool = False):
    names, strides = _pyramid(scales)
    return build_rcnn_aux_head(K, names, strides, in_channels=D, num_roi_levels=scales, fc_dim=32,
                               pre_nms_topk=(200, 100), post_nms_topk=(100, 100), roi_batch_size_per_image=64,
                               return_features=feats)


def _atss(scales: int, feats: bool = False):
    names, strides = _pyramid(scales)
    return ATSSHead(K, names, strides, in_channels=D, feat_channels=D, num_groups=8, loss_scale=12.0,
                    return_features=feats)


def _thead(scales: int):
    names, strides = _pyramid(scales)
    return TOODHead(K, names, strides, in_channels=D, feat_channels=D, stacked_convs=2, num_groups=8,
                    initial_epochs=0, loss_scale=12.0)


def co_dino(scales: int = 4, heads=("atss",)) -> CoDETR:
    """Co-DINO: QFL, Soft-NMS, auxiliary heads from ``heads`` ("rcnn", "atss", "thead")."""
    det = dino(scales, class_loss="qfl", nms="soft_nms")
    make = {"rcnn": _rcnn, "atss": _atss, "thead": _thead}
    aux = [make[h](scales) for h in heads]
    eval_heads = {"two-stage": 0, "one-stage": 1} if len(heads) == 2 else {"one-stage": 0}
    return CoDETR(det, aux, PositiveQueries(len(aux), D, K), eval_heads=eval_heads, pyramid_num_groups=8)


def co_deformable_detr() -> CoDETR:
    """Co-Deformable-DETR: Deformable-DETR++ options, Faster R-CNN + ATSS heads with features."""
    backbone = PatchBackbone(levels=RES2_RES5)
    kw = dict(embed_dim=D, num_heads=4, num_levels=4, num_points=2, ffn_dim=64, dropout=0.0)
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
        select_box_nums_for_evaluation=30,
        size_divisibility=SIZE_DIVISIBILITY,
        num_classes=K,
    )
    aux = [_rcnn(4, feats=True), _atss(4, feats=True)]
    pq = PositiveQueries(2, D, K, feat_dim=D, style="co_deformable", head_pos_embed="scalar")
    return CoDETR(det, aux, pq, eval_heads={"two-stage": 0, "one-stage": 1}, pyramid_num_groups=8)


def tood() -> TOOD:
    """TOOD on a narrow one-block-per-stage ResNet (BatchNorm) + FPN P3..P7; ATSS for the first
    3 iterations, then TAL."""
    stages = [
        ResNet.make_stage(BasicBlock, 1, stride_per_block=[s], in_channels=i, out_channels=o, norm="BN")
        for s, i, o in ((1, 8, 8), (2, 8, 16), (2, 16, 32), (2, 32, 64))
    ]
    bottom_up = ResNet(BasicStem(3, 8, norm="BN"), stages, out_features=["res3", "res4", "res5"])
    backbone = FPN(bottom_up, ["res3", "res4", "res5"], 16, top_block=LastLevelP6P7(16, 16, "p5"))
    head = TOODHead(
        num_classes=K, in_features=["p3", "p4", "p5", "p6", "p7"], strides=[8, 16, 32, 64, 128],
        in_channels=16, feat_channels=16, stacked_convs=2, num_groups=4, anchor_scale=4,
        initial_epochs=1, epochs=4, max_iter=12,  # the switch at iteration round(1 / 4 * 12) = 3, as recorded
    )
    model = TOOD(backbone, head)
    return model


def single_scale(variant: str = "conditional") -> ConditionalDETR:
    """Conditional DETR ("conditional": 2-d points), DAB-DETR ("dab": 4-d anchors, refined and
    hw-modulated), DN-DETR ("dn_dab") and DN-Conditional-DETR ("dn_conditional") on res5."""
    backbone = PatchBackbone(levels=RES2_RES5)
    points = variant in ("conditional", "dn_conditional")
    dn = variant.startswith("dn_")
    layer = dict(embed_dim=D, num_heads=4, ffn_dim=64, dropout=0.0, activation="relu" if points else "prelu")
    if points:
        decoder = ConditionalDecoder(2, num_classes=K, ref_dim=2, ref_point_head=dn, **layer)
        queries = LearnedPointQueries(12, D)
    else:
        decoder = ConditionalDecoder(2, num_classes=K, ref_dim=4, refine=True, ref_point_head=True, modulate_hw=True,
                                     **layer)
        queries = LearnedAnchorQueries(12, D)
    return ConditionalDETR(
        backbone=backbone,
        position_embedding=PositionEmbeddingSine(D // 2, temperature=10000 if points else 20, normalize=True),
        neck=InputProjection(backbone.output_shape(), "res5", D),
        transformer=SingleScaleTransformer(DETREncoder(1, pos_scale=not points, **layer), decoder, queries),
        criterion=DETRCriterion(K, weight_class=2.0 if points else 1.0),
        denoising=dn_detr_denoising(K, D, num_groups=2, noise_sizes=not points) if dn else None,
        select_box_nums_for_evaluation=20,
        size_divisibility=SIZE_DIVISIBILITY,
        num_classes=K,
    )


def co_conditional() -> CoDETR:
    """Co-Conditional-DETR: the multi-scale adapter (strides 8..128 from the stride-32 map), an
    ATSS head and its positive queries (positions from the decoder's ref_point_head)."""
    det = single_scale("conditional")
    det.transformer.decoder = ConditionalDecoder(2, num_classes=K, ref_dim=2, ref_point_head=True, embed_dim=D,
                                                 num_heads=4, ffn_dim=64, dropout=0.0, activation="relu")
    names = [f"p{i}" for i in range(3, 8)]
    atss = ATSSHead(K, names, [2**i for i in range(3, 8)], in_channels=D, feat_channels=D, num_groups=8,
                    loss_scale=12.0)
    return CoDETR(det, [atss], PositiveQueries(1, D, K), eval_heads={"one-stage": 0}, pyramid_num_groups=8,
                  pyramid_adapter=SingleScalePyramidAdapter(D, in_stride=32, strides=[8, 16, 32, 64, 128],
                                                            num_groups=8))


ADAMIXER_STRIDES = (4, 8, 16, 32)


def adamixer(loop: str = "deqdet") -> AdaMixer:
    """AdaMixer ("adamixer": 3 stages), DEQDet ("deqdet": [g, f] to a fixed point, perturbation
    on) or RNNDet ("rnndet": f unrolled 3 steps) on res2..res5, 8 queries."""
    backbone = PatchBackbone(levels=RES2_RES5)
    loops = {
        "adamixer": (AdaMixer, lambda: SequentialRefinement(3), 3),
        "deqdet": (DEQDet, lambda: FixedPointRefinement(refinement_steps=4, supervision_positions=(1, 2, 4),
                                                        inference_steps=5), 2),
        "rnndet": (RNNDet, lambda: UnrolledRefinement(3), 2),
    }
    cls, make_loop, num_layers = loops[loop]
    layers = adamixer_layers(num_layers, embed_dim=D, num_heads=2, ffn_dim=64, num_groups=2, in_points=4,
                             out_points=3, strides=ADAMIXER_STRIDES)
    xyxy = HungarianMatcher(cost_class=2.0, cost_bbox=5.0, cost_giou=2.0, l1_box_format="xyxy")
    return cls(
        backbone=backbone,
        neck=SharedNormChannelMapper(backbone.output_shape(), ["res2", "res3", "res4", "res5"], D, num_groups=8),
        queries=WholeImageQueries(8, D),
        decoder=AdaMixerRefiner(layers, K, make_loop()),
        criterion=DETRCriterion(K, matcher=xyxy, weight_class=2.0, l1_box_format="xyxy"),
        num_classes=K,
        select_box_nums_for_evaluation=8,
        size_divisibility=SIZE_DIVISIBILITY,
    )


def co_adamixer(loop: str = "deqdet") -> CoDETR:
    """Co-DEQDet / Co-RNNDet: an ATSS head on p2..p6 (the neck maps plus one level) and its
    positive queries through the refinement loop."""
    names = [f"p{i}" for i in range(2, 7)]
    atss = ATSSHead(K, names, [2**i for i in range(2, 7)], in_channels=D, feat_channels=D, num_groups=8,
                    loss_scale=12.0)
    return CoDETR(adamixer(loop), [atss], PositiveQueries(1, D, K), eval_heads={"one-stage": 0},
                  pyramid_num_groups=8)


# ----------------------------------------------------------------------------- weights and data
def fill_weights(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """Overwrite every floating state-dict entry with values drawn from a generator seeded by
    CRC32 of its key; returns the state dict (to restore the model, e.g. BatchNorm statistics).

    Matrices / kernels: N(0, 1) / sqrt(fan_in); 1-d or 0-d "weight"/"scale" entries: 1 + 0.1 N;
    biases and running means: 0.1 N; running variances: 1 + 0.1 U[0, 1)."""
    state = model.state_dict()
    for key, value in state.items():
        if not value.is_floating_point():
            continue
        g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
        shape = value.shape
        if key.endswith("running_var"):
            new = 1 + 0.1 * torch.rand(shape, generator=g, dtype=torch.float64)
        elif value.dim() >= 2:
            fan_in = math.prod(shape[1:])
            new = torch.randn(shape, generator=g, dtype=torch.float64) / math.sqrt(fan_in)
        elif key.endswith("bias") or key.endswith("running_mean"):
            new = 0.1 * torch.randn(shape, generator=g, dtype=torch.float64)
        else:
            new = 1 + 0.1 * torch.randn(shape, generator=g, dtype=torch.float64)
        value.copy_(new.to(value.dtype))
    model.load_state_dict(state)
    return {k: v.clone() for k, v in model.state_dict().items()}


def make_batch(padding_is_image: bool = False) -> List[Dict]:
    """Two images of different sizes (``IMAGE_SIZES``), with ``GT`` boxes (resized-image xyxy)."""
    batch = []
    for i, ((h, w), (oh, ow), (boxes, labels)) in enumerate(zip(IMAGE_SIZES, ORIGINAL_SIZES, GT)):
        g = torch.Generator().manual_seed(100 + i)
        image = torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)
        for (x0, y0, x1, y1), c in zip(boxes, labels):
            image[c, int(y0):int(y1), int(x0):int(x1)] = 255
        inst = Instances((h, w))
        inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
        inst.gt_classes = torch.tensor(labels, dtype=torch.int64)
        x = {"image": image, "instances": inst, "height": oh, "width": ow}
        if padding_is_image:
            x["padding_is_image"] = True
        batch.append(x)
    return batch


def level_masks_agree(padded=(256, 256), strides=(4, 8, 16, 32, 64, 128)) -> bool:
    """Every level's nearest-neighbour padding mask equals the convolution-consistent mask
    (valid extent ceil(size / stride)) for ``IMAGE_SIZES`` padded to ``padded``."""
    ph, pw = padded
    for h, w in IMAGE_SIZES:
        mask = torch.ones(1, 1, ph, pw)
        mask[..., :h, :w] = 0
        for s in strides:
            nearest = F.interpolate(mask, size=(ph // s, pw // s), mode="nearest")[0, 0].bool()
            conv = torch.ones(ph // s, pw // s, dtype=torch.bool)
            conv[: math.ceil(h / s), : math.ceil(w / s)] = False
            if not torch.equal(nearest, conv):
                return False
    return True


# ----------------------------------------------------------------------------- the runs
def _losses(model, batch, seed: int, iteration: int = 0) -> Dict[str, torch.Tensor]:
    model.train()
    torch.manual_seed(seed)
    with EventStorage(iteration):
        losses = model(batch)
    return {k: v.detach().to(torch.float64) for k, v in sorted(losses.items())}


def _detections(model, batch) -> List[Dict[str, torch.Tensor]]:
    model.eval()
    torch.manual_seed(SEED)
    with torch.no_grad():
        out = model(batch)
    return [
        {"boxes": r["instances"].pred_boxes.tensor.to(torch.float64), "scores": r["instances"].scores.to(torch.float64),
         "labels": r["instances"].pred_classes.clone(), "image_size": torch.tensor(r["instances"].image_size)}
        for r in out
    ]


def _detections_steps(model, steps: int):
    """Detections with the refinement loop run for ``steps`` inference steps."""
    loop = model.decoder.loop
    before = loop.inference_steps
    loop.inference_steps = steps
    try:
        return _detections(model, make_batch())
    finally:
        loop.inference_steps = before


def run_family(name: str) -> Dict:
    """Build family ``name``, fill its weights, and return {"losses": ..., "detections": ...}
    (plus extra entries for some families); the same dict the reference file stores."""
    builder, dtype, extra = FAMILIES[name]
    torch.manual_seed(0)
    model = builder().to(dtype)
    state = fill_weights(model)
    out = {"num_state_entries": torch.tensor(len(state)), "float64": torch.tensor(dtype == torch.float64),
           # the state-dict key names (and so the filled weights) must not change
           "state_keys_crc32": torch.tensor(zlib.crc32("\n".join(sorted(state)).encode()))}
    out["losses"] = _losses(model, make_batch(), SEED)
    model.load_state_dict(state)  # BatchNorm running statistics back to the filled values
    out["detections"] = _detections(model, make_batch())
    for key, fn in extra.items():
        model.load_state_dict(state)
        out[key] = fn(model)
    return out


def _co_detr_extras(modules=("one-stage", "two-stage")):
    extras = {"losses_lsj": lambda m: _losses(m, make_batch(padding_is_image=True), SEED),
              "detections_lsj": lambda m: _detections(m, make_batch(padding_is_image=True))}

    def eval_with(module):
        def run(m):
            before = m.eval_module
            m.eval_module = module
            try:
                return _detections(m, make_batch())
            finally:
                m.eval_module = before
        return run

    for module in modules:
        extras[f"detections_{module}"] = eval_with(module)
    return extras


F64, F32 = torch.float64, torch.float32
FAMILIES: Dict[str, tuple] = {  # name: (builder, dtype, extra runs)
    "dino_4scale": (lambda: dino(4), F64, {}),
    "dino_5scale": (lambda: dino(5), F64, {}),
    "dn_deformable_detr": (lambda: dino(4, denoising="dn", look_forward_twice=False), F64, {}),
    # float64: the ATSS / T-Head inference (eval_module="one-stage") does not run in float64
    "co_dino_k1_atss": (lambda: co_dino(4, ("atss",)), F64, _co_detr_extras(())),
    "co_dino_k1_thead": (lambda: co_dino(4, ("thead",)), F64, _co_detr_extras(())),
    "co_dino_k2_atss": (lambda: co_dino(5, ("rcnn", "atss")), F32, _co_detr_extras()),
    "co_dino_k2_thead": (lambda: co_dino(4, ("rcnn", "thead")), F32, _co_detr_extras()),
    "co_deformable_detr": (co_deformable_detr, F32, _co_detr_extras()),
    "tood": (tood, F64, {"losses_iter5_tal": lambda m: _losses(m, make_batch(), SEED, iteration=5)}),
    # recorded later (on bd9d8c7, before the one-decoder-driver refactor): the single-scale and
    # AdaMixer families
    "conditional_detr": (lambda: single_scale("conditional"), F64, {}),
    "dab_detr": (lambda: single_scale("dab"), F64, {}),
    "dn_detr": (lambda: single_scale("dn_dab"), F64, {}),
    "dn_conditional_detr": (lambda: single_scale("dn_conditional"), F64, {}),
    "co_conditional_detr": (co_conditional, F64, {}),
    "adamixer": (lambda: adamixer("adamixer"), F64, {}),
    "deqdet": (lambda: adamixer("deqdet"), F64, {"detections_8_steps": lambda m: _detections_steps(m, 8)}),
    "rnndet": (lambda: adamixer("rnndet"), F64, {"detections_5_steps": lambda m: _detections_steps(m, 5)}),
    "co_deqdet": (lambda: co_adamixer("deqdet"), F64, {}),
    "co_rnndet": (lambda: co_adamixer("rnndet"), F64, {}),
}
