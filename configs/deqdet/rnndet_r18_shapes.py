"""RNNDet-R18 on the shapes dataset: ``deqdet_r18_shapes`` with ``rnndet_r50_1x``'s loop (g then
f 5 times, backpropagation through every step, every output supervised). Same data, schedule and
optimiser as ``deqdet_r18_shapes``."""
from .deqdet_r18_shapes import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401
from .rnndet_r50_1x import model as _rnndet

train.output_dir = "./output/rnndet_r18_shapes"
model._target_ = _rnndet._target_
model.decoder.loop = _rnndet.decoder.loop
