#!/usr/bin/env python
"""Train and evaluate any codetr detector from a LazyConfig (one entry point for all of them).

    python train_net.py --config-file configs/dino/dino_r50_4scale_12ep.py --num-gpus 8
    python train_net.py --config-file ... --resume
    python train_net.py --config-file ... --eval-only train.init_checkpoint=output/model_final.pth
    python train_net.py --config-file ... train.device=cpu train.max_iter=20 dataloader.train.total_batch_size=2

The config defines ``model``, ``dataloader`` (``train``, ``test``, ``evaluator``), ``optimizer``,
``lr_multiplier`` and ``train`` (see configs/common/train.py for every ``train.*`` field).
Schedules are in epochs: ``train.max_iter`` / ``train.iters_per_epoch`` are derived from the
training set's size unless given (codetr.engine.resolve_schedule); LR milestones, warm-up and
TOOD's assigner switch are fractions of the run, so they follow a given ``train.max_iter``.

Distributed training goes through Detectron2's ``launch`` (one process per GPU, DDP, NCCL).
``--num-gpus`` is the number of processes per machine; with ``train.device=cpu`` the processes
run on the CPU and talk over gloo (CUDA is hidden from them so ``launch`` picks gloo). A process
waiting for the others longer than ``train.ddp_timeout`` stops the run with an error naming its
rank and iteration (codetr.engine.distributed). The main process holds ``train.output_dir``'s lock
file while it runs (codetr.engine.run_lock): a second run into the folder is refused.
"""
import gc
import logging
import os
import sys

import torch
from torch.nn.parallel import DistributedDataParallel

from detectron2.config import LazyConfig, instantiate
from detectron2.engine import create_ddp_model, default_argument_parser, default_setup, default_writers, hooks, launch
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from codetr.data.checks import check_datasets_for_model
from codetr.engine import (
    DistributedGuard,
    EMAHook,
    Trainer,
    apply_overrides_strict,
    build_checkpointer,
    build_config_ema,
    build_train_loader,
    check_output_dir,
    collective_timeout,
    ddp_timeout_seconds,
    load_for_evaluation,
    lock_output_dir,
    parse_amp_dtype,
    parse_args,
    require_visualizer,
    resolve_schedule,
    save_prediction_images,
)

logger = logging.getLogger("codetr")


def load_config(args):
    """The LazyConfig with the command-line overrides; an unknown key is an error naming the
    closest valid one (``+key=value`` adds a key on purpose; codetr.engine.apply_overrides_strict)."""
    cfg = LazyConfig.load(args.config_file)
    return apply_overrides_strict(cfg, args.opts)


def check_device(device: str) -> None:
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"train.device={device!r} but CUDA is not available; add train.device=cpu")


def unwrap(model):
    return model.module if isinstance(model, DistributedDataParallel) else model


def evaluate(cfg, model):
    """COCO-style evaluation of ``model`` on ``dataloader.test`` with ``dataloader.evaluator``."""
    if "evaluator" not in cfg.dataloader:
        logger.warning("No dataloader.evaluator in the config: skipping evaluation")
        return {}
    results = inference_on_dataset(
        model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator)
    )
    if comm.is_main_process():
        print_csv_format(results)
    return results


def evaluate_with_ema(cfg, model, ema):
    """Evaluate the raw weights, and the EMA weights (reported under ``ema/``) when enabled."""
    results = evaluate(cfg, model)
    if ema is not None:
        logger.info("Evaluating the EMA weights")
        results = dict(results)
        results["ema"] = evaluate(cfg, ema.module)
    return results


def visualize(cfg, model):
    num = cfg.train.get("vis_output_images", 0)
    if not num or not comm.is_main_process():
        return
    names = cfg.dataloader.test.dataset.names
    name = names if isinstance(names, str) else names[0]
    out_dir = os.path.join(cfg.train.output_dir, "vis")
    paths = save_prediction_images(
        model, instantiate(cfg.dataloader.test), name, out_dir, num, cfg.train.get("vis_score_threshold", 0.3)
    )
    logger.info("Wrote %d images with detections to %s", len(paths), out_dir)


def do_eval_only(cfg, model):
    if not cfg.train.init_checkpoint:
        logger.warning("--eval-only without train.init_checkpoint: evaluating randomly initialised weights")
    model = load_for_evaluation(cfg, model, cfg.train.output_dir)
    results = evaluate(cfg, model)
    visualize(cfg, model)
    return results


def do_train(args, cfg, model, train_loader):
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    ema = build_config_ema(cfg.train, model)  # from the unwrapped model, before DDP

    ddp_kwargs = dict(cfg.train.get("ddp", {}))
    if torch.device(cfg.train.device).type == "cpu":
        ddp_kwargs["device_ids"] = None
    model = create_ddp_model(model, **ddp_kwargs)

    amp = cfg.train.get("amp", {})
    clip = cfg.train.get("clip_grad", {})
    device_type = torch.device(cfg.train.device).type
    amp_dtype = parse_amp_dtype(amp.get("dtype", "float16"))
    clip_max_norm = clip.get("max_norm") if clip.get("enabled", False) else None
    logger.info(
        "Training on %s; mixed precision: %s; gradient clipping: %s; EMA: %s",
        device_type,
        f"{amp_dtype} autocast" if amp.get("enabled", False) else "off",
        f"max_norm={clip_max_norm} norm_type={clip.get('norm_type', 2.0)}" if clip_max_norm is not None else "off",
        f"decay={cfg.train.model_ema.decay}" if ema is not None else "off",
    )
    trainer = Trainer(
        model,
        train_loader,
        optimizer,
        device_type=device_type,
        amp_enabled=amp.get("enabled", False),
        amp_dtype=amp_dtype,
        clip_grad_max_norm=clip_max_norm,
        clip_grad_norm_type=clip.get("norm_type", 2.0),
    )
    checkpointables = {"ema": ema} if ema is not None else {}
    checkpointer = build_checkpointer(cfg.train, model, cfg.train.output_dir, trainer=trainer, **checkpointables)
    max_iter = cfg.train.max_iter
    trainer.register_hooks(
        [
            # first: its after_step ends the watched step before evaluation / checkpoints run
            DistributedGuard(ddp_timeout_seconds(cfg.train), comm.get_world_size(), comm.get_rank()),
            hooks.IterationTimer(),
            EMAHook(ema, model) if ema is not None else None,
            hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
            hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer, max_iter=max_iter)
            if comm.is_main_process()
            else None,
            hooks.EvalHook(cfg.train.eval_period, lambda: evaluate_with_ema(cfg, unwrap(model), ema)),
            hooks.PeriodicWriter(default_writers(cfg.train.output_dir, max_iter), period=cfg.train.log_period)
            if comm.is_main_process()
            else None,
        ]
    )

    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
    start_iter = trainer.iter + 1 if args.resume and checkpointer.has_checkpoint() else 0
    trainer.train(start_iter, max_iter)
    visualize(cfg, ema.module if ema is not None else unwrap(model))  # the EMA weights when there are some


def main(args):
    cfg = load_config(args)
    # the main process owns train.output_dir while it runs: another run into it is refused, and the
    # other processes write nothing (log.txt.rank*) before the main one holds it
    with lock_output_dir(cfg.train.output_dir, enabled=comm.is_main_process()):
        comm.synchronize()
        return run(args, cfg)


def run(args, cfg):
    check_output_dir(cfg.train, resume=args.resume, eval_only=args.eval_only)
    default_setup(cfg, args)
    setup_logger(cfg.train.output_dir, distributed_rank=comm.get_rank(), name="codetr")
    check_device(cfg.train.device)
    if cfg.train.get("vis_output_images", 0):
        require_visualizer()  # fail now rather than after training
    if comm.get_world_size() > 1:
        logger.info("Distributed: world size %d, backend %s", comm.get_world_size(), torch.distributed.get_backend())

    train_loader = train_dataset = None
    if not args.eval_only:
        # The schedule is resolved before the model is built, so that a model config can
        # interpolate "${train.iters_per_epoch}" / "${train.max_iter}" (e.g. TOOD's ATSS epochs).
        train_loader, num_images, train_dataset = build_train_loader(cfg.dataloader.train)
        resolve_schedule(cfg.train, num_images, cfg.dataloader.train.total_batch_size)

    model = instantiate(cfg.model)
    # image files exist (test images: readable, complete, of their size), classes fit the model,
    # boxes per image vs queries: fail or warn now
    check_datasets_for_model(cfg.dataloader, model, train=not args.eval_only, loaded={"train": train_dataset},
                             verify_test_images=cfg.train.get("verify_test_images", True))
    model.to(cfg.train.device)
    logger.info("Model:\n%s", model)

    if args.eval_only:
        return do_eval_only(cfg, model)
    do_train(args, cfg, model, train_loader)


def worker(args):
    """What ``launch`` runs in every process: ``main``, then a barrier and the teardown of the
    process group while the interpreter is fully alive. Without it a gloo worker sometimes aborts
    at interpreter exit ("terminate called without an active exception", SIGABRT: gloo's threads
    can still hold work with Python references while Python finalizes; 1 of 12 two-process CPU
    runs here), failing a run that had finished. The garbage collection frees the trainer's
    reference cycles (DDP model and its reducer, which hold the group) before the teardown."""
    try:
        result = main(args)
        gc.collect()
        comm.synchronize()  # no rank tears down while another still needs the group
        return result
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        gc.collect()  # what only the teardown released (its last references to the group)


def hide_cuda_for_cpu_workers(args) -> None:
    """Detectron2's launch picks NCCL whenever CUDA is visible; a CPU run (``train.device=cpu``)
    with several processes needs gloo, so hide the GPUs from the spawned workers."""
    if args.num_gpus * args.num_machines <= 1:
        return
    if torch.device(load_config(args).train.device).type == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""


if __name__ == "__main__":
    args = parse_args(default_argument_parser())  # flags may also follow the overrides
    if not args.config_file:
        sys.exit("train_net.py: --config-file is required")
    hide_cuda_for_cpu_workers(args)
    launch(
        worker,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
        timeout=collective_timeout(load_config(args).train),  # train.ddp_timeout + a margin
    )
