"""RNNDet-R50 1x (DEQDet paper, Fig. 1(b); no official config): DEQDet's g and weight-tied f,
trained as an RNN: g then f 5 times with backpropagation through every step and every output
supervised (6 supervised outputs, as AdaMixer's 6 stages); inference g + 5 f steps. Everything
else as ``deqdet_r50_1x`` (data, optimizer, schedule).
"""
from detectron2.config import LazyCall as L

from codetr.modeling.decoders.fixed_point import UnrolledRefinement
from codetr.modeling.meta_arch import RNNDet

from .deqdet_r50_1x import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

train.output_dir = "./output/rnndet_r50_1x"
model._target_ = RNNDet
model.decoder.loop = L(UnrolledRefinement)(num_steps=5, supervision_positions=None, inference_steps=None)
