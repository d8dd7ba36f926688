"""Training defaults (detrex's configs/common/train.py, with epochs instead of iterations).

Every field is read by train_net.py; override any of them on the command line, e.g.
``train.device=cpu train.max_iter=20 train.amp.enabled=True train.amp.dtype=bfloat16``.
"""
train = dict(
    output_dir="./output",
    # checkpoint loaded before training / for --eval-only (a local path; "" = none)
    init_checkpoint="",
    # Every checkpoint (init_checkpoint, --resume, tools/demo.py) is loaded by
    # codetr.checkpoint.Checkpointer, which must find the model in it: accepted are a complete
    # match, a backbone initialisation (only backbone tensors, covering at least half of the
    # backbone, nothing else: e.g. the ImageNet R-50.pkl) and a Co-DETR checkpoint without its
    # training-only auxiliary modules. Anything else (a shape mismatch such as another
    # num_classes, tensors of another model, a detector checkpoint covering part of the model)
    # is an error naming the counts of matched / missing / unexpected / mis-shaped tensors.
    # True: load whatever matches (Detectron2's behaviour, e.g. fine-tuning from another class
    # count) and log what was loaded and skipped.
    init_checkpoint_partial=False,
    # Checkpoint files are read without executing code: torch.load(weights_only=True), and a
    # restricted unpickler (numpy arrays, numbers, strings, containers) for Detectron2 .pkl
    # files. True: unpickle trusted files that hold other objects fully (a crafted file runs
    # code); a warning is logged.
    allow_unsafe_pickle=False,
    # A training run (without --resume) refuses an output_dir that already holds checkpoints
    # (model_*.pth, last_checkpoint); True: overwrite them. Independently of this, a run (training
    # or --eval-only) refuses an output_dir that another live run is using: the main process holds
    # output_dir/train_net.lock (pid, host, start time, command) while it runs; the lock of a run
    # that died (even by SIGKILL) is taken over with a warning.
    overwrite=False,
    # At start every test image's header is read (PIL: format, size against the dataset's
    # height / width, EXIF orientation; the end marker of JPEG / PNG files; ~0.1 ms per image), so
    # that a corrupt, truncated or mis-sized image fails now and not at the evaluation after
    # training (codetr.data.checks.check_image_headers). False skips it (very large test sets).
    verify_test_images=True,
    # length in epochs; max_iter and iters_per_epoch are filled from the training dataset's size
    # and dataloader.train.total_batch_size when None (codetr.engine.resolve_schedule).
    # A value given here or on the command line wins (train.max_iter=20 for a quick run). LR
    # milestones, warm-up and TOOD's switch are fractions of their schedule: they follow the run's
    # length, whether set by epochs or max_iter (configs/common/schedule.py).
    epochs=12,
    max_iter=None,
    iters_per_epoch=None,
    device="cuda",
    seed=-1,  # <0: random seed per run; >=0: seed + rank
    # mixed precision: dtype "float16" (with a GradScaler) or "bfloat16"; CPU supports both
    amp=dict(enabled=False, dtype="float16"),
    ddp=dict(broadcast_buffers=False, find_unused_parameters=False, fp16_compression=False),
    # multi-process runs (seconds): a training iteration still unfinished on a process after this
    # long (the process waits for the others in a collective that not every process reached) stops
    # the run with an error naming the rank and the iteration; collectives outside iterations
    # (evaluation, barriers) time out 60 s later (the process group's timeout, launch(timeout=...)).
    # Raise it when an iteration, or rank 0's COCO evaluation of a large set, can take longer.
    # A process whose backward pass left a trainable parameter without gradient (DDP would wait
    # for it forever) stops at once, naming the parameters, the rank and the iteration.
    ddp_timeout=600,
    # total-gradient-norm clipping (DETR family: L2 norm 0.1)
    clip_grad=dict(enabled=False, max_norm=0.1, norm_type=2.0),
    # EMA of the weights; saved under "ema" in checkpoints; evaluated next to the raw weights
    # during training, and instead of them with --eval-only when use_ema_weights_for_eval_only
    model_ema=dict(enabled=False, decay=0.999, use_ema_weights_for_eval_only=True),
    checkpointer=dict(period=5000, max_to_keep=100),  # iterations
    eval_period=5000,  # iterations; evaluation also runs after the last iteration
    log_period=20,  # iterations
    # after training / --eval-only: draw the detections of this many test images into
    # output_dir/vis (0 disables)
    vis_output_images=0,
    vis_score_threshold=0.3,
)
