"""DN on Conditional DETR-R50, 50 epochs (no public code or number; see
``dn_conditional_detr_r18_shapes.py`` for the recipe): DN-DETR denoising on the box centres only
(5 groups, label flip 0.2, centre noise 0.4), denoising positions from MLP(sine(point))."""
from detectron2.config import LazyCall as L

from codetr.modeling.queries.denoising import dn_detr_denoising

from .conditional_detr_r50_50ep import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

train.output_dir = "./output/dn_conditional_detr_r50_50ep"
model.transformer.decoder.ref_point_head = True
model.denoising = L(dn_detr_denoising)(
    num_classes="${..num_classes}", embed_dim="${..transformer.embed_dim}", num_groups=5, label_noise_scale=0.2,
    box_noise_scale=0.4,
    noise_sizes=False,
)
