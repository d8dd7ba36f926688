"""Optimizers. ``train_net.py`` sets ``optimizer.params.model`` before instantiating.

``AdamW``: the DETR-family recipe of detrex (lr 1e-4, weight decay 1e-4, backbone lr x 0.1, no
weight decay on normalisation layers) plus no weight decay on embeddings (``nn.Embedding`` and
the learned query / level embeddings, see ``codetr.engine.DEFAULT_EMBED_NAMES``).
``SGD``: the dense-detector recipe used for TOOD / ATSS (mmdet 1x: lr 0.01 at batch 16,
momentum 0.9, weight decay 1e-4), no backbone LR factor, no weight decay on norms / embeddings.
"""
import torch

from detectron2.config import LazyCall as L

from codetr.engine import get_optimizer_params

AdamW = L(torch.optim.AdamW)(
    params=L(get_optimizer_params)(
        base_lr="${..lr}",
        weight_decay_norm=0.0,
        weight_decay_embed=0.0,
        lr_factors={"backbone": 0.1},
    ),
    lr=1e-4,
    betas=(0.9, 0.999),
    weight_decay=1e-4,
)

SGD = L(torch.optim.SGD)(
    params=L(get_optimizer_params)(
        base_lr="${..lr}",
        weight_decay_norm=0.0,
        weight_decay_embed=0.0,
        lr_factors={},
    ),
    lr=0.01,
    momentum=0.9,
    weight_decay=1e-4,
)
