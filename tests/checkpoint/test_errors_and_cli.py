"""Failure modes (unknown keys, shape mismatches, missing BN statistics, untied aliases, pickle
refusal) and tools/convert_checkpoint.py end to end."""
import argparse
import importlib.util
import os

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import LazyConfig, instantiate

from codetr.checkpoint import (
    CheckpointConversionError,
    MissingKeyError,
    PickleRefusedError,
    ShapeMismatchError,
    UnknownKeyError,
    convert,
    extract_state_dict,
    load_checkpoint_file,
    verify_state_dict,
)

from ckpt_source_formats import Dims, detrex_dino, dino_official, meta_shapes

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = Dims(levels=4, enc_layers=1, dec_layers=2, d=16, ffn=16, heads=2, points=1, queries=5, resnet="resnet18")


class RecordingCheckpointer(DetectionCheckpointer):
    """Keeps what fvcore's Checkpointer.load only logs: missing / unexpected / mis-shaped keys."""

    def _load_model(self, checkpoint):
        assert checkpoint["matching_heuristics"] is False
        self.incompatible = super()._load_model(checkpoint)
        return self.incompatible


def _cli():
    path = os.path.join(REPO, "tools", "convert_checkpoint.py")
    spec = importlib.util.spec_from_file_location("convert_checkpoint", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_unknown_key_is_an_error_naming_it():
    sd = dino_official(TINY, values="zeros")
    sd["transformer.encoder.post_norm_layer.weight"] = torch.zeros(16)
    with pytest.raises(UnknownKeyError, match=r"transformer\.encoder\.post_norm_layer\.weight") as e:
        convert("dino-official", sd)
    assert e.value.keys == ["transformer.encoder.post_norm_layer.weight"]


def test_source_shape_mismatch_is_an_error_naming_the_key():
    sd = dino_official(TINY, values="zeros")
    sd["class_embed.0.weight"] = torch.zeros(80, 16)  # not a 91-way COCO-id head
    with pytest.raises(ShapeMismatchError, match=r"class_embed\.0\.weight"):
        convert("dino-official", sd)


def test_target_verification_names_missing_unexpected_and_mismatched_keys():
    sd = {"a.weight": torch.zeros(2, 3), "b.bias": torch.zeros(4)}
    with pytest.raises(ShapeMismatchError, match=r"a\.weight: \(2, 3\) vs model \(3, 2\)"):
        verify_state_dict(sd, {"a.weight": (3, 2), "b.bias": (4,)})
    with pytest.raises(MissingKeyError, match=r"c\.weight"):
        verify_state_dict(sd, {"a.weight": (2, 3), "b.bias": (4,), "c.weight": (1,)})
    with pytest.raises(UnknownKeyError, match=r"b\.bias"):
        verify_state_dict(sd, {"a.weight": (2, 3)})
    # convert(..., target=) applies the same check: a 4-level checkpoint is not a 5-level model
    target = meta_shapes(os.path.join(REPO, "configs/dino/dino_r50_5scale_12ep.py"))
    with pytest.raises(MissingKeyError, match=r"neck\.convs\.3\.conv\.weight"):
        convert("detrex-dino", detrex_dino(Dims(levels=4), values="zeros"), target=target)


def test_missing_bn_statistics_and_untied_aliases_are_errors():
    sd = dino_official(TINY, values="zeros")
    del sd["backbone.0.body.layer2.0.bn1.running_var"]
    with pytest.raises(MissingKeyError, match=r"layer2\.0\.bn1\.running_var"):
        convert("dino-official", sd)
    sd = dino_official(TINY, values="zeros")
    sd["transformer.decoder.class_embed.1.bias"] = torch.ones(91)
    with pytest.raises(CheckpointConversionError, match=r"transformer\.decoder\.class_embed\.1\.bias.*tied copy"):
        convert("dino-official", sd)


def test_pickle_is_refused_unless_allowed(tmp_path):
    path = str(tmp_path / "dino_official.pth")
    torch.save({"model": {"x": torch.ones(2)}, "args": argparse.Namespace(lr=1e-4), "epoch": 11}, path)
    with pytest.raises(PickleRefusedError, match=r"argparse\.Namespace.*--allow-unsafe-pickle"):
        load_checkpoint_file(path)
    assert torch.equal(extract_state_dict(load_checkpoint_file(path, allow_unsafe_pickle=True))["x"], torch.ones(2))


def test_extract_state_dict_formats():
    t = torch.zeros(1)
    assert extract_state_dict({"meta": {"epoch": 12}, "state_dict": {"a": t}}) == {"a": t}  # mmcv
    assert extract_state_dict({"model": {"module.a": t, "module.b": t}, "iteration": 3}) == {"a": t, "b": t}
    assert extract_state_dict({"a": t}) == {"a": t}
    with pytest.raises(CheckpointConversionError, match="cannot find a state dict"):
        extract_state_dict({"epoch": 3})


def test_cli_detrex_r50_4scale_end_to_end(tmp_path, capsys):
    """A detrex-format R50 checkpoint (random values, with trainer state) -> CLI -> a file that
    DetectionCheckpointer loads into configs/dino/dino_r50_4scale_12ep.py with no missing,
    unexpected or mis-shaped keys, carrying the source values."""
    src, out = str(tmp_path / "detrex.pth"), str(tmp_path / "out" / "converted.pth")
    sd = detrex_dino(Dims(levels=4), values="random", seed=2)
    torch.save({"model": sd, "iteration": 89999}, src)
    assert _cli().main(["--source", "detrex-dino", src, out]) == 0
    text = capsys.readouterr().out
    assert "verified against configs/dino/dino_r50_4scale_12ep.py" in text

    model = instantiate(LazyConfig.load(os.path.join(REPO, "configs/dino/dino_r50_4scale_12ep.py")).model)
    checkpointer = RecordingCheckpointer(model)
    checkpointer.load(out)  # the path train_net's init_checkpoint takes
    bad = checkpointer.incompatible
    assert not bad.missing_keys and not bad.unexpected_keys and not bad.incorrect_shapes
    msd = model.state_dict()
    assert torch.equal(msd["transformer.decoder.layers.3.norm2.weight"],
                       sd["transformer.decoder.layers.3.norms.1.weight"])
    assert torch.equal(msd["transformer.enc_class_embed.bias"], sd["class_embed.6.bias"])
    assert torch.equal(msd["transformer.decoder.bbox_embed.5.layers.1.weight"], sd["bbox_embed.5.layers.1.weight"])
    assert torch.equal(msd["denoising.label_embedding.weight"], sd["label_enc.weight"])
    assert torch.equal(msd["backbone.res4.5.conv2.norm.running_mean"], sd["backbone.res4.5.conv2.norm.running_mean"])


def test_cli_errors_and_pickle_opt_in(tmp_path, capsys):
    cli = _cli()
    src, out = str(tmp_path / "in.pth"), str(tmp_path / "out.pth")
    sd = dino_official(TINY, values="zeros")
    torch.save({"model": sd, "args": argparse.Namespace(num_classes=91)}, src)
    assert cli.main(["--source", "dino-official", src, out]) == 1
    assert "--allow-unsafe-pickle" in capsys.readouterr().err and not os.path.exists(out)
    assert cli.main(["--source", "dino-official", src, out, "--allow-unsafe-pickle", "--no-verify"]) == 0
    assert torch.load(out, weights_only=True)["model"]["transformer.enc_class_embed.weight"].shape == (80, 16)
    assert cli.main(["--source", "no-such-source", src, out, "--allow-pickle"]) == 2
    assert "unknown checkpoint source 'no-such-source'" in capsys.readouterr().err
    assert cli.main(["--list-sources"]) == 0
    assert "detrex-dino" in capsys.readouterr().out
