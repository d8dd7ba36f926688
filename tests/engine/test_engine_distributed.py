"""Multi-process training never hangs (issue 19): every detector family trains in 2 gloo processes
when one process's batch has boxes and the other's has none, and the guards of
codetr.engine.distributed (no-gradient check, step watchdog) turn a would-be hang into an error
naming the rank and the iteration.

The family test spawns one pair of processes for all families (the start-up is paid once): per
family, the model of its config (shrunk as the tiny test configs are), DDP as train_net wraps it
(``find_unused_parameters=False``), 2 iterations where rank r's image has boxes in iteration i iff
r == i: each process checks after backward that every trainable parameter got a gradient (what DDP
needs; before the fix DN-on-points left the denoising queries' position head without one on the
process without boxes, and DDP waited forever), and that both processes logged the same loss keys.
The process group's timeout (120 s) bounds a regression; it fails instead of hanging.
"""
import datetime
import json
import os
import threading
import warnings

import pytest
import torch
import torch.multiprocessing as mp

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# (id, config, overrides): each meta-architecture and each kind of query group
FAMILIES = [
    # DINO: CDN groups, two-stage queries
    ("dino_cdn", "tests/engine/configs/dino_r18_tiny.py", []),
    # ConditionalDETR: DN-DETR denoising on 4-d anchors (DN-DETR), on 2-d points (DN-Conditional-DETR)
    ("dn_detr", "configs/dn_detr/dn_detr_r18_shapes.py", ["model.num_queries=20"]),
    ("dn_conditional_points", "tests/engine/configs/dn_conditional_detr_r18_tiny.py", []),
    # CoDETR: positive queries, Co-DINO style (Faster R-CNN + ATSS) and Co-Deformable style
    ("co_dino_positive_queries", "tests/engine/configs/co_dino_r18_tiny.py", []),
    ("co_deformable_positive_queries", "tests/engine/configs/co_deformable_detr_tiny.py", []),
    # the other auxiliary head set: Faster R-CNN + T-Head (TAL assignment)
    ("co_dino_tood_aux", "configs/co_dino/co_dino_tood_r18_shapes.py",
     ["model.num_queries=20", "model.detector.denoising.num_dn_queries=10", "model.positive_queries.max_queries=30"]),
    # CoDETR on the single-scale family (ATSS on the pyramid adapter)
    ("co_conditional", "configs/conditional_detr/co_conditional_detr_r18_shapes.py",
     ["model.num_queries=20", "model.positive_queries.max_queries=30"]),
    # AdaMixer meta-architecture with the fixed-point loop (DEQDet) and with Co-DETR's heads
    ("deqdet", "tests/engine/configs/deqdet_r18_tiny.py", []),
    ("co_deqdet", "tests/engine/configs/co_deqdet_r18_tiny.py", []),
    # TOOD (Detectron2's dense-detector flow, T-Head with ATSS / TAL assignment)
    ("tood", "tests/engine/configs/tood_r18_tiny.py", ["train.max_iter=10"]),
]
ITERS = 2
SIZE = 64


def make_input(with_boxes: bool, seed: int):
    """A Detectron2 training input: a 64x64 uint8 image, with 2 boxes of classes 0 and 1 or none."""
    from detectron2.structures import Boxes, Instances

    g = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 60, (3, SIZE, SIZE), generator=g, dtype=torch.uint8)
    boxes = torch.tensor([[8.0, 10.0, 30.0, 40.0], [34.0, 20.0, 60.0, 50.0]]) if with_boxes else torch.zeros(0, 4)
    for x0, y0, x1, y1 in boxes.int().tolist():
        image[:, y0:y1, x0:x1] = 200
    instances = Instances((SIZE, SIZE))
    instances.gt_boxes = Boxes(boxes)
    instances.gt_classes = torch.tensor([0, 1] if with_boxes else [], dtype=torch.int64)
    return {"image": image, "height": SIZE, "width": SIZE, "instances": instances}


def train_families(rank: int, world_size: int, store: str, out_dir: str, families) -> None:
    """One process of the family test: writes {family: [loss keys per iteration]} to out_dir."""
    import torch.distributed as dist
    from detectron2.config import LazyConfig, instantiate
    from detectron2.utils import comm
    from torch.nn.parallel import DistributedDataParallel

    from codetr.engine.distributed import check_parameters_received_gradients

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=FutureWarning)  # DDP's broadcast_buffers, as train_net passes it
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=120))
    results = {}
    try:
        for name, config, overrides in families:
            cfg = LazyConfig.apply_overrides(LazyConfig.load(os.path.join(ROOT, config)), overrides)
            torch.manual_seed(0)
            model = DistributedDataParallel(instantiate(cfg.model).train(), device_ids=None, broadcast_buffers=False,
                                            find_unused_parameters=False)
            optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
            keys = []
            for it in range(ITERS):
                losses = model([make_input(with_boxes=rank == it % world_size, seed=10 * it + rank)])
                total = sum(losses.values())
                assert torch.isfinite(total), (name, rank, it, losses)
                optimizer.zero_grad(set_to_none=True)
                total.backward()
                check_parameters_received_gradients(model, rank, it)
                optimizer.step()
                everyone = comm.all_gather(sorted(losses))
                assert all(k == everyone[0] for k in everyone), f"{name}: ranks logged different loss keys"
                keys.append(sorted(losses))
            results[name] = keys
    finally:
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(results, f)
        dist.destroy_process_group()


def test_every_family_trains_in_two_processes_when_one_has_no_boxes(tmp_path):
    mp.start_processes(train_families, args=(2, str(tmp_path / "store"), str(tmp_path), FAMILIES), nprocs=2,
                       join=True, start_method="spawn")
    for rank in (0, 1):
        with open(tmp_path / f"rank{rank}.json") as f:
            results = json.load(f)
        assert list(results) == [name for name, _, _ in FAMILIES]
        assert all(len(keys) == ITERS and keys[0] == keys[1] for keys in results.values())


# ------------------------------------------------------------------------------------------------
# the guards, in one process
# ------------------------------------------------------------------------------------------------
class TwoBranches(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.used = torch.nn.Linear(2, 1)
        self.skipped = torch.nn.Linear(2, 1)
        self.frozen = torch.nn.Linear(2, 1).requires_grad_(False)

    def forward(self, x, branch=False):
        out = self.used(x) + self.frozen(x)
        return out + self.skipped(x) if branch else out


def test_a_parameter_without_gradient_is_named_with_rank_and_iteration(tmp_path):
    """The process whose graph skipped a parameter raises, naming it (without the DDP prefix),
    the rank and the iteration; frozen parameters and a complete graph pass."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from codetr.engine.distributed import UnusedParametersError, check_parameters_received_gradients

    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        model = DistributedDataParallel(TwoBranches(), find_unused_parameters=False)
        model(torch.ones(3, 2), branch=True).sum().backward()
        check_parameters_received_gradients(model, rank=0, iteration=0)
        model.zero_grad(set_to_none=True)
        model(torch.ones(3, 2)).sum().backward()
        with pytest.raises(UnusedParametersError) as e:
            check_parameters_received_gradients(model, rank=1, iteration=7)
        msg = str(e.value)
        assert msg.startswith("rank 1, iteration 7: 2 trainable parameters got no gradient (skipped.weight, "
                              "skipped.bias)"), msg
        assert "frozen" not in msg and "used." not in msg and "find_unused_parameters=True" in msg
    finally:
        dist.destroy_process_group()


def test_step_watchdog_names_rank_and_iteration_of_a_step_that_does_not_finish():
    """A disarmed step never fires; a step left running fires once, with its iteration and rank."""
    from codetr.engine.distributed import StepWatchdog

    fired, messages = threading.Event(), []

    def on_timeout(message):
        messages.append(message)
        fired.set()

    watchdog = StepWatchdog(0.2, rank=3, on_timeout=on_timeout)
    try:
        watchdog.arm(4)
        watchdog.disarm()  # a finished step
        watchdog.arm(5)
        assert fired.wait(60), "the watchdog never fired"
    finally:
        watchdog.stop()
    assert len(messages) == 1
    assert messages[0].startswith("rank 3: training iteration 5 has not finished after 0.2 s "
                                  "(train.ddp_timeout=0.2)"), messages[0]


@pytest.mark.parametrize("value", [0, -5, "10", True, None])
def test_bad_ddp_timeout_is_refused(value):
    from codetr.engine.distributed import ddp_timeout_seconds

    with pytest.raises(ValueError, match=r"train.ddp_timeout=.*expected a positive number of seconds"):
        ddp_timeout_seconds({"ddp_timeout": value})


def test_collective_timeout_is_ddp_timeout_plus_the_margin():
    from detectron2.config import LazyConfig

    from codetr.engine.distributed import COLLECTIVE_TIMEOUT_MARGIN_S, DEFAULT_DDP_TIMEOUT_S, collective_timeout

    assert collective_timeout({"ddp_timeout": 30}).total_seconds() == 30 + COLLECTIVE_TIMEOUT_MARGIN_S
    # the default of the code is the documented one of configs/common/train.py: 10 minutes
    train = LazyConfig.load(os.path.join(ROOT, "configs/common/train.py")).train
    assert train.ddp_timeout == DEFAULT_DDP_TIMEOUT_S == 600
    assert collective_timeout({}).total_seconds() == 600 + COLLECTIVE_TIMEOUT_MARGIN_S
