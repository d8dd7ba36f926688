"""DN-Deformable-DETR-R18 on the shapes dataset: ``deformable_detr_r18_shapes.py`` + DN-DETR's
denoising (5 fixed groups of positive noised copies, label flip 0.2, box noise 0.4, the indicator
channel), as ``dn_deformable_detr_r50_12ep.py`` adds it to the COCO config."""
from detectron2.config import LazyCall as L

from codetr.modeling.queries.denoising import dn_detr_denoising

from .deformable_detr_r18_shapes import HIDDEN, dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

train.output_dir = "./output/dn_deformable_detr_r18_shapes"
model.denoising = L(dn_detr_denoising)(
    num_classes="${..num_classes}", embed_dim="${..transformer.embed_dim}", num_groups=5, label_noise_scale=0.2,
    box_noise_scale=0.4,
)
