"""tools/benchmark_model.py: synthetic inputs, the reference-op switch and a full --compare run."""
import importlib.util
import os
import subprocess
import sys

import torch
from torch import nn

from codetr.layers import MSDeformAttn

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(ROOT, "tools", "benchmark_model.py")


def load_tool():
    spec = importlib.util.spec_from_file_location("benchmark_model", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_synthetic_batch_format():
    tool = load_tool()
    batch = tool.synthetic_batch(3, 48, num_classes=5, gen=torch.Generator().manual_seed(0), train=True)
    assert len(batch) == 3
    for item in batch:
        assert item["image"].shape == (3, 48, 48) and item["image"].dtype == torch.uint8
        boxes = item["instances"].gt_boxes.tensor
        assert 1 <= len(boxes) <= 5
        assert (boxes[:, 2:] > boxes[:, :2]).all() and (boxes >= 0).all() and (boxes <= 48).all()
        assert ((item["instances"].gt_classes >= 0) & (item["instances"].gt_classes < 5)).all()
    infer = tool.synthetic_batch(1, 48, 5, torch.Generator().manual_seed(0), train=False)
    assert "instances" not in infer[0]


def test_set_reference_op_reaches_nested_modules():
    tool = load_tool()
    model = nn.Sequential(MSDeformAttn(32, 4, 2, 2), nn.Sequential(nn.Linear(2, 2), MSDeformAttn(32, 4, 2, 2)))
    assert tool.set_reference_op(model, True) == 2
    assert all(m.use_reference_op for m in model.modules() if isinstance(m, MSDeformAttn))
    tool.set_reference_op(model, False)
    assert not any(m.use_reference_op for m in model.modules() if isinstance(m, MSDeformAttn))


def test_compare_run_prints_markdown_rows():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (os.path.join(ROOT, "projects"), env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, TOOL, "--config-file", "tests/engine/configs/tiny_retinanet.py", "--device", "cpu",
           "--image-size", "64", "--batch-size", "2", "--iters", "2", "--warmup", "1", "--compare"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| tiny_retinanet.py")]
    assert [r.split("|")[6].strip() for r in rows] == ["compiled", "reference", "reference / compiled"]
    cells = rows[0].split("|")
    assert float(cells[7]) > 0  # train s/iter
    assert float(cells[9]) > 0  # infer ms/img
