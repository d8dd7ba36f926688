"""Strict command-line overrides: unknown keys are errors naming the closest valid key."""
import os

import pytest
from omegaconf import OmegaConf

from detectron2.config import LazyCall as L
from detectron2.config import LazyConfig, instantiate

from codetr.engine import apply_overrides_strict

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Widget:
    def __init__(self, width, depth=2, *, name="w"):
        self.width, self.depth, self.name = width, depth, name


def open_ended(a, **kwargs):
    return dict(a=a, **kwargs)


def small_cfg():
    return OmegaConf.create(
        {
            "train": {
                "max_iter": None, "epochs": 12, "amp": {"enabled": False, "dtype": "float16"}, "milestones": [8, 11]
            },
            "model": L(Widget)(width=4, name="${train.epochs}"),
            "extra": L(open_ended)(a=1),
        },
        flags={"allow_objects": True},
    )


def test_existing_keys_are_set_with_detectron2_parsing():
    cfg = apply_overrides_strict(small_cfg(), ["train.max_iter=5", "train.amp.dtype=bfloat16", "model.width=8",
                                               "train.milestones=[1,2]", "train.milestones.0=3", "train.epochs=null"])
    assert cfg.train.max_iter == 5 and cfg.train.amp.dtype == "bfloat16" and cfg.model.width == 8
    assert list(cfg.train.milestones) == [3, 2] and cfg.train.epochs is None


@pytest.mark.parametrize(
    "override, named, suggested",
    [
        ("train.max_iters=5", "'max_iters'", "'train.max_iter'"),
        ("train.foo=1", "'foo'", None),
        ("train.amp.dtyp=bfloat16", "'dtyp'", "'train.amp.dtype'"),
        ("trian.max_iter=5", "'trian'", "'train'"),
        ("model.widht=3", "'widht'", "'model.width'"),  # not a parameter of Widget
    ],
)
def test_unknown_keys_are_errors_naming_the_closest_valid_key(override, named, suggested):
    cfg = small_cfg()
    with pytest.raises(ValueError) as info:
        apply_overrides_strict(cfg, [override])
    msg = str(info.value)
    assert named in msg and override.split("=")[0] in msg
    if suggested:
        assert f"did you mean {suggested}" in msg
    else:
        assert "did you mean" not in msg
    assert OmegaConf.to_container(cfg) == OmegaConf.to_container(small_cfg())  # nothing applied


def test_a_later_typo_applies_nothing():
    cfg = small_cfg()
    with pytest.raises(ValueError, match="max_iters"):
        apply_overrides_strict(cfg, ["train.epochs=3", "train.max_iters=5"])
    assert cfg.train.epochs == 12


def test_lazycall_arguments_left_at_their_default_may_be_set():
    cfg = apply_overrides_strict(small_cfg(), ["model.depth=5", "model.name=x", "extra.anything=7"])
    widget = instantiate(cfg.model)
    assert (widget.width, widget.depth, widget.name) == (4, 5, "x")
    assert instantiate(cfg.extra) == {"a": 1, "anything": 7}  # **kwargs takes any key


def test_plus_adds_a_new_key_and_refuses_an_existing_one():
    cfg = apply_overrides_strict(small_cfg(), ["+train.newkey=1", "+train.sub.deeper=2", "++train.max_iter=9"])
    assert cfg.train.newkey == 1 and cfg.train.sub.deeper == 2 and cfg.train.max_iter == 9
    with pytest.raises(ValueError, match="already exists"):
        apply_overrides_strict(small_cfg(), ["+train.max_iter=5"])


def test_keys_below_a_value_or_beyond_a_list_are_errors():
    with pytest.raises(ValueError, match="not a config node"):
        apply_overrides_strict(small_cfg(), ["train.epochs.x=1"])
    with pytest.raises(ValueError, match="list of 2"):
        apply_overrides_strict(small_cfg(), ["train.milestones.5=1"])
    with pytest.raises(ValueError, match="deleting"):
        apply_overrides_strict(small_cfg(), ["~train.epochs"])


def test_a_target_override_applies_to_the_following_keys():
    """``node._target_=...`` changes which arguments the next overrides may set (the worked example
    of datasets/README.md: a coco_json_dataset in place of the registered names)."""
    cfg = small_cfg()
    apply_overrides_strict(cfg, [f"model._target_={__name__}.open_ended", "model.a=3", "model.b=4"])
    assert instantiate(cfg.model) == {"a": 3, "width": 4, "name": 12, "b": 4}
    real = LazyConfig.load(os.path.join(ROOT, "configs/dino/dino_r18_shapes.py"))
    node = "dataloader.train.dataset"
    apply_overrides_strict(real, [f"{node}._target_=codetr.data.coco_json_dataset", f"{node}.json_file=a.json",
                                  f"{node}.image_root=images", f"{node}.names=mine"])
    assert real.dataloader.train.dataset.json_file == "a.json"
    with pytest.raises(ValueError, match="json_file"):  # without the target override: not an argument
        apply_overrides_strict(LazyConfig.load(os.path.join(ROOT, "configs/dino/dino_r18_shapes.py")),
                               [f"{node}.json_file=a.json"])


def test_real_config():
    cfg = LazyConfig.load(os.path.join(ROOT, "configs/dino/dino_r18_shapes.py"))
    apply_overrides_strict(cfg, ["model.num_queries=10", "model.transformer.encoder.num_layers=1",
                                 "model.size_divisibility=32", "dataloader.train.total_batch_size=2",
                                 "optimizer.lr=1e-4", "train.amp.enabled=True"])
    assert cfg.model.num_queries == 10 and cfg.model.transformer.encoder.num_layers == 1
    assert cfg.model.size_divisibility == 32  # a DINO argument the config leaves at its default
    with pytest.raises(ValueError, match="did you mean 'model.num_queries'"):
        apply_overrides_strict(cfg, ["model.num_querys=10"])
    with pytest.raises(ValueError, match="did you mean 'train.eval_period'"):
        apply_overrides_strict(cfg, ["train.eval_perod=10"])
