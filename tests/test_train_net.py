"""End-to-end tests of train_net.py, run as a subprocess on the CPU.

Parameterised by config: every entry of ``CASES`` is trained for a few iterations, resumed,
evaluated with --eval-only, trained under bf16 / fp16 autocast and with 2 gloo processes. The
cases train on a 6-image 64x64 COCO-format dataset that this module writes to a temporary directory
(registered as tiny_train / tiny_val by tests/engine/configs/tiny_data.py): a deliberately tiny
Detectron2 RetinaNet (tests/engine/configs/tiny_retinanet.py), DINO-R18 of
configs/dino/dino_r18_shapes.py pointed at the tiny data (tests/engine/configs/dino_r18_tiny.py),
Co-DINO-R18 of configs/co_dino/co_dino_r18_shapes.py (tests/engine/configs/co_dino_r18_tiny.py)
and Co-Deformable-DETR shrunk to R18 / hidden 128 (tests/engine/configs/co_deformable_detr_tiny.py).
To add a detector, write such a wrapper config (import the real config, switch the dataset names
to TINY_TRAIN / TINY_VAL, shrink image sizes / queries) and append a ``TrainNetCase``; extra
command-line overrides go in ``overrides``. Keep one iteration around a second on a CPU.
"""
import glob
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import Tuple

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True)
class TrainNetCase:
    config: str  # relative to the repository root
    overrides: Tuple[str, ...] = ()  # appended to every command line (shrink model / data)
    amp_xfail: str = ""  # reason AMP is known to fail for this model (the AMP tests then xfail)


CASES = [
    pytest.param(TrainNetCase("tests/engine/configs/tiny_retinanet.py"), id="tiny_retinanet"),
    pytest.param(TrainNetCase("tests/engine/configs/dino_r18_tiny.py"), id="dino_r18_tiny"),
    pytest.param(TrainNetCase("tests/engine/configs/co_dino_r18_tiny.py"), id="co_dino_r18_tiny"),
    pytest.param(TrainNetCase("tests/engine/configs/co_deformable_detr_tiny.py"), id="co_deformable_detr_tiny"),
    pytest.param(TrainNetCase("tests/engine/configs/conditional_detr_r18_tiny.py"), id="conditional_detr_r18_tiny"),
]

HAVE_CV2 = importlib.util.find_spec("cv2") is not None  # Detectron2's Visualizer needs OpenCV
ITERS = 4  # first run; checkpoints every 2 iterations -> model_0000001 (then deleted), model_0000003, model_final


def write_tiny_coco(root: str, num_train: int = 6, num_val: int = 4, size: int = 64, seed: int = 0,
                    empty_train_every: int = 0) -> None:
    """COCO json + PNGs: dark images with 1-2 filled red (class 1) / green (class 2) rectangles;
    with ``empty_train_every=n``, training images i with i % n == 1 are empty (no rectangle, no
    annotation)."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    categories = [{"id": 1, "name": "red"}, {"id": 2, "name": "green"}]
    colors = {1: (220, 40, 40), 2: (40, 220, 40)}
    for split, count in (("train", num_train), ("val", num_val)):
        images, annotations = [], []
        for i in range(count):
            pixels = np.full((size, size, 3), 30, np.uint8)
            empty = split == "train" and empty_train_every and i % empty_train_every == 1
            for _ in range(0 if empty else int(rng.integers(1, 3))):
                w, h = (int(v) for v in rng.integers(12, 28, size=2))
                x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
                cat = int(rng.integers(1, 3))
                pixels[y : y + h, x : x + w] = colors[cat]
                annotations.append(
                    {"id": len(annotations) + 1, "image_id": i + 1, "category_id": cat,
                     "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0}
                )
            name = f"{split}_{i}.png"
            Image.fromarray(pixels).save(os.path.join(root, "images", name))
            images.append({"id": i + 1, "file_name": name, "width": size, "height": size})
        with open(os.path.join(root, f"{split}.json"), "w") as f:
            json.dump({"images": images, "annotations": annotations, "categories": categories}, f)


@pytest.fixture(scope="module")
def tiny_coco(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("tiny_coco"))
    write_tiny_coco(root)
    return root


def train_net_command(case: TrainNetCase, data_root: str, output_dir: str, *args: str, flags=()):
    """The command line and environment of a train_net.py run of ``case`` on the CPU."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (os.path.join(ROOT, "projects"), env.get("PYTHONPATH")) if p)
    env.update(CODETR_TINY_COCO=data_root, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    cmd = [sys.executable, os.path.join(ROOT, "train_net.py"), *flags, "--config-file", case.config,
           "train.device=cpu", f"train.output_dir={output_dir}", "train.log_period=1", *case.overrides, *args]
    return cmd, env


def run_train_net(case: TrainNetCase, data_root: str, output_dir: str, *args: str, flags=(), timeout=300,
                  expect_failure=False) -> str:
    """Run train_net.py; return its stdout+stderr. Fails the test with the log when the exit
    status is non-zero (or, with ``expect_failure``, when it is zero)."""
    cmd, env = train_net_command(case, data_root, output_dir, *args, flags=flags)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=timeout)
    failed = proc.returncode != 0
    assert failed == expect_failure, f"{' '.join(cmd)}\nexit {proc.returncode}\n{proc.stdout[-6000:]}"
    return proc.stdout


def read_metrics(output_dir: str):
    with open(os.path.join(output_dir, "metrics.json")) as f:
        return [json.loads(line) for line in f if line.strip()]


def training_iterations(metrics):
    return [m["iteration"] for m in metrics if "total_loss" in m]


@pytest.fixture(scope="module", params=CASES)
def case(request):
    return request.param


@pytest.fixture(scope="module")
def trained(case, tiny_coco, tmp_path_factory):
    """One short run with EMA, gradient clipping, periodic eval and visualisations.

    Its output folder is deleted when the case's tests are done: a checkpoint here holds the model,
    the optimizer state and the EMA weights (up to ~0.25 GB), and CI machines have little disk.
    """
    out = str(tmp_path_factory.mktemp("train"))
    log = run_train_net(
        case, tiny_coco, out,
        f"train.max_iter={ITERS}", "train.checkpointer.period=2", "train.checkpointer.max_to_keep=1",
        "train.eval_period=2",
        "train.model_ema.enabled=True", "train.model_ema.decay=0.9",
        "train.clip_grad.enabled=True", "train.clip_grad.max_norm=0.1",
        *(("train.vis_output_images=2",) if HAVE_CV2 else ()),
    )
    yield out, log
    shutil.rmtree(out, ignore_errors=True)


def test_train_writes_checkpoints_metrics_and_events(trained):
    out, log = trained
    for name in ("model_0000003.pth", "model_final.pth", "config.yaml", "log.txt"):
        assert os.path.isfile(os.path.join(out, name)), name
    # periodic checkpoints after iterations 1 and 3; max_to_keep=1 deleted the first
    assert "Saving checkpoint to " + os.path.join(out, "model_0000001.pth") in log
    assert not os.path.exists(os.path.join(out, "model_0000001.pth"))
    with open(os.path.join(out, "last_checkpoint")) as f:
        assert f.read().strip() == "model_final.pth"
    assert glob.glob(os.path.join(out, "events.out.tfevents.*")), "no TensorBoard event file"

    metrics = read_metrics(out)
    assert training_iterations(metrics) == list(range(ITERS))
    assert all(np.isfinite(m["total_loss"]) for m in metrics if "total_loss" in m)
    assert any("grad_norm" in m for m in metrics), "gradient clipping did not log grad_norm"
    evals = {m["iteration"]: m for m in metrics if "bbox/AP" in m}
    # Detectron2 logs the periodic evaluation after 2 iterations under iteration index 1, the
    # final one under max_iter
    assert sorted(evals) == [1, ITERS], "periodic and final evaluation expected"
    assert "ema/bbox/AP" in evals[ITERS], "EMA weights were not evaluated"

    assert "eta:" in log
    assert "Evaluation results for bbox" in log
    assert "Starting training from iteration 0" in log


def test_checkpoint_holds_trainer_and_ema_state(trained):
    out, _ = trained
    ckpt = torch.load(os.path.join(out, "model_final.pth"), map_location="cpu", weights_only=True)
    assert ckpt["iteration"] == ITERS - 1
    assert "optimizer" in ckpt["trainer"]
    ema = ckpt["ema"]
    assert int(ema["n_averaged"]) == ITERS
    assert {f"module.{k}" for k in ckpt["model"]} <= set(ema)
    # with decay 0.9 and changing weights, the average differs from the last weights
    assert any(not torch.equal(ema[f"module.{k}"], v) for k, v in ckpt["model"].items() if v.is_floating_point())


def test_visualisations_written(trained):
    if not HAVE_CV2:
        pytest.skip("Detectron2's Visualizer needs OpenCV (opencv-python-headless)")
    out, _ = trained
    images = sorted(glob.glob(os.path.join(out, "vis", "*.jpg")))
    assert len(images) == 2
    assert Image.open(images[0]).size == (64, 64)


def test_resume_continues_from_last_checkpoint(case, tiny_coco, trained, tmp_path):
    src, _ = trained
    out = str(tmp_path / "resumed")
    # what --resume reads: last_checkpoint, the checkpoint it names, and metrics.json (appended)
    shutil.copytree(src, out, ignore=shutil.ignore_patterns("model_0*.pth", "vis", "events.out.*"))
    log = run_train_net(case, tiny_coco, out, f"train.max_iter={ITERS + 2}", "train.checkpointer.period=100",
                        "train.model_ema.enabled=True", "train.eval_period=0", flags=("--resume",))
    assert f"Starting training from iteration {ITERS}" in log
    assert "Loading ema from" in log
    assert training_iterations(read_metrics(out)) == list(range(ITERS + 2))  # appended, no restart
    ckpt = torch.load(os.path.join(out, "model_final.pth"), map_location="cpu", weights_only=True)
    assert ckpt["iteration"] == ITERS + 1
    assert int(ckpt["ema"]["n_averaged"]) == ITERS + 2


def test_eval_only(case, tiny_coco, trained, tmp_path):
    src, _ = trained
    log = run_train_net(case, tiny_coco, str(tmp_path / "eval"), f"train.init_checkpoint={src}/model_final.pth",
                        "train.model_ema.enabled=True", flags=("--eval-only",))
    assert "Evaluating the EMA weights" in log
    assert "Evaluation results for bbox" in log
    assert "copypaste: AP,AP50,AP75,APs,APm,APl" in log
    assert "Starting training" not in log


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_amp_on_cpu(case, tiny_coco, tmp_path, dtype, request):
    if case.amp_xfail:
        request.applymarker(pytest.mark.xfail(reason=case.amp_xfail, strict=False))
    out = str(tmp_path / dtype)
    log = run_train_net(case, tiny_coco, out, "train.max_iter=2", "train.eval_period=0",
                        "train.amp.enabled=True", f"train.amp.dtype={dtype}")
    assert f"mixed precision: torch.{dtype} autocast" in log
    assert training_iterations(read_metrics(out)) == [0, 1]
    ckpt = torch.load(os.path.join(out, "model_final.pth"), map_location="cpu", weights_only=True)
    assert ("grad_scaler" in ckpt["trainer"]) == (dtype == "float16")


def test_two_cpu_processes_with_gloo(case, tiny_coco, tmp_path):
    out = str(tmp_path / "ddp")
    log = run_train_net(case, tiny_coco, out, "train.max_iter=2", "train.eval_period=0",
                        flags=("--num-gpus", "2", "--dist-url", "auto"))
    assert "World size: 2" in log
    assert "backend gloo" in log
    assert training_iterations(read_metrics(out)) == [0, 1]
    assert "Evaluation results for bbox" in log
    assert os.path.isfile(os.path.join(out, "model_final.pth"))


def load_train_net_module():
    spec = importlib.util.spec_from_file_location("train_net_under_test", os.path.join(ROOT, "train_net.py"))
    train_net = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_net)
    return train_net


@pytest.mark.parametrize("fails", [False, True])
def test_worker_tears_down_the_process_group(monkeypatch, tmp_path, fails):
    """launch runs train_net.worker: main, then destroy_process_group, also when main raises
    (a gloo worker left with its group sometimes aborts at exit, failing a finished run)."""
    import torch.distributed as dist

    train_net = load_train_net_module()

    def fake_main(args):
        assert dist.is_initialized()
        if fails:
            raise RuntimeError("main failed")
        return {"bbox": {"AP": 1.0}}

    monkeypatch.setattr(train_net, "main", fake_main)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        if fails:
            with pytest.raises(RuntimeError, match="main failed"):
                train_net.worker(None)
        else:
            assert train_net.worker(None) == {"bbox": {"AP": 1.0}}
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.mark.parametrize(
    "num_gpus, device, hidden",
    [(2, "cpu", True), (2, "cuda", False), (1, "cpu", False)],
)
def test_cpu_workers_do_not_see_cuda(monkeypatch, num_gpus, device, hidden):
    """Detectron2's launch picks NCCL whenever CUDA is visible: CPU multi-process runs hide it."""
    import argparse

    train_net = load_train_net_module()
    # setenv (not delenv) so that pytest restores the variable after the test
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "untouched")
    args = argparse.Namespace(
        config_file=os.path.join(ROOT, "tests/engine/configs/tiny_retinanet.py"),
        opts=[f"train.device={device}"], num_gpus=num_gpus, num_machines=1,
    )
    train_net.hide_cuda_for_cpu_workers(args)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ("" if hidden else "untouched")


@pytest.mark.parametrize(
    "override, expected",
    [("train.max_iters=5", "did you mean 'train.max_iter'"), ("train.foo=1", "no key 'foo' under 'train'")],
)
def test_unknown_override_fails_at_start(tiny_coco, tmp_path, override, expected):
    """A typo in an override stops train_net.py before anything is built, with the key named
    (it used to train with the default)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (os.path.join(ROOT, "projects"), env.get("PYTHONPATH")) if p)
    env.update(CODETR_TINY_COCO=tiny_coco, OMP_NUM_THREADS="1")
    cmd = [sys.executable, os.path.join(ROOT, "train_net.py"), "--config-file", "tests/engine/configs/tiny_retinanet.py",
           "train.device=cpu", f"train.output_dir={tmp_path}", "train.max_iter=2", override]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=300)
    assert proc.returncode != 0, proc.stdout[-3000:]
    assert expected in proc.stdout, proc.stdout[-3000:]
    assert not os.listdir(tmp_path)  # nothing ran: no log, no checkpoint


@pytest.mark.parametrize(
    "overrides, max_iter, switch, lr_steps",
    [
        # max_iter from the dataset: 2 epochs x (6 images / batch 2) = 6; switch at 1/3 of the run
        # (2/3 of 2 epochs); LR steps at 8/12 and 11/12 of it: 4 and 6 (= max_iter: never acts)
        ((), 6, 2, [4]),
        # max_iter given, or the run made longer in epochs: the same fractions of 12 iterations
        (("train.max_iter=12",), 12, 4, [8, 11]),
        (("train.epochs=4",), 12, 4, [8, 11]),
    ],
)
def test_schedule_follows_max_iter_and_is_logged(tiny_coco, tmp_path, overrides, max_iter, switch, lr_steps):
    """train_net resolves the schedule before building the model: TOOD's head reads
    "${train.max_iter}" and switches ATSS -> TAL at the same fraction of the run (epoch 2/3 of its
    2-epoch schedule) whether max_iter comes from the dataset, from train.epochs or from the command
    line; the LR steps follow too, and the resolved schedule is logged at start."""
    out = str(tmp_path / "tood")
    log = run_train_net(TrainNetCase("tests/engine/configs/tood_r18_tiny.py"), tiny_coco, out, *overrides,
                        "train.eval_period=100")
    assert f"3 iterations per epoch; max_iter={max_iter}" in log, log[-3000:]
    assert f"ATSS -> TAL switch at iteration {switch} " in log, log[-3000:]
    assert f"LR schedule: max_iter={max_iter}; x0.1 at iterations {lr_steps}" in log, log[-3000:]
    assert "TOODHead: ATSS assignment from iteration 0" in log, log[-3000:]
    assert f"TOODHead: task-aligned (TAL) assignment from iteration {switch}" in log, log[-3000:]
    assert training_iterations(read_metrics(out))[-1] == max_iter - 1


# ------------------------------------------------------------------------------------------------
# Checkpoint safety and matching, flags after the overrides, no silent overwrite (issue 14)
# ------------------------------------------------------------------------------------------------
DINO_TINY = TrainNetCase("tests/engine/configs/dino_r18_tiny.py")
RETINANET_TINY = TrainNetCase("tests/engine/configs/tiny_retinanet.py")


class WritesMarker:
    """Unpickling this object runs ``os.system("touch <marker>")``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("ext", ["pkl", "pth"])
def test_eval_only_refuses_a_crafted_checkpoint(tiny_coco, tmp_path, ext):
    """A checkpoint whose unpickling would run code: train_net exits non-zero naming the file and
    the refused global, and the code never runs (the marker file is not created)."""
    import pickle

    marker = tmp_path / "marker"
    path = str(tmp_path / f"evil.{ext}")
    payload = {"model": {"w": np.zeros(2, np.float32)}, "__author__": "x", "payload": WritesMarker(marker)}
    if ext == "pkl":
        with open(path, "wb") as f:
            pickle.dump(payload, f)
    else:
        torch.save(payload, path)
    log = run_train_net(DINO_TINY, tiny_coco, str(tmp_path / "eval"), f"train.init_checkpoint={path}",
                        flags=("--eval-only",), expect_failure=True)
    assert "UnsafeCheckpointError" in log and path in log and "posix.system" in log, log[-3000:]
    assert "train.allow_unsafe_pickle=True" in log
    assert not marker.exists(), "the crafted checkpoint's code ran"
    assert "Evaluation results" not in log


def write_dino_tiny_checkpoint(path: str, seed: int, *overrides: str) -> dict:
    """A DetectionCheckpointer-format file of the DINO-tiny model built with ``overrides``."""
    from detectron2.config import LazyConfig, instantiate

    cfg = LazyConfig.apply_overrides(LazyConfig.load(os.path.join(ROOT, DINO_TINY.config)), list(overrides))
    torch.manual_seed(seed)
    state = instantiate(cfg.model).state_dict()
    torch.save({"model": state}, path)
    return state


def test_eval_only_refuses_a_checkpoint_of_another_class_count(tiny_coco, tmp_path):
    path = str(tmp_path / "five_classes.pth")
    write_dino_tiny_checkpoint(path, 0, "model.num_classes=5")
    log = run_train_net(DINO_TINY, tiny_coco, str(tmp_path / "eval"), f"train.init_checkpoint={path}",
                        flags=("--eval-only",), expect_failure=True)
    assert "CheckpointMismatchError" in log and f"{path} does not fit the model" in log, log[-3000:]
    assert "shape-mismatched 9" in log and "(5, 128) vs (2, 128)" in log
    assert "train.init_checkpoint_partial=True" in log
    assert "Evaluation results" not in log
    # asked for explicitly: the matching tensors load, the class layers keep their initialisation
    log = run_train_net(DINO_TINY, tiny_coco, str(tmp_path / "eval"), f"train.init_checkpoint={path}",
                        "train.init_checkpoint_partial=True", flags=("--eval-only",))
    assert "Partial load of" in log and "Evaluation results for bbox" in log


def test_rerun_refuses_to_overwrite_and_flags_after_overrides(tiny_coco, tmp_path):
    """A second training run in the same train.output_dir without --resume stops before touching
    the previous checkpoints; --resume written after the overrides resumes; train.overwrite=True
    starts over."""
    out = str(tmp_path / "run")
    common = ("train.eval_period=0", "train.checkpointer.period=100")
    run_train_net(RETINANET_TINY, tiny_coco, out, "train.max_iter=2", *common)
    final = os.path.join(out, "model_final.pth")
    with open(final, "rb") as f:
        first = f.read()

    log = run_train_net(RETINANET_TINY, tiny_coco, out, "train.max_iter=2", *common, expect_failure=True)
    assert "already holds checkpoints of a previous run" in log and "--resume" in log, log[-3000:]
    assert "train.overwrite=True" in log and "Starting training" not in log
    with open(final, "rb") as f:
        assert f.read() == first, "model_final.pth was overwritten"

    log = run_train_net(RETINANET_TINY, tiny_coco, out, "train.max_iter=3", *common, "--resume")
    assert "Starting training from iteration 2" in log, log[-3000:]
    assert training_iterations(read_metrics(out)) == [0, 1, 2]

    log = run_train_net(RETINANET_TINY, tiny_coco, out, "train.max_iter=1", *common, "train.overwrite=True")
    assert "Starting training from iteration 0" in log
    assert torch.load(final, map_location="cpu", weights_only=True)["iteration"] == 0


def test_parse_args_accepts_flags_after_the_overrides(capsys):
    from detectron2.engine import default_argument_parser

    from codetr.engine import parse_args

    parser = default_argument_parser()
    args = parse_args(parser, ["--config-file", "c.py", "train.max_iter=5", "--resume", "--num-gpus", "2",
                               "train.device=cpu", "--dist-url=auto", "--eval-only"])
    assert args.resume and args.eval_only and args.num_gpus == 2 and args.dist_url == "auto"
    assert args.opts == ["train.max_iter=5", "train.device=cpu"] and args.config_file == "c.py"
    args = parse_args(parser, ["--resume", "--config-file", "c.py", "a.b=1"])
    assert args.resume and not args.eval_only and args.num_gpus == 1 and args.opts == ["a.b=1"]
    for bad, message in ((["train.max_iter", "5"], "'train.max_iter' is not KEY=VALUE"),
                         (["--resmue"], "unknown flag '--resmue'")):
        with pytest.raises(SystemExit):
            parse_args(parser, ["--config-file", "c.py", "a.b=1", *bad])
        assert message in capsys.readouterr().err


def test_deqdet_trains_and_evaluates(tiny_coco, tmp_path):
    """DEQDet-R18 (configs/deqdet/deqdet_r18_shapes.py on the tiny data): 2 iterations, every
    supervised output a logged loss (init, init^1, init^2, iter1, iter3 -> suffixes _0 .. _3 and
    none), then the final evaluation with g + 4 refinement steps."""
    out = str(tmp_path / "deqdet")
    log = run_train_net(TrainNetCase("tests/engine/configs/deqdet_r18_tiny.py"), tiny_coco, out,
                        "train.max_iter=2", "train.eval_period=0", "train.checkpointer.period=100")
    metrics = read_metrics(out)
    assert training_iterations(metrics) == [0, 1]
    losses = {k for m in metrics for k in m if k.startswith("loss_")}
    assert losses == {f"loss_{n}{s}" for n in ("class", "bbox", "giou") for s in ("", "_0", "_1", "_2", "_3")}
    assert all(np.isfinite(m["total_loss"]) for m in metrics if "total_loss" in m)
    assert "Evaluation results for bbox" in log


def test_co_deqdet_trains_and_evaluates(tiny_coco, tmp_path):
    """Co-DEQDet-R18 (configs/deqdet/co_deqdet_r18_shapes.py on the tiny data): 2 iterations with
    DEQDet's losses, the ATSS head's and its positive queries' on every supervised output of the
    loop (``_aux0``, ``_aux0_0`` .. ``_aux0_3``), then the final evaluation of DEQDet alone."""
    out = str(tmp_path / "co_deqdet")
    log = run_train_net(TrainNetCase("tests/engine/configs/co_deqdet_r18_tiny.py"), tiny_coco, out,
                        "train.max_iter=2", "train.eval_period=0", "train.checkpointer.period=100")
    metrics = read_metrics(out)
    assert training_iterations(metrics) == [0, 1]
    losses = {k for m in metrics for k in m if k.startswith("loss_")}
    suffixes = ("", "_0", "_1", "_2", "_3")
    detr = {f"loss_{n}{s}" for n in ("class", "bbox", "giou") for s in suffixes}
    aux = {f"loss_{n}_aux0{s}" for n in ("class", "bbox", "giou") for s in suffixes}
    assert losses == detr | aux | {"loss_cls_head0", "loss_bbox_head0", "loss_centerness_head0"}
    assert all(np.isfinite(m["total_loss"]) for m in metrics if "total_loss" in m)
    assert "Evaluation results for bbox" in log


def test_co_dino_lite0_trains_from_the_pretrained_backbone(tiny_coco, tmp_path):
    """Co-DINO-Lite0 (configs/co_dino/co_dino_lite0_shapes.py on the tiny data): 2 iterations and the
    final evaluation; in the final checkpoint the frozen stages (stem, timm stages 1-2) still hold
    the installed package's ImageNet weights, the trained ones have moved from them, and the
    backbone's parameters had 0.1 x the base LR."""
    from codetr.modeling.backbones import lite_source_weights

    out = str(tmp_path / "co_dino_lite0")
    log = run_train_net(TrainNetCase("tests/engine/configs/co_dino_lite0_tiny.py"), tiny_coco, out,
                        "train.max_iter=2", "train.eval_period=0", "train.checkpointer.period=100")
    metrics = read_metrics(out)
    assert training_iterations(metrics) == [0, 1]
    assert all(np.isfinite(m["total_loss"]) for m in metrics if "total_loss" in m)
    assert "Evaluation results for bbox" in log
    ckpt = torch.load(os.path.join(out, "model_final.pth"), map_location="cpu", weights_only=True)
    weights, source = ckpt["model"], lite_source_weights("lite0")
    prefix = "detector.backbone."
    assert torch.equal(weights[prefix + "stem.conv_stem.weight"], source["_conv_stem.weight"])  # frozen
    assert torch.equal(weights[prefix + "blocks.1.1.conv_pwl.weight"], source["_blocks.2._project_conv.weight"])
    trained = weights[prefix + "blocks.6.0.conv_pwl.weight"]  # stage 7, trained
    assert trained.shape == source["_blocks.15._project_conv.weight"].shape
    assert not torch.equal(trained, source["_blocks.15._project_conv.weight"])
    initial_lrs = {group["initial_lr"] for group in ckpt["trainer"]["optimizer"]["param_groups"]}
    assert sorted(initial_lrs) == pytest.approx([5e-5, 5e-4])  # the backbone's, everything else's


@pytest.mark.parametrize("config, expected", [
    # DETR family: the matcher sees the NaN predictions first (scipy's "matrix contains invalid
    # numeric entries" before); TOOD: its losses (a segmentation fault in deform_conv2d before)
    ("tests/engine/configs/dino_r18_tiny.py", "iteration 1: HungarianMatcher: the matching cost"),
    ("tests/engine/configs/tood_r18_tiny.py", "iteration 1: loss 'loss_cls' is nan"),
])
def test_divergence_stops_with_the_iteration_named(tiny_coco, tmp_path, config, expected):
    """optimizer.lr=1e30: the first step makes the weights overflow; iteration 1 stops with a
    FloatingPointError naming it, before the optimizer step, no checkpoint written."""
    out = str(tmp_path / "diverged")
    log = run_train_net(TrainNetCase(config), tiny_coco, out, "optimizer.lr=1e30", "train.max_iter=4",
                        "train.checkpointer.period=100", expect_failure=True)
    assert f"FloatingPointError: {expected}" in log, log[-3000:]
    assert "invalid numeric entries" not in log and "iter: 2 " not in log
    assert not glob.glob(os.path.join(out, "model_*.pth"))


# ------------------------------------------------------------------------------------------------
# Multi-process runs never hang silently; one live run per output folder (issue 19)
# ------------------------------------------------------------------------------------------------
def test_dn_on_points_trains_in_two_processes_when_one_has_no_boxes(tmp_path):
    """DN-Conditional-DETR (DN on 2-d points), 2 gloo processes, 2 training images of which the
    second is empty: Detectron2's sampler gives each process one of them in every iteration, so
    one process has boxes and the other none. It used to hang at iteration 0 (the process without
    boxes built no denoising group and skipped its position head's parameters, for which DDP on
    the other process waited forever); it trains and evaluates."""
    data = str(tmp_path / "data")
    write_tiny_coco(data, num_train=2, empty_train_every=2)
    out = str(tmp_path / "ddp")
    log = run_train_net(TrainNetCase("tests/engine/configs/dn_conditional_detr_r18_tiny.py"), data, out,
                        "train.max_iter=3", "train.eval_period=0", "train.checkpointer.period=100",
                        "train.ddp_timeout=60",  # a regression fails with the watchdog's error, not a test timeout
                        flags=("--num-gpus", "2", "--dist-url", "auto"))
    assert "World size: 2" in log and "backend gloo" in log
    assert training_iterations(read_metrics(out)) == [0, 1, 2]
    assert "Evaluation results for bbox" in log
    assert not os.path.exists(os.path.join(out, "train_net.lock")), "the lock was not released"


@pytest.mark.parametrize("skip", ["collective", "parameter"])
def test_a_process_that_skips_a_collective_stops_the_run_naming_rank_and_iteration(tiny_coco, tmp_path, skip):
    """From iteration 1 on, rank 1 skips an all-reduce the other rank makes, or a parameter the
    other rank reduces (tests/engine/configs/skips_a_collective_tiny.py): the run used to wait
    forever (30 minutes: Detectron2's default timeout, then gloo's bare timeout error). Now it
    exits non-zero: with train.ddp_timeout=5, with the watchdog's error naming a rank and
    iteration 1 and the stuck process's Python stacks; for the parameter at once, with rank 1's
    error naming it."""
    out = str(tmp_path / "hang")
    log = run_train_net(TrainNetCase("tests/engine/configs/skips_a_collective_tiny.py"), tiny_coco, out,
                        "train.max_iter=3", "train.eval_period=0", "train.ddp_timeout=5", f"model.skip={skip}",
                        flags=("--num-gpus", "2", "--dist-url", "auto"), expect_failure=True)
    if skip == "collective":
        assert re.search(r"rank [01]: training iteration 1 has not finished after 5 s \(train\.ddp_timeout=5\)",
                         log), log[-4000:]
        assert "Python stacks of this process" in log
    else:
        assert ("UnusedParametersError: rank 1, iteration 1: 1 trainable parameters got no gradient (extra)"
                in log), log[-4000:]
        assert "has not finished" not in log
    assert training_iterations(read_metrics(out)) == [0]


def wait_for_lock_owner(path: str, proc: subprocess.Popen, log_path: str, deadline_s: float = 300) -> dict:
    """The record of the lock file ``path`` once ``proc`` has written it (fails if ``proc`` exits)."""
    import time

    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        assert proc.poll() is None, f"the first run exited ({proc.returncode}):\n" + open(log_path).read()[-4000:]
        try:
            with open(path) as f:
                record = json.loads(f.read() or "{}")
        except (FileNotFoundError, json.JSONDecodeError):
            record = {}
        if record.get("pid") == proc.pid:
            return record
        time.sleep(0.2)
    raise AssertionError(f"{path} was not written by pid {proc.pid}")


def test_a_live_run_owns_its_output_dir(tiny_coco, tmp_path):
    """While a run trains into a folder, a second training run and an --eval-only run into it are
    refused, naming the first run's process; the first run is unaffected. After the first run is
    SIGKILLed its lock file is stale: the next run takes it over (naming the dead process), trains
    and removes the lock file when it ends."""
    import signal
    import socket

    out = str(tmp_path / "run")
    lock = os.path.join(out, "train_net.lock")
    common = ("train.eval_period=0", "train.checkpointer.period=1000000")
    cmd, env = train_net_command(RETINANET_TINY, tiny_coco, out, "train.max_iter=1000000", *common)
    log_path = str(tmp_path / "first.log")
    with open(log_path, "w") as log_file:
        first = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        record = wait_for_lock_owner(lock, first, log_path)
        assert record["host"] == socket.gethostname() and "train.max_iter=1000000" in record["command"]
        owner = f"pid {first.pid} on host {socket.gethostname()}, started "
        for flags in ((), ("--eval-only",)):
            log = run_train_net(RETINANET_TINY, tiny_coco, out, "train.max_iter=2", *common, flags=flags,
                                expect_failure=True)
            assert "OutputDirLockedError" in log and f"train.output_dir={out!r} is in use by another run" in log, \
                log[-3000:]
            assert owner in log and "choose another train.output_dir" in log
            assert "Starting training" not in log and "Evaluation results" not in log
        assert first.poll() is None, "the first run stopped"
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    with open(lock) as f:
        assert json.load(f)["pid"] == first.pid  # left behind: the run could not clean up
    iterations = [json.loads(line)["iteration"] for line in open(os.path.join(out, "metrics.json")).readlines()[:-1]]
    assert iterations == list(range(len(iterations))), "another run wrote into the first run's metrics"

    log = run_train_net(RETINANET_TINY, tiny_coco, out, "train.max_iter=1", *common)
    assert f"Taking over the lock file {lock} of a run that is no longer alive (pid {first.pid} " in log, log[-3000:]
    assert "Starting training from iteration 0" in log
    assert not os.path.exists(lock), "the lock was not released"
