"""The fine-tuning run: check the data and the weights, train with Accelerate, evaluate on validation.

Works the same in a plain process and under ``accelerate launch`` (the Accelerator reads the launch
environment). Schedule: torch's ``PolynomialLR`` stepped after every optimizer step,
``lr_t = lr * (1 - t / T) ** 0.9`` with ``T`` the total number of steps; it is the paper's per-step
poly decay exactly, needs no warm-up handling (timm's ``PolyLRScheduler`` would do the same with more
knobs), and is stepped by us rather than through ``accelerator.prepare`` so that ``T`` is counted in
this process's own steps.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hf_transfer_seg.data.registry import load_target
from hf_transfer_seg.data.segmentation import SegSample, SegTarget, split_target
from hf_transfer_seg.data import intensity
from hf_transfer_seg.errors import ConfigError
from hf_transfer_seg.finetune.config import FinetuneConfig
from hf_transfer_seg.finetune import resume
from hf_transfer_seg.finetune.losses import build_loss
from hf_transfer_seg.finetune.tiles import RandomCropDataset, crops_per_image
from hf_transfer_seg.models.checkpoint import download_checkpoint
from hf_transfer_seg.models.segmentation import SegmentationModel, build_model, encoder_architecture, sliding_window_probs

log = logging.getLogger(__name__)


@dataclass
class FinetuneResult:
    config: FinetuneConfig
    metrics: dict[str, Any]  # validation metrics after the last epoch
    history: list[dict[str, Any]]
    split: dict[str, Any]
    target: dict[str, Any]
    encoder: dict[str, Any]  # repo, revision, sha, architecture
    model: SegmentationModel
    train_images_per_second: float
    wall_clock_seconds: float
    first_metrics: dict[str, Any] = field(default_factory=dict)  # after the first epoch
    # the last evaluation's own values per validation image (nnU-Net's metric_per_case) and its predictions
    per_case: list[dict[str, Any]] = field(default_factory=list)
    predictions: list[Any] = field(default_factory=list, repr=False)
    resumed_from: int = 0  # the epoch a --resume continued after (0: a fresh run)

    def summary(self) -> dict[str, Any]:
        """JSON-ready facts of the run (no model)."""
        return {
            "encoder": self.encoder,
            "target": self.target,
            "seed": self.config.seed,
            "recipe": self.config.recipe(),
            "metrics": self.metrics,
            "first_epoch_metrics": self.first_metrics,
            "history": self.history,
            "split": self.split,
            "train_images_per_second": self.train_images_per_second,
            "wall_clock_seconds": self.wall_clock_seconds,
            **({"resumed_after_epoch": self.resumed_from} if self.resumed_from else {}),
        }


def resolve_encoder(config: FinetuneConfig) -> dict[str, Any]:
    """Local folder with the encoder checkpoint, downloaded from the revision's commit sha when on the Hub."""
    if config.encoder_folder:
        folder = Path(config.encoder_folder)
        info = {"repo": None, "revision": None, "sha": None, "folder": str(folder)}
    else:
        from hf_transfer_seg import hub

        sha = hub.branch_sha(config.encoder_repo, config.revision)
        what = f"revision {config.revision} of {config.encoder_repo} ({sha[:10]})"
        folder = download_checkpoint(config.encoder_repo, sha, what=what)
        info = {"repo": config.encoder_repo, "revision": config.revision, "sha": sha, "folder": str(folder)}
    architecture, _ = encoder_architecture(folder)
    info["architecture"] = architecture
    return info


def prepare_target(config: FinetuneConfig, target: SegTarget | None = None) -> tuple[SegTarget, SegTarget, SegTarget, dict]:
    """Load (unless given) and split the target: every data error surfaces here, before training."""
    if target is None:
        target = load_target(
            config.target, num_classes=config.num_classes, resize_longest=config.resize_longest,
            mask_dir=config.mask_dir, fov_dir=config.fov_dir, split=config.split,
            image_column=config.image_column, mask_column=config.mask_column, limit=config.limit,
            key=config.target_key, slice_axis=config.slice_axis, labels=config.labels,
            foreground_values=config.foreground_values, class_names=list(config.class_names) if config.class_names else None,
        )
    train, val, split = split_target(target, val_fraction=config.val_fraction, seed=config.split_seed)
    fixed = intensity.from_options(config.window, config.intensity_range)
    if target.pending:  # raw values (volumes, 16-bit): one range fitted on the training cases only, applied to all
        target.normalise(train, fixed)
        train.intensity = val.intensity = target.intensity
    elif fixed is not None:
        raise ConfigError(
            f"--window / --intensity-range apply to raw-valued data (CT/MR volumes, 16-bit or float images); "
            f"{target.key} is already scaled ({(target.intensity or {}).get('source', '8-bit images')})"
        )
    return target, train, val, split


def build_training(model: SegmentationModel, train: list[SegSample], config: FinetuneConfig, *, generator: torch.Generator | None = None):
    """(loader, loss, optimizer, scheduler) for ``model`` on the training samples."""
    crops = config.crops_per_image or crops_per_image(train, config.image_size)
    dataset = RandomCropDataset(train, config.image_size, crops=crops, augment=config.augment)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=config.batch_size, shuffle=True, drop_last=len(dataset) > config.batch_size,
        num_workers=config.num_workers, generator=generator, persistent_workers=config.num_workers > 0,
    )
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return loader, build_loss(config.loss), optimizer


def poly_schedule(optimizer: torch.optim.Optimizer, total_steps: int, power: float) -> torch.optim.lr_scheduler.LRScheduler:
    return torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=max(1, total_steps), power=power)


def train_epoch(model, loader, loss_fn, optimizer, scheduler=None, *, accelerator=None, progress=None) -> dict[str, float]:
    """One pass over ``loader``; returns mean loss, images seen and seconds taken. ``progress`` (a tqdm bar)
    moves one unit per optimizer step."""
    model.train()
    total, images, start = 0.0, 0, time.perf_counter()
    for x, y in loader:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        if accelerator is not None:
            accelerator.backward(loss)
        else:
            loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total += loss.detach() * x.shape[0]
        images += x.shape[0]
        if progress is not None:
            progress.update(1)
    seconds = time.perf_counter() - start
    return {"loss": float(total) / max(images, 1), "images": images, "seconds": seconds}


def distance_unit(samples: list[SegSample], resize_longest: int | None = None) -> str:
    """What HD95/ASD are measured in: mm when every image has a spacing, else pixels of the evaluated size."""
    if samples and all(s.spacing is not None for s in samples):
        return "mm"
    sizes = sorted({(int(s.mask.shape[-2]), int(s.mask.shape[-1])) for s in samples})
    if not sizes:
        return "px"
    at = f"{sizes[0][0]}x{sizes[0][1]}" if len(sizes) == 1 else f"each image's own size ({len(sizes)} sizes, {sizes[0][0]}x{sizes[0][1]} to {sizes[-1][0]}x{sizes[-1][1]})"
    return f"px at {at} (HxW)" + (f", images resized to at most {resize_longest} px" if resize_longest else "")


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, samples: list[SegSample], target: SegTarget, *, window: int, overlap: float = 0.5,
    predictions: list | None = None,
) -> dict[str, Any]:
    """Validation metrics of ``model`` over whole images (sliding window), see :mod:`.metrics`, beside the trivial
    baselines on the same images (:mod:`hf_transfer_seg.metrics.baselines`). ``metric_per_case`` holds each image's
    own values, named; ``predictions`` (a list), when given, receives the predicted class maps."""
    from hf_transfer_seg.metrics import baselines, compute_segmentation  # what the package's evaluate module computes

    was_training = model.training
    model.eval()
    try:
        preds = [sliding_window_probs(model, s.image, window, overlap=overlap).argmax(0).numpy() for s in samples]
    finally:
        model.train(was_training)
    spaced = all(s.spacing is not None for s in samples)
    references = [s.mask.numpy() for s in samples]
    valid = [s.valid.numpy() if s.valid is not None else None for s in samples] if any(s.valid is not None for s in samples) else None
    metrics = compute_segmentation(
        predictions=preds, references=references, num_classes=target.num_classes,
        class_names=target.class_names, valid=valid,
        spacing=[s.spacing for s in samples] if spaced else None,
        cases=[s.case for s in samples] if all(s.case for s in samples) else None,
    )
    metrics["metric_per_case"] = [{"image": s.name, **({"case": s.case} if s.case else {}), "metrics": row}
                                  for s, row in zip(samples, metrics.get("metric_per_case") or [])]
    metrics["distance_unit"] = distance_unit(samples, target.resize_longest or None)
    baselines.attach(metrics, references, target.num_classes, target.class_names, valid)
    if predictions is not None:
        predictions.extend(preds)
    return metrics


def finetune(
    config: FinetuneConfig, *, target: SegTarget | None = None, progress: bool = True, nested: bool = False
) -> FinetuneResult:
    """Fine-tune a U-Net on ``config.target`` from the encoder of ``config.encoder_repo@config.revision``.

    Progress: one bar over every optimizer step of the run (epochs x steps per epoch), so it moves within the
    first epoch; its postfix has the epoch, the last epoch's loss and the last *measured* validation Dice (epochs
    between evaluations keep the previous value; none is shown before the first evaluation). ``nested``: the bar
    sits below a caller's bar (the sweep's) and is cleared when the run ends."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    config.validate()
    started = time.perf_counter()
    target, train, val, split = prepare_target(config, target)
    encoder = resolve_encoder(config)
    accelerator = Accelerator(mixed_precision=config.mixed_precision)
    set_seed(config.seed)
    model = build_model(
        encoder["folder"], target.num_classes, decoder_channels=config.decoder_channels,
        freeze_encoder=config.freeze_encoder, frozen_batchnorm_train=config.frozen_batchnorm_train,
    )
    model.config.update(
        image_size=config.image_size, eval_overlap=config.eval_overlap, class_names=target.class_names,
        resize_longest=config.resize_longest, intensity=target.intensity,
        **({"slice_axis": config.slice_axis} if config.slice_axis else {}),
    )
    generator = torch.Generator().manual_seed(config.seed)
    loader, loss_fn, optimizer = build_training(model, train.samples, config, generator=generator)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    scheduler = poly_schedule(optimizer, len(loader) * config.epochs, config.poly_power)
    history: list[dict[str, Any]] = []
    first_metrics: dict[str, Any] = {}
    metrics: dict[str, Any] = {}
    seen, train_seconds = 0, 0.0
    identity = resume.run_identity(config, encoder, target.key, split)
    start = _resume_point(config, accelerator.unwrap_model(model), optimizer, scheduler, generator, identity)
    if start:
        history, first_metrics, metrics = start["history"], start["first_metrics"], start["metrics"]
    done = int(start.get("epoch", 0)) if start else 0
    show = progress and accelerator.is_local_main_process
    steps = len(loader)
    bar = tqdm(
        total=steps * config.epochs, initial=steps * done, desc=f"fine-tune {encoder.get('revision') or encoder['architecture']}",
        unit="step", disable=not show, leave=not nested, position=1 if nested else None, dynamic_ncols=True,
    )
    postfix: dict[str, str] = {}
    predictions: list = []
    for epoch in range(done + 1, config.epochs + 1):
        postfix["epoch"] = f"{epoch}/{config.epochs}"
        bar.set_postfix(postfix)
        stats = train_epoch(model, loader, loss_fn, optimizer, scheduler, accelerator=accelerator, progress=bar)
        seen += stats["images"]
        train_seconds += stats["seconds"]
        row: dict[str, Any] = {"epoch": epoch, "loss": stats["loss"], "lr": scheduler.get_last_lr()[0]}
        postfix["loss"] = f"{stats['loss']:.3f}"
        if epoch == 1 or epoch == config.epochs or (config.eval_every and epoch % config.eval_every == 0):
            bar.set_postfix({**postfix, "dice": "evaluating"})
            metrics = evaluate(accelerator.unwrap_model(model), val.samples, target, window=config.image_size,
                               overlap=config.eval_overlap, predictions=predictions if epoch == config.epochs else None)
            row.update(dice_mean=metrics["dice_mean"], iou_mean=metrics["iou_mean"])
            if isinstance(metrics.get("dice_mean"), (int, float)) and math.isfinite(metrics["dice_mean"]):
                postfix["dice"] = f"{metrics['dice_mean']:.3f} (epoch {epoch})"
            if epoch == 1:
                first_metrics = {k: v for k, v in metrics.items() if k != "metric_per_case"}
        history.append(row)
        bar.set_postfix(postfix)
        if config.output_dir and accelerator.is_main_process:
            resume.save(config.output_dir, epoch=epoch, model=accelerator.unwrap_model(model), optimizer=optimizer,
                        scheduler=scheduler, generator=generator, identity=identity,
                        progress={"history": history, "first_metrics": first_metrics,
                                  "metrics": {k: v for k, v in metrics.items() if k != "metric_per_case"}})
    bar.close()
    if not predictions:  # resumed after the last epoch: the final evaluation (with its predictions) runs now
        metrics = evaluate(accelerator.unwrap_model(model), val.samples, target, window=config.image_size,
                           overlap=config.eval_overlap, predictions=predictions)
    per_case = metrics.pop("metric_per_case", [])
    for warning in metrics.get("warnings") or []:  # the finetune/sweep commands print them as "warning:" lines
        log.info("%s: %s", target.key, warning)
    if not math.isfinite(history[-1]["loss"]):
        log.warning("training loss is %s at the end; the learning rate may be too high", history[-1]["loss"])
    return FinetuneResult(
        config=config,
        metrics=metrics,
        history=history,
        split=split,
        target=target.info(),
        encoder={k: v for k, v in encoder.items() if k != "folder"},
        model=accelerator.unwrap_model(model),
        train_images_per_second=seen / max(train_seconds, 1e-9),
        wall_clock_seconds=time.perf_counter() - started,
        first_metrics=first_metrics,
        per_case=per_case,
        predictions=predictions,
        resumed_from=done,
    )


def _resume_point(config: FinetuneConfig, model, optimizer, scheduler, generator, identity) -> dict[str, Any]:
    """The saved progress a ``--resume`` continues from (model, optimizer, scheduler and RNGs restored), or {}."""
    if not config.output_dir:
        return {}
    found = resume.latest(config.output_dir)
    if not config.resume:
        if found is not None:
            log.warning("%s holds the state of an interrupted run (%s); starting afresh overwrites it (pass --resume "
                        "to continue it)", config.output_dir, found.name)
        return {}
    if found is None:
        log.info("no saved state in %s; starting at epoch 1", config.output_dir)
        return {}
    state = resume.load(found, model=model, optimizer=optimizer, scheduler=scheduler, generator=generator, identity=identity)
    log.info("resuming after epoch %d of %d from %s", state["epoch"], config.epochs, found)
    return state
