"""DN-DETR-R50 (DN-DAB-DETR), 50 epochs on COCO (official: 44.1 AP, README 44.4).

DAB-DETR with DN-DETR denoising: 5 fixed groups, label flip 0.2, box noise 0.4 (centre shift and
size scaling), indicator bit; the matching queries' content is the learned "unknown" label
embedding with indicator 0; denoising losses with the matching weights (1 / 5 / 2).
"""
from detectron2.config import LazyCall as L

from codetr.modeling.queries.denoising import dn_detr_denoising

from ..dab_detr.dab_detr_r50_50ep import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.denoising = L(dn_detr_denoising)(
    num_classes="${..num_classes}", embed_dim="${..transformer.embed_dim}", num_groups=5, label_noise_scale=0.2,
    box_noise_scale=0.4,
)
train.output_dir = "./output/dn_detr_r50_50ep"
