"""DN-Deformable-DETR-R50, 12 epochs on COCO, on the DINO framework.

DN-DETR denoising instead of contrastive denoising: 5 fixed groups of positive noised copies,
label flip probability 0.2, box noise 0.4 (centre shift / size scaling), a denoising indicator
channel (1 on denoising queries, 0 on matching queries); 300 queries; Deformable-DETR box
refinement (no look-forward-twice). Query selection stays DINO's two-stage mixed selection.
"""
from detectron2.config import LazyCall as L

from codetr.modeling.queries.denoising import dn_detr_denoising

from .dino_r50_4scale_12ep import dataloader, lr_multiplier, model, optimizer, train

train.output_dir = "./output/dn_deformable_detr_r50_12ep"

model.num_queries = 300
model.transformer.decoder.look_forward_twice = False
model.denoising = L(dn_detr_denoising)(
    num_classes="${..num_classes}", embed_dim=256, num_groups=5, label_noise_scale=0.2, box_noise_scale=0.4
)
