"""The paper's two pretraining recipes, built from timm's transforms, Mixup, losses, optimizers and schedulers.

Both: AdamW (betas 0.9/0.999, weight decay 0.05 on weights; timm's usual exemption of biases and norm
parameters), peak LR scaled linearly from 4e-3 at batch 4096, linear warm-up from ~0 then per-step cosine
to 1e-6, cross-entropy with label smoothing 0.1, RandomResizedCrop(scale 0.8-1.0) + horizontal flip; validation
Resize + CenterCrop at the training size (crop_pct 1.0).
``advanced`` adds RandAugment (2 ops, magnitude 9), Mixup (lambda ~ Beta(1,1), i.e. uniform) or CutMix
(Beta(1,1)) with a 50/50 switch applied with probability 0.8, RandomErasing p=0.25, stochastic depth 0.1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from hf_transfer_seg.pretrain.config import PretrainConfig

INTERPOLATION = "bilinear"
CROP_PCT = 1.0  # Resize(224) + CenterCrop(224)
RAND_AUGMENT = "rand-m9-n2"
MIXUP = dict(mixup_alpha=1.0, cutmix_alpha=1.0, prob=0.8, switch_prob=0.5, mode="batch")
RANDOM_ERASING = dict(re_prob=0.25, re_mode="pixel", re_count=1)


def data_config(config: PretrainConfig) -> dict[str, Any]:
    """Preprocessing written into ``pretrained_cfg`` of every checkpoint (what loaders must reproduce)."""
    mean, std = config.mean_std
    return {
        "input_size": (3, config.image_size, config.image_size),
        "interpolation": INTERPOLATION,
        "mean": tuple(mean),
        "std": tuple(std),
        "crop_pct": CROP_PCT,
        "crop_mode": "center",
    }


def train_transform(config: PretrainConfig) -> Callable:
    from timm.data import create_transform

    mean, std = config.mean_std
    advanced = config.recipe == "advanced"
    return create_transform(
        config.image_size,
        is_training=True,
        scale=(0.8, 1.0),
        hflip=0.5,
        color_jitter=None,
        auto_augment=RAND_AUGMENT if advanced else None,
        interpolation=INTERPOLATION,
        mean=mean,
        std=std,
        **(RANDOM_ERASING if advanced else {"re_prob": 0.0}),
    )


def val_transform(config: PretrainConfig) -> Callable:
    from timm.data import create_transform

    mean, std = config.mean_std
    return create_transform(
        config.image_size, is_training=False, interpolation=INTERPOLATION, mean=mean, std=std, crop_pct=CROP_PCT
    )


def mixup(config: PretrainConfig, num_classes: int):
    """timm's Mixup/CutMix for the advanced recipe (it also applies the label smoothing); None for simple."""
    if config.recipe != "advanced":
        return None
    from timm.data import Mixup

    return Mixup(label_smoothing=config.label_smoothing, num_classes=num_classes, **MIXUP)


def criterion(config: PretrainConfig) -> torch.nn.Module:
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    if config.recipe == "advanced":
        return SoftTargetCrossEntropy()  # targets already mixed and smoothed by Mixup
    return LabelSmoothingCrossEntropy(smoothing=config.label_smoothing)


def create_model(config: PretrainConfig, num_classes: int) -> torch.nn.Module:
    """A randomly initialised timm classifier; refuses encoders without ``features_only`` support."""
    import timm

    from hf_transfer_seg.errors import ConfigError

    model = timm.create_model(config.encoder, pretrained=False, num_classes=num_classes, drop_path_rate=config.drop_path_rate)
    if not getattr(model, "feature_info", None):
        raise ConfigError(
            f"encoder {config.encoder!r} does not support timm's features_only (no feature_info), so it cannot "
            "serve as a U-Net encoder; choose a CNN or hierarchical transformer such as resnet50 or swin_tiny_patch4_window7_224"
        )
    return model


def optimizer(config: PretrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """timm's AdamW; the fused kernel where torch has one for these parameters (CUDA, and CPU since torch 2.4:
    about 8x faster steps than the per-tensor loop on CPU)."""
    from timm.optim import create_optimizer_v2

    kwargs = dict(lr=config.peak_lr, weight_decay=config.weight_decay, betas=(0.9, 0.999))
    try:
        return create_optimizer_v2(model, "adamw", fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):  # no fused kernel for these parameters (device, dtype, DTensor)
        return create_optimizer_v2(model, "adamw", **kwargs)


@dataclass
class Schedule:
    """Step counts of a run: the scheduler works per optimizer step."""

    updates_per_epoch: int
    total_steps: int
    warmup_steps: int
    checkpoint_steps: dict[int, float]  # optimizer step -> scheduled epoch


def plan_schedule(config: PretrainConfig, updates_per_epoch: int) -> Schedule:
    from hf_transfer_seg.errors import ConfigError

    if updates_per_epoch < 1:
        raise ConfigError(
            "the training set is smaller than one global batch; lower --batch-size or use more images"
        )
    total = max(1, round(config.epochs * updates_per_epoch))
    warmup = min(round(config.warmup * updates_per_epoch), total - 1)
    steps: dict[int, float] = {}
    for epoch in config.schedule:
        step = max(1, min(total, round(epoch * updates_per_epoch)))
        if step in steps:
            raise ConfigError(
                f"checkpoint epochs {steps[step]:g} and {epoch:g} fall on the same optimizer step ({step}) with "
                f"{updates_per_epoch} steps per epoch; use fewer checkpoints, more data or a smaller batch"
            )
        steps[step] = epoch
    return Schedule(updates_per_epoch, total, warmup, steps)


def scheduler(config: PretrainConfig, opt: torch.optim.Optimizer, schedule: Schedule):
    """timm cosine schedule stepped per optimizer update: warm-up, then cosine from the peak to ``min_lr``."""
    from timm.scheduler import create_scheduler_v2

    sched, _ = create_scheduler_v2(
        opt,
        sched="cosine",
        num_epochs=max(1, schedule.total_steps - schedule.warmup_steps),
        warmup_epochs=schedule.warmup_steps,
        warmup_prefix=True,
        warmup_lr=config.warmup_lr,
        min_lr=config.min_lr,
        step_on_epochs=False,
        updates_per_epoch=1,  # "epochs" above are optimizer steps
    )
    return sched
