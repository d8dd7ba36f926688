"""codetr.checkpoint.Checkpointer: which checkpoints load into a model, and the error otherwise.

On the DINO-R18 and Co-DINO-R18 test models (tests/engine/configs/): a checkpoint of the same
config loads completely (every tensor equal); one of another num_classes is refused with the
counts and the flag, and loads its matching tensors with ``partial=True``; a Detectron2 model-zoo
style backbone ``.pkl`` (numpy arrays, names without the ``backbone.`` prefix, with the ImageNet
classifier, ``matching_heuristics``) and a converted ``backbone.*`` ``.pth`` initialise the backbone
only; backbone weights of other shapes, tensors of another model and a detector checkpoint
covering part of the model are refused; an aux-stripped Co-DINO checkpoint loads into Co-DINO."""
import os
import pickle

import numpy as np
import pytest
import torch
from detectron2.config import LazyConfig, instantiate

from codetr.checkpoint import Checkpointer, CheckpointMismatchError, UnsafeCheckpointError
from codetr.checkpoint.checkpointer import backbone_prefixes, training_only_prefixes

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DINO_TINY = os.path.join(REPO, "tests", "engine", "configs", "dino_r18_tiny.py")
CO_DINO_TINY = os.path.join(REPO, "tests", "engine", "configs", "co_dino_r18_tiny.py")


def build(config=DINO_TINY, seed=0, *overrides):
    torch.manual_seed(seed)
    cfg = LazyConfig.apply_overrides(LazyConfig.load(config), list(overrides))
    return instantiate(cfg.model).eval()


@pytest.fixture(scope="module")
def dino():
    return build(DINO_TINY, 0)


def assert_loaded(model, state, keys):
    msd = model.state_dict()
    for k in keys:
        assert torch.equal(msd[k], torch.as_tensor(state[k])), k


def test_correct_checkpoint_loads_completely(dino, tmp_path):
    path = str(tmp_path / "model_final.pth")
    torch.save({"model": dino.state_dict(), "iteration": 3}, path)
    other = build(DINO_TINY, 1)
    ckpt = Checkpointer(other)
    extra = ckpt.load(path)
    assert extra["iteration"] == 3
    report = ckpt.last_report
    assert report.kind == "complete" and not report.missing and not report.unexpected and not report.mismatched
    assert len(report.loaded) == len(dino.state_dict())
    assert_loaded(other, dino.state_dict(), dino.state_dict())


def test_other_num_classes_is_refused_unless_partial(dino, tmp_path):
    path = str(tmp_path / "three_classes.pth")
    three = build(DINO_TINY, 2, "model.num_classes=3")
    torch.save({"model": three.state_dict()}, path)
    n_model = len(dino.state_dict())
    mis = [k for k, v in three.state_dict().items() if v.shape != dino.state_dict()[k].shape]
    assert mis and all("class" in k or "label" in k for k in mis)  # class-dependent layers only

    target = build(DINO_TINY, 3)
    with pytest.raises(CheckpointMismatchError) as e:
        Checkpointer(target).load(path)
    msg = str(e.value)
    assert path in msg and "train.init_checkpoint_partial=True" in msg
    assert f"matched {n_model - len(mis)} of the model's {n_model} tensors" in msg
    assert f"missing 0, unexpected 0, shape-mismatched {len(mis)}" in msg
    assert f"{sorted(mis)[0]} " in msg or mis[0] in msg  # an example with its shapes

    target = build(DINO_TINY, 3)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    ckpt = Checkpointer(target, partial=True)
    ckpt.load(path)
    msd = target.state_dict()
    for k, v in three.state_dict().items():
        assert torch.equal(msd[k], before[k] if k in mis else v), k
    assert sorted(k for k, _, _ in ckpt.last_report.mismatched) == sorted(mis)


def backbone_pkl_dict(model, classifier=True, scale=1):
    """Detectron2 model-zoo format: backbone tensors as numpy arrays under their names inside the
    backbone (as ImageNetPretrained/torchvision/R-50.pkl names them), with matching heuristics."""
    rng = np.random.default_rng(5)
    weights = {}
    for k, v in model.backbone.state_dict().items():
        shape = tuple(v.shape)
        if scale != 1 and k.endswith("conv1.weight"):
            shape = (shape[0] * scale,) + shape[1:]
        weights[k] = rng.standard_normal(shape).astype(np.float32) if v.is_floating_point() else v.numpy()
    if classifier:  # the ImageNet classifier that convert-torchvision-to-d2 keeps as stem.fc
        weights["stem.fc.weight"] = rng.standard_normal((1000, 512)).astype(np.float32)
        weights["stem.fc.bias"] = rng.standard_normal(1000).astype(np.float32)
    return {"model": weights, "__author__": "torchvision", "matching_heuristics": True}


def test_backbone_pkl_initialises_the_backbone(dino, tmp_path):
    assert backbone_prefixes(dino) == ("backbone.",)
    obj = backbone_pkl_dict(dino)
    path = tmp_path / "R-18.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=2))
    target = build(DINO_TINY, 4)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    ckpt = Checkpointer(target)
    ckpt.load(str(path))
    assert ckpt.last_report.kind == "backbone initialisation"
    msd = target.state_dict()
    for k, v in msd.items():
        if k.startswith("backbone."):
            assert torch.equal(v, torch.as_tensor(obj["model"][k[len("backbone."):]])), k
        else:
            assert torch.equal(v, before[k]), k


def test_backbone_pth_with_model_names_initialises_the_backbone(dino, tmp_path):
    """What tools/convert_checkpoint.py --source torchvision-resnet writes: backbone.* keys."""
    path = str(tmp_path / "backbone.pth")
    sd = {k: v + 1 for k, v in dino.state_dict().items() if k.startswith("backbone.") and v.is_floating_point()}
    torch.save({"model": sd, "matching_heuristics": False}, path)
    target = build(DINO_TINY, 4)
    ckpt = Checkpointer(target)
    ckpt.load(path)
    assert ckpt.last_report.kind == "backbone initialisation"
    assert_loaded(target, sd, sd)


def test_backbone_of_other_shapes_is_refused(dino, tmp_path):
    path = tmp_path / "R-wide.pkl"
    path.write_bytes(pickle.dumps(backbone_pkl_dict(dino, scale=2)))
    with pytest.raises(CheckpointMismatchError, match=r"R-wide\.pkl does not fit the model: \d+ tensors have other "
                                                      r"shapes(.|\n)*res2\.0\.conv1\.weight \(128, 64, 3, 3\) vs "
                                                      r"\(64, 64, 3, 3\)"):
        Checkpointer(build(DINO_TINY, 4)).load(str(path))


def test_tensors_of_another_model_are_refused(dino, tmp_path):
    path = str(tmp_path / "other_model.pth")
    sd = {(k.replace("transformer.", "head.") if k.startswith("transformer.") else k): v
          for k, v in dino.state_dict().items()}
    torch.save({"model": sd}, path)
    with pytest.raises(CheckpointMismatchError, match=r"tensors do not exist in the model(.|\n)*unexpected: head\."):
        Checkpointer(build(DINO_TINY, 4)).load(path)


def test_detector_checkpoint_covering_part_of_the_model_is_refused(dino, tmp_path):
    path = str(tmp_path / "no_decoder.pth")
    sd = {k: v for k, v in dino.state_dict().items() if ".decoder." not in k}
    n_missing = len(dino.state_dict()) - len(sd)
    torch.save({"model": sd}, path)
    with pytest.raises(CheckpointMismatchError, match=rf"{n_missing} of the model's \d+ tensors are missing and the "
                                                      r"checkpoint is not a backbone-only initialisation"):
        Checkpointer(build(DINO_TINY, 4)).load(path)
    ckpt = Checkpointer(build(DINO_TINY, 4), partial=True)
    ckpt.load(path)
    assert len(ckpt.last_report.missing) == n_missing


def test_aux_stripped_co_dino_checkpoint_loads_into_co_dino(tmp_path):
    co = build(CO_DINO_TINY, 0)
    assert training_only_prefixes(co) == ("aux_heads.", "positive_queries.", "downsample.", "pyramid_adapter.")
    assert backbone_prefixes(co) == ("detector.backbone.",)
    path = str(tmp_path / "co_dino_infer.pth")
    sd = {k: v for k, v in co.state_dict().items() if k.startswith("detector.")}
    torch.save({"model": sd}, path)
    target = build(CO_DINO_TINY, 1)
    ckpt = Checkpointer(target)
    ckpt.load(path)
    assert ckpt.last_report.kind == "all but training-only modules"
    assert_loaded(target, sd, sd)
    # the same without the detector's decoder is not acceptable
    torch.save({"model": {k: v for k, v in sd.items() if ".decoder." not in k}}, path)
    with pytest.raises(CheckpointMismatchError, match="missing"):
        Checkpointer(build(CO_DINO_TINY, 1)).load(path)


def test_unsafe_file_is_refused_by_the_checkpointer(dino, tmp_path):
    class WritesMarker:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'marker'}",))

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"model": {"w": WritesMarker()}, "__author__": "x"}))
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.pkl.*posix\.system"):
        Checkpointer(dino).load(str(path))
    assert not (tmp_path / "marker").exists()


@pytest.mark.parametrize("heuristics", [False, True])
def test_detectron2_pkl_of_the_whole_model_loads_the_same_tensors(dino, tmp_path, heuristics):
    """A model-zoo style .pkl ({"model": {name: numpy array}, "__author__", "matching_heuristics"})
    of this model gives back exactly its tensors."""
    state = {k: v.numpy() for k, v in dino.state_dict().items()}
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"model": state, "__author__": "Detectron2 Model Zoo",
                                   "matching_heuristics": heuristics}, protocol=2))
    target = build(DINO_TINY, 7)
    ckpt = Checkpointer(target)
    ckpt.load(str(path))
    assert ckpt.last_report.kind == "complete"
    msd = target.state_dict()
    assert set(msd) == set(state)
    assert all(np.array_equal(msd[k].numpy(), v) for k, v in state.items())


def test_backbone_pth_into_co_dino_needs_name_matching(tmp_path):
    """A ``backbone.*`` file (convert_checkpoint.py --source torchvision-resnet) has no key of
    Co-DINO, whose backbone is ``detector.backbone``: refused as is (it used to load nothing,
    silently); with Detectron2's ``?matching_heuristics=True`` it initialises the backbone."""
    co = build(CO_DINO_TINY, 0)
    sd = {k[len("detector."):]: v + 1 for k, v in co.state_dict().items() if k.startswith("detector.backbone.")}
    path = str(tmp_path / "r18_backbone.pth")
    torch.save({"model": sd, "matching_heuristics": False}, path)
    with pytest.raises(CheckpointMismatchError, match=rf"{len(sd)} checkpoint tensors do not exist in the model"):
        Checkpointer(build(CO_DINO_TINY, 1)).load(path)
    target = build(CO_DINO_TINY, 1)
    ckpt = Checkpointer(target)
    ckpt.load(path + "?matching_heuristics=True")
    assert ckpt.last_report.kind == "backbone initialisation"
    assert_loaded(target, {"detector." + k: v for k, v in sd.items()}, ["detector." + k for k in sd])


def torchvision_to_detectron2_names(state_dict):
    """Rename a torchvision ResNet state dict the way Detectron2's model zoo did for
    ImageNetPretrained/torchvision/R-50.pkl (stem.*, resN.*, convK.norm, shortcut), as numpy."""
    out = {}
    for k, v in state_dict.items():
        name = k if "layer" in k else "stem." + k
        for i in range(1, 5):
            name = name.replace(f"layer{i}", f"res{i + 1}")
        for i in range(1, 4):
            name = name.replace(f"bn{i}", f"conv{i}.norm")
        name = name.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")
        out[name] = v.numpy()
    return out


@pytest.mark.parametrize("config", ["configs/dino/dino_r50_4scale_12ep.py", "configs/co_dino/co_dino_5scale_r50_12ep.py",
                                    "configs/tood/tood_r50_fpn_1x.py"])
def test_imagenet_r50_pkl_initialises_the_r50_configs(tmp_path, config):
    """What the R50 configs' train.init_checkpoint (detectron2://ImageNetPretrained/torchvision/
    R-50.pkl) holds, made from a (randomly initialised) torchvision ResNet-50: accepted as a
    backbone initialisation; every ResNet tensor of the model comes from the file."""
    import torchvision

    torch.manual_seed(0)
    tv = torchvision.models.resnet50(weights=None)
    with torch.no_grad():
        for name, buf in tv.named_buffers():
            if name.endswith("running_mean") or name.endswith("running_var"):
                buf.uniform_(0.5, 1.5)
    weights = torchvision_to_detectron2_names(tv.state_dict())
    path = tmp_path / "R-50.pkl"
    path.write_bytes(pickle.dumps({"model": weights, "__author__": "torchvision", "matching_heuristics": True}))

    model = build(os.path.join(REPO, config), 0)
    ckpt = Checkpointer(model)
    ckpt.load(str(path))
    report = ckpt.last_report
    assert report.kind == "backbone initialisation", report.summary()
    msd = model.state_dict()
    stages = {"stem", "res2", "res3", "res4", "res5"}
    resnet_keys = 0
    for k, v in msd.items():
        parts = k.split(".")
        first = next((i for i, p in enumerate(parts) if p in stages), None)
        if first is None:
            continue
        resnet_keys += 1
        assert torch.equal(v, torch.as_tensor(weights[".".join(parts[first:])])), k
    assert resnet_keys >= 4 * 53  # ResNet-50: 53 convolutions, each with 4 FrozenBN tensors + weight
