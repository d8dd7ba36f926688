"""AdaMixer-R50 1x on COCO (MCG-NJU/AdaMixer ``adamixer_r50_1x_coco``: 42.7 AP, 100 queries).

DEQDet's model (``configs/deqdet/models/deqdet_r50.py``) with AdaMixer's own parts: 6 unshared
stages (P_in 32), every stage supervised; the neck ``ChannelMapping`` (1x1 conv per level, no
activation, shared GroupNorm(32)). Data and schedule as ``deqdet_r50_1x`` (mmdet 1x, 500-iteration
warm-up, LR x0.1 at epochs 8 and 11, total batch 16, gradient clipping L2 1.0); AdamW lr 2.5e-5,
weight decay 1e-4 on every parameter, no per-module multipliers. Inference: the top 100 boxes,
unclipped, none dropped (official ``AdaMixerDecoder.simple_test``), in fp32.
"""
from detectron2.config import LazyCall as L

from codetr.modeling.decoders.refinement import SequentialRefinement
from codetr.modeling.meta_arch import AdaMixer

from ..deqdet.deqdet_r50_1x import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

train.output_dir = "./output/adamixer_r50_1x"

model._target_ = AdaMixer
model.inference_autocast = None  # AdaMixer's official inference is fp32 (only DEQDet's eqdet.py autocasts)
model.neck.update(kernel_size=1, activation=False)
model.decoder.layers.update(num_layers=6, in_points=32)
model.decoder.loop = L(SequentialRefinement)(num_layers="${..layers.num_layers}")

optimizer.weight_decay = 1e-4
optimizer.params.lr_factors = {}
optimizer.params.weight_decay_factors = {}
