"""DN on Conditional DETR (no public code; the DN-DETR author's recipe for 2-d anchors, DN-DETR#52),
R18 on the shapes dataset: ``conditional_detr_r18_shapes.py`` + DN-DETR denoising that noises only
the box centres (label flip 0.2, centre shift 0.4 of the half size, 5 groups, indicator bit).
A denoising query takes its reference point from its noised centre, its position from
MLP(sine(point)) (the decoder's ``ref_point_head``, a design choice: Conditional DETR's positions
are learned per query), its content from the noised label embedding; the matching queries'
content is the "unknown" label embedding with indicator 0, as DN-DETR."""
from detectron2.config import LazyCall as L

from codetr.modeling.queries.denoising import dn_detr_denoising

from .conditional_detr_r18_shapes import HIDDEN, dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

train.output_dir = "./output/dn_conditional_detr_r18_shapes"
model.transformer.decoder.ref_point_head = True
model.denoising = L(dn_detr_denoising)(
    num_classes="${..num_classes}", embed_dim="${..transformer.embed_dim}", num_groups=5, label_noise_scale=0.2,
    box_noise_scale=0.4,
    noise_sizes=False,
)
