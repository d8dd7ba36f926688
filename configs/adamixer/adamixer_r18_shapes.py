"""AdaMixer-R18 on the shapes dataset: ``configs/deqdet/deqdet_r18_shapes.py``'s backbone, widths,
data and schedule with AdaMixer's own parts (``adamixer_r50_1x``: 6 unshared stages, 1x1 neck
without activation, weight decay 1e-4 on everything, no decoder multipliers), P_in 16 as the
DEQDet shapes model."""
from ..deqdet.deqdet_r18_shapes import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401
from .adamixer_r50_1x import model as _adamixer
from .adamixer_r50_1x import optimizer as _adamixer_optimizer

train.output_dir = "./output/adamixer_r18_shapes"
model._target_ = _adamixer._target_
model.neck.update(kernel_size=1, activation=False)
model.decoder.layers.num_layers = 6
model.decoder.loop = _adamixer.decoder.loop
optimizer.weight_decay = _adamixer_optimizer.weight_decay
optimizer.params.lr_factors = {}
optimizer.params.weight_decay_factors = {}
