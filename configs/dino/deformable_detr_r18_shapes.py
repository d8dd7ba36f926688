"""Deformable-DETR-R18 on the shapes dataset: the comparator of DN-Deformable-DETR
(``dn_deformable_detr_r18_shapes.py``), that config without its denoising queries.

``dino_r18_shapes.py`` (same detector size, data, schedule and optimiser) with Deformable DETR's
box refinement (no look-forward-twice) and no denoising. Query selection stays DINO's two-stage
mixed selection, as in ``dn_deformable_detr_r50_12ep.py``, so that the pair differs in the
denoising queries alone (DN-DETR's claim: denoising makes the detector converge faster)."""
from .dino_r18_shapes import HIDDEN, dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

train.output_dir = "./output/deformable_detr_r18_shapes"
model.transformer.decoder.look_forward_twice = False
model.denoising = None
