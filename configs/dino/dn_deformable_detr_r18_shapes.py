"""DN-Deformable-DETR-R18 on the shapes dataset: ``deformable_detr_r18_shapes.py`` + DN-DETR's
denoising (5 fixed groups of positive noised copies, label flip 0.2, box noise 0.4, the indicator
channel), taken from ``configs/dn_detr/dn_detr_r18_shapes.py`` so that both DN-DETR claims use the
same denoising."""
from ..dn_detr.dn_detr_r18_shapes import model as _dn_detr  # noqa: E402  (one module load per statement)
from .deformable_detr_r18_shapes import HIDDEN, dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

train.output_dir = "./output/dn_deformable_detr_r18_shapes"
model.denoising = _dn_detr.denoising  # its num_classes / embed_dim read this model's (relative interpolations)
