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


def write_tiny_coco(root: str, num_train: int = 6, num_val: int = 4, size: int = 64, seed: int = 0) -> None:
    """COCO json + PNGs: dark images with 1-2 filled red (class 1) / green (class 2) rectangles."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    categories = [{"id": 1, "name": "red"}, {"id": 2, "name": "green"}]
    colors = {1: (220, 40, 40), 2: (40, 220, 40)}
    for split, count in (("train", num_train), ("val", num_val)):
        images, annotations = [], []
        for i in range(count):
            pixels = np.full((size, size, 3), 30, np.uint8)
            for _ in range(int(rng.integers(1, 3))):
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


def run_train_net(case: TrainNetCase, data_root: str, output_dir: str, *args: str, flags=(), timeout=300) -> str:
    """Run train_net.py; return its stdout+stderr (fails the test with the log on error)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (os.path.join(ROOT, "projects"), env.get("PYTHONPATH")) if p)
    env.update(CODETR_TINY_COCO=data_root, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    cmd = [sys.executable, os.path.join(ROOT, "train_net.py"), *flags, "--config-file", case.config,
           "train.device=cpu", f"train.output_dir={output_dir}", "train.log_period=1", *case.overrides, *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)}\nexit {proc.returncode}\n{proc.stdout[-6000:]}"
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


def test_model_config_reads_iters_per_epoch_derived_from_the_dataset(tiny_coco, tmp_path):
    """train_net resolves the schedule before building the model: TOOD's head reads
    "${train.iters_per_epoch}" (6 images / batch 2 = 3) and switches ATSS -> TAL after 2/3 epoch."""
    out = str(tmp_path / "tood")
    log = run_train_net(TrainNetCase("tests/engine/configs/tood_r18_tiny.py"), tiny_coco, out, "train.max_iter=4",
                        "train.eval_period=100")
    assert "TOODHead: ATSS assignment from iteration 0" in log, log[-3000:]
    assert "TOODHead: task-aligned (TAL) assignment from iteration 2" in log, log[-3000:]
