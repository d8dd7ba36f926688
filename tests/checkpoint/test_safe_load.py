"""codetr.checkpoint.load_checkpoint_file: no checkpoint file executes code while it is read.

Crafted files (a pickle whose ``__reduce__`` would create a marker file) are refused, as .pkl and
as .pth, naming the file and the refused global, and the marker is never created; legitimate
Detectron2 model-zoo pickles of numpy arrays (protocols 2, 4, 5; numpy-1 ``numpy.core`` module
names as well as numpy-2 ``numpy._core``) load with their values; the opt-in restores full
unpickling of a trusted file."""
import argparse
import os
import pickle

import numpy as np
import pytest
import torch

from codetr.checkpoint import PickleRefusedError, RestrictedUnpickler, UnsafeCheckpointError, load_checkpoint_file


class WritesMarker:
    """Unpickling this object runs ``os.system("touch <marker>")``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def d2_model_zoo_dict(seed=0):
    """What Detectron2's model-zoo .pkl files hold (e.g. ImageNetPretrained/torchvision/R-50.pkl)."""
    rng = np.random.default_rng(seed)
    return {
        "model": {
            "stem.conv1.weight": rng.standard_normal((4, 3, 7, 7)).astype(np.float32),
            "stem.conv1.norm.running_mean": rng.standard_normal(4).astype(np.float32),
            "res2.0.conv1.weight": rng.standard_normal((4, 4, 1, 1)).astype(np.float64),
            "half": rng.standard_normal(3).astype(np.float16),
            "index": np.arange(5, dtype=np.int64),
            "scalar": np.float32(2.5),
        },
        "__author__": "torchvision",
        "matching_heuristics": True,
    }


def assert_same_arrays(got, expected):
    assert set(got) == set(expected)
    for k, v in expected.items():
        assert type(got[k]) is type(v), k
        assert np.asarray(got[k]).dtype == np.asarray(v).dtype, k
        np.testing.assert_array_equal(got[k], v)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_detectron2_pkl_of_numpy_arrays_loads(tmp_path, protocol):
    obj = d2_model_zoo_dict()
    path = tmp_path / "R-50.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    loaded = load_checkpoint_file(str(path))
    assert loaded["__author__"] == "torchvision" and loaded["matching_heuristics"] is True
    assert_same_arrays(loaded["model"], obj["model"])


def test_numpy1_module_names_load(tmp_path):
    """Files written by numpy 1.x name numpy.core.multiarray (numpy 2: numpy._core.multiarray)."""
    obj = d2_model_zoo_dict(seed=1)
    data = pickle.dumps(obj, protocol=2)
    assert b"numpy._core.multiarray" in data
    data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    path = tmp_path / "old_numpy.pkl"
    path.write_bytes(data)
    assert_same_arrays(load_checkpoint_file(str(path))["model"], obj["model"])


def test_crafted_pkl_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {"w": np.zeros(2)}, "__author__": "x", "payload": WritesMarker(marker)}, f)
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.pkl.*global posix\.system.*allow_unsafe_pickle") as e:
        load_checkpoint_file(str(path))
    assert e.value.keys == ["posix.system"]
    assert not marker.exists()


def test_crafted_pth_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(2)}, "payload": WritesMarker(marker)}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.pth.*weights_only.*posix\.system.*--allow-unsafe-pickle"):
        load_checkpoint_file(str(path))
    assert not marker.exists()
    # the same refusal is a PickleRefusedError for the converters' callers
    with pytest.raises(PickleRefusedError):
        load_checkpoint_file(str(path))


def test_torch_zip_named_pkl_goes_through_weights_only(tmp_path):
    path = tmp_path / "saved_by_torch.pkl"
    torch.save({"model": {"w": torch.arange(3.0)}}, path)
    assert torch.equal(load_checkpoint_file(str(path))["model"]["w"], torch.arange(3.0))
    marker = tmp_path / "marker"
    torch.save({"payload": WritesMarker(marker)}, path)
    with pytest.raises(UnsafeCheckpointError, match="posix.system"):
        load_checkpoint_file(str(path))
    assert not marker.exists()


def test_opt_in_loads_a_trusted_pickle_with_other_objects(tmp_path):
    """An unusual but harmless object (argparse.Namespace, as the DINO repo stores its args)."""
    obj = {"model": {"w": np.ones(3, np.float32)}, "__author__": "me", "args": argparse.Namespace(lr=1e-4)}
    path = tmp_path / "trusted.pkl"
    path.write_bytes(pickle.dumps(obj))
    with pytest.raises(UnsafeCheckpointError, match=r"trusted\.pkl.*argparse\.Namespace"):
        load_checkpoint_file(str(path))
    loaded = load_checkpoint_file(str(path), allow_unsafe_pickle=True)
    assert loaded["args"] == argparse.Namespace(lr=1e-4)
    np.testing.assert_array_equal(loaded["model"]["w"], np.ones(3, np.float32))

    pth = tmp_path / "trusted.pth"
    torch.save({"model": {"w": torch.ones(2)}, "args": argparse.Namespace(lr=1e-4)}, pth)
    with pytest.raises(UnsafeCheckpointError, match="argparse.Namespace"):
        load_checkpoint_file(str(pth))
    assert load_checkpoint_file(str(pth), allow_unsafe_pickle=True)["args"].lr == 1e-4


@pytest.mark.parametrize("module, name", [("builtins", "eval"), ("builtins", "getattr"), ("subprocess", "Popen"),
                                          ("numpy", "load"), ("numpy.core.multiarray", "frombuffer"),
                                          ("torch", "load")])
def test_restricted_unpickler_refuses_other_globals(module, name):
    import io

    data = b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"."  # PROTO 2, GLOBAL module name, STOP
    with pytest.raises(UnsafeCheckpointError, match=rf"f\.pkl: refused to unpickle the global {module}\.{name}"):
        RestrictedUnpickler(io.BytesIO(data), filename="f.pkl").load()
