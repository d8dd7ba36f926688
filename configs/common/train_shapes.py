"""Training settings for the bundled synthetic shapes dataset on a CPU, written once for the
``*_r18_shapes`` configs: ``train.py``'s defaults, trained from scratch (no pretrained weights on
these machines: ``init_checkpoint`` empty) on the CPU for ``EPOCHS`` epochs, evaluated once after
the last iteration, checkpointed every 250 iterations. A config sets ``train.output_dir``.
"""
from .train import train

EPOCHS = 2


def shapes_training(train):
    """Set a ``train`` config (``train.py``'s or a COCO config's) to the shapes settings: from
    scratch, on the CPU, ``EPOCHS`` epochs, evaluated once after the last iteration, checkpointed
    every 250 iterations. Returns it (modified in place)."""
    train.init_checkpoint = ""
    train.device = "cpu"
    train.epochs = EPOCHS
    train.eval_period = 100000  # evaluate once, after the last iteration
    train.checkpointer.period = 250
    return train


shapes_training(train)


def resnet18_from_scratch(resnet):
    """Turn a ``configs/*/models`` ResNet-50 backbone config (a LazyCall of Detectron2's ``ResNet``
    with ``stem`` and ``stages``) into the randomly initialised ResNet-18 with BatchNorm, nothing
    frozen, that the shapes configs train on the CPU. Returns it (modified in place)."""
    resnet.stem.norm = "BN"
    resnet.stages.depth = 18
    resnet.stages.pop("stride_in_1x1")  # BasicBlock (R18/34) has no such option
    resnet.stages.norm = "BN"
    resnet.freeze_at = 0
    return resnet
