"""What ``train_net.py`` needs beyond Detectron2: a device-agnostic AMP / grad-clip trainer, model
EMA, epoch-based schedules, strict config overrides, optimizer parameter groups, prediction
visualisation, the guards of multi-process training and the lock of the output folder."""
from .config import apply_overrides_strict
from .data import build_train_loader
from .distributed import DistributedGuard, UnusedParametersError, collective_timeout, ddp_timeout_seconds
from .ema import EMAHook, build_config_ema, build_model_ema, ema_has_weights
from .run_checks import build_checkpointer, check_output_dir, load_for_evaluation, parse_args
from .optim import DEFAULT_EMBED_NAMES, get_optimizer_params
from .run_lock import OutputDirLock, OutputDirLockedError, lock_output_dir
from .schedule import iters_per_epoch, multistep_lr_schedule, resolve_schedule, schedule_iteration, warmup_length
from .trainer import Trainer, parse_amp_dtype
from .visualize import require_visualizer, save_prediction_images

__all__ = [
    "apply_overrides_strict",
    "build_train_loader",
    "DistributedGuard",
    "UnusedParametersError",
    "collective_timeout",
    "ddp_timeout_seconds",
    "OutputDirLock",
    "OutputDirLockedError",
    "lock_output_dir",
    "build_checkpointer",
    "load_for_evaluation",
    "check_output_dir",
    "parse_args",
    "EMAHook",
    "build_config_ema",
    "build_model_ema",
    "ema_has_weights",
    "DEFAULT_EMBED_NAMES",
    "get_optimizer_params",
    "iters_per_epoch",
    "multistep_lr_schedule",
    "resolve_schedule",
    "schedule_iteration",
    "warmup_length",
    "Trainer",
    "parse_amp_dtype",
    "require_visualizer",
    "save_prediction_images",
]
