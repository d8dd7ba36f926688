"""TOOD-R18 on the bundled synthetic shapes dataset, sized to train from scratch on a CPU.

Directly comparable with ``configs/dino/dino_r18_shapes.py``: the same data, augmentation and
image sizes (its ``dataloader``), the same length (2 epochs of 500 iterations at batch 4) and a
randomly initialised ResNet-18 with BatchNorm. The model is ``tood_r50_fpn_1x``'s made small: FPN
and T-Head 128 channels, 4 task-interactive convs, 8 classes. The 1x schedule is scaled to 2
epochs: ATSS for the first 4/12 (0.67 epoch, iteration 333), LR x0.1 at 8/12 and 11/12,
100-iteration warm-up; SGD lr 0.005 (between the paper's 0.01 at batch 16 and its linear scaling
0.0025 for batch 4). Defaults to ``train.device=cpu``.

One run (seed random, OMP_NUM_THREADS=1 on a shared 2-core CPU, 0.76 s/iter, 13 min): total loss
2.33 -> 1.02, ATSS -> TAL at iteration 333, shapes_val AP 4.6 / AP50 9.2.

``train.max_iter=N`` scales the whole schedule (codetr.engine.schedule): N=40 warms up for 4
iterations, switches to TAL at 13 and steps the LR at 27 and 37. (An earlier 40-iteration run at
lr 0.01 whose warm-up and switch did not scale this way collapsed a few iterations after the
switch: no positives, loss_bbox 0, scores driven to ~0.)
"""
from ..common.schedule import multistep
from ..common.train_shapes import EPOCHS, resnet18_from_scratch, train
from ..dino.dino_r18_shapes import dataloader
from .tood_r50_fpn_1x import model, optimizer

WIDTH = 128

train.output_dir = "./output/tood_r18_shapes"
lr_multiplier = multistep([EPOCHS * 8 / 12, EPOCHS * 11 / 12], epochs=EPOCHS, warmup_iters=100)

optimizer.lr = 0.005

resnet18_from_scratch(model.backbone.bottom_up)
model.backbone.out_channels = WIDTH  # the FPN's top block and the head read it
model.head.update(num_classes=8, stacked_convs=4)
model.head.update(initial_epochs=EPOCHS * 4 / 12, epochs=EPOCHS)  # ATSS for the first 1/3 of the run
dataloader.evaluator.output_dir = "${train.output_dir}"
