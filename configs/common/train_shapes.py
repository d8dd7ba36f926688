"""Training settings for the bundled synthetic shapes dataset on a CPU, written once for the
``*_r18_shapes`` configs: ``train.py``'s defaults, trained from scratch (no pretrained weights on
these machines: ``init_checkpoint`` empty) on the CPU for ``EPOCHS`` epochs, evaluated once after
the last iteration, checkpointed every 250 iterations. A config sets ``train.output_dir``.
"""
from .train import train

EPOCHS = 2

train.init_checkpoint = ""
train.device = "cpu"
train.epochs = EPOCHS
train.eval_period = 100000  # evaluate once, after the last iteration
train.checkpointer.period = 250
