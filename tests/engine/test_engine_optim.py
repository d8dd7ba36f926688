"""Optimizer parameter groups: backbone LR x 0.1, no weight decay on norms and embeddings."""
import os

import pytest
import torch
from torch import nn

from detectron2.config import LazyConfig, instantiate

from codetr.engine import get_optimizer_params

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LR, WD = 1e-4, 1e-4


class ToyDetector(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.transformer = nn.Module()
        self.transformer.level_embed = nn.Parameter(torch.zeros(4, 8))
        self.transformer.tgt_embed = nn.Embedding(5, 8)
        self.transformer.norm = nn.LayerNorm(8)
        self.transformer.proj = nn.Linear(8, 8)
        self.tied = self.transformer.proj  # shared module: its parameters must appear once
        self.class_embed = nn.Linear(8, 3)  # a DETR head, not an embedding: decayed
        self.label_enc = nn.Embedding(3, 8)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


# name -> (lr, weight decay), by hand from the rules
EXPECTED_ADAMW = {
    "backbone.0.weight": (LR * 0.1, WD),
    "backbone.0.bias": (LR * 0.1, WD),
    "backbone.1.weight": (LR * 0.1, 0.0),
    "backbone.1.bias": (LR * 0.1, 0.0),
    "transformer.level_embed": (LR, 0.0),
    "transformer.tgt_embed.weight": (LR, 0.0),
    "transformer.norm.weight": (LR, 0.0),
    "transformer.norm.bias": (LR, 0.0),
    "transformer.proj.weight": (LR, WD),
    "transformer.proj.bias": (LR, WD),
    "class_embed.weight": (LR, WD),
    "class_embed.bias": (LR, WD),
    "label_enc.weight": (LR, 0.0),
}


def hyperparams_by_name(model, optimizer):
    by_id = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            assert id(p) not in by_id, "a parameter appears in two groups"
            by_id[id(p)] = (group["lr"], group["weight_decay"])
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[i]: hp for i, hp in by_id.items()}


def check(model, optimizer, expected):
    got = hyperparams_by_name(model, optimizer)
    assert set(got) == set(expected)
    for name, (lr, wd) in expected.items():
        assert got[name] == pytest.approx((lr, wd)), name


def test_adamw_param_groups():
    model = ToyDetector()
    params = get_optimizer_params(model, base_lr=LR, lr_factors={"backbone": 0.1})
    check(model, torch.optim.AdamW(params, lr=LR, weight_decay=WD), EXPECTED_ADAMW)


def test_common_optim_config_adamw_and_sgd():
    cfg = LazyConfig.load(os.path.join(ROOT, "configs/common/optim.py"))
    model = ToyDetector()
    cfg.AdamW.params.model = model
    check(model, instantiate(cfg.AdamW), EXPECTED_ADAMW)

    cfg.SGD.params.model = model
    sgd = instantiate(cfg.SGD)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.9
    expected_sgd = {n: (0.01, 0.0 if wd == 0.0 else 1e-4) for n, (_, wd) in EXPECTED_ADAMW.items()}
    check(model, sgd, expected_sgd)


def test_special_weight_decay_can_be_disabled():
    model = ToyDetector()
    params = get_optimizer_params(model, base_lr=LR, weight_decay_norm=None, weight_decay_embed=None)
    got = hyperparams_by_name(model, torch.optim.AdamW(params, lr=LR, weight_decay=WD))
    assert all(hp == pytest.approx((LR, WD)) for hp in got.values())


def test_first_matching_lr_factor_wins():
    model = ToyDetector()
    params = get_optimizer_params(model, base_lr=1.0, lr_factors={"backbone.1": 0.5, "backbone": 0.1, "proj": 2.0})
    got = hyperparams_by_name(model, torch.optim.SGD(params, lr=1.0))
    assert got["backbone.1.weight"][0] == 0.5
    assert got["backbone.0.weight"][0] == pytest.approx(0.1)
    assert got["transformer.proj.bias"][0] == 2.0
    assert got["class_embed.weight"][0] == 1.0


def test_weight_decay_factors_multiply_after_the_norm_and_embed_rules():
    """DEQDet's official recipe: everything decayed (no norm / embed exception), the decoder's
    (here: transformer's) LR x 4 and weight decay x 10, by hand."""
    model = ToyDetector()
    params = get_optimizer_params(model, base_lr=LR, weight_decay=0.01, weight_decay_norm=None,
                                  weight_decay_embed=None, lr_factors={"transformer": 4.0},
                                  weight_decay_factors={"transformer": 10.0})
    got = hyperparams_by_name(model, torch.optim.AdamW(params, lr=LR))
    for name, (lr, wd) in got.items():
        inside = name.startswith("transformer.")
        assert lr == pytest.approx(LR * 4 if inside else LR), name
        assert wd == pytest.approx(0.1 if inside else 0.01), name
    # with the norm rule kept, a decayed norm stays at 0 (0 x 10)
    params = get_optimizer_params(model, base_lr=LR, weight_decay=0.01, weight_decay_factors={"transformer": 10.0})
    got = hyperparams_by_name(model, torch.optim.AdamW(params, lr=LR))
    assert got["transformer.norm.weight"][1] == 0.0 and got["transformer.proj.weight"][1] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="weight_decay_factors"):
        get_optimizer_params(model, base_lr=LR, weight_decay_factors={"transformer": 10.0})


@pytest.mark.parametrize("path,lr,wd,decoder_lr,decoder_wd", [
    ("configs/deqdet/deqdet_r50_1x.py", 2.5e-5, 0.01, 1e-4, 0.1),  # official paramwise bbox_head x4 / x10
    ("configs/adamixer/adamixer_r50_1x.py", 2.5e-5, 1e-4, 2.5e-5, 1e-4),
])
def test_adamixer_family_optimizer_configs(path, lr, wd, decoder_lr, decoder_wd):
    """Every parameter (norms, the query content included) at the base lr / decay, the decoder's
    at its multiples; the model is the config's own with a small decoder."""
    cfg = LazyConfig.load(os.path.join(ROOT, path))
    cfg.model.backbone.stages.depth = 18
    cfg.model.backbone.stages.pop("stride_in_1x1")
    for name, channels in zip(("res2", "res3", "res4", "res5"), (64, 128, 256, 512)):
        cfg.model.neck.input_shapes[name].channels = channels
    cfg.model.decoder.layers.update(embed_dim=32, num_heads=2, ffn_dim=32, in_points=4, out_points=4)
    cfg.model.neck.out_channels = cfg.model.queries.embed_dim = 32
    model = instantiate(cfg.model)
    cfg.optimizer.params.model = model
    got = hyperparams_by_name(model, instantiate(cfg.optimizer))
    assert "queries.content" in got and "decoder.layers.0.norm1.weight" in got and "neck.norm.weight" in got
    for name, hp in got.items():
        expected = (decoder_lr, decoder_wd) if name.startswith("decoder.") else (lr, wd)
        assert hp == pytest.approx(expected), name
