"""DETR-R50, 300 epochs on COCO (the official README's training command; its 150-epoch log reaches
39.5 AP): ``detr_r50_500ep.py`` with the LR divided by 10 after epoch 200 (``--lr_drop 200``).
``train.epochs=150 lr_multiplier.milestones=[100] lr_multiplier.epochs=150`` gives the 150-epoch run."""
from ..common.schedule import multistep
from .detr_r50_500ep import dataloader, model, optimizer, train  # noqa: F401

train.output_dir = "./output/detr_r50_300ep"
train.epochs = 300
lr_multiplier = multistep([200], epochs=300)
