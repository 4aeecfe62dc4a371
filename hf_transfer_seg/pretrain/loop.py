"""The Accelerate training loop: one code path for one CPU, one GPU, eight GPUs or several nodes.

At every scheduled optimizer step all processes evaluate on their shard of the validation set, the main
process writes the checkpoint (timm Hub format + card) into ``pending/`` and hands it to the background
publisher, and every process saves the full training state. SIGTERM/SIGINT save the state and stop.
FSDP: through Accelerate on GPUs; on CPUs, where Accelerate cannot shard, by ``pretrain.sharding`` (same export).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from hf_transfer_seg.disk import is_disk_full
from hf_transfer_seg.errors import ConfigError, DiskFullError
from hf_transfer_seg.hub import check_write_access, ensure_repo, revision_name
from hf_transfer_seg.logs import quiet_libraries
from hf_transfer_seg.models.checkpoint import save_checkpoint
from hf_transfer_seg.pretrain import card as cards
from hf_transfer_seg.pretrain import recipes, sharding
from hf_transfer_seg.pretrain import state as states
from hf_transfer_seg.pretrain.config import PretrainConfig, check_resume_compatible, micro_batch, save_run_config
from hf_transfer_seg.pretrain.data_path import batch_prep, build_data, build_loaders, prepared_val
from hf_transfer_seg.pretrain.hooks import run_callbacks
from hf_transfer_seg.pretrain.publisher import (
    Publisher, card_failure, delivery_hint, discard_partial, list_pending, pending_dir, read_ledger, stage_checkpoint,
)
from hf_transfer_seg.redact import public_text, redact
from hf_transfer_seg.version import code_version

log = logging.getLogger(__name__)
DEBUG_DIR_ENV = "HF_TRANSFER_SEG_DEBUG_DIR"  # each process writes a hash of its weights at every checkpoint
STEP_DELAY_ENV = "HF_TRANSFER_SEG_DEBUG_STEP_SECONDS"  # tests: sleep this long after every optimizer step
STOP_SYNC_EVERY = 10  # optimizer steps between agreeing on a stop signal across processes


@dataclass
class PretrainResult:
    revisions: list[str] = field(default_factory=list)  # checkpoints written by this run
    pending: list[str] = field(default_factory=list)  # not (yet) on the Hub when the run ended
    causes: dict[str, str] = field(default_factory=dict)  # pending revision -> why: its push failed, or its card
    global_step: int = 0
    finished: bool = False
    stopped_early: str | None = None
    exit_code: int = 0
    images_trained: int = 0  # by this run (all processes)
    loop_seconds: float = 0.0  # the training loop, checkpoints included (not start-up, not the final push wait)
    checkpoint_seconds: float = 0.0  # of which evaluating, writing and saving checkpoints
    loop_cpu_seconds: float = 0.0  # CPU time of this process (all its threads) in the loop; stable on shared machines
    checkpoint_cpu_seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        train = self.loop_seconds - self.checkpoint_seconds
        return self.images_trained / train if train > 0 else 0.0


def _make_accelerator(config: PretrainConfig):
    from datetime import timedelta

    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, InitProcessGroupKwargs

    # Without CUDA, Accelerate only sets up a process group when told to run on CPU: do that whenever the
    # launcher started several processes, so `--num_processes 2` really gives two gloo ranks.
    multi = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return Accelerator(
        cpu=multi and not torch.cuda.is_available(),
        gradient_accumulation_steps=config.grad_accum,
        step_scheduler_with_optimizer=False,
        dataloader_config=DataLoaderConfiguration(non_blocking=torch.cuda.is_available()),
        dynamo_backend="inductor" if config.compile else None,
        # the other processes wait while the main one writes a checkpoint and runs on_checkpoint callbacks
        kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(hours=2))],
    )


def describe_launch(accelerator, cpu_fsdp: bool) -> str:
    """The first log line of every run: distributed type, processes, machines, precision."""
    world = accelerator.num_processes
    machines = max(1, world // int(os.environ.get("LOCAL_WORLD_SIZE") or world))
    kind = str(accelerator.distributed_type).split(".")[-1]
    if cpu_fsdp:
        kind = "FSDP (FSDP2 sharded over gloo on CPU by hf_transfer_seg.pretrain.sharding)"
    elif kind == "FSDP":
        kind = f"FSDP (FSDP{accelerator.state.fsdp_plugin.fsdp_version} by Accelerate)"
    return (f"distributed: {kind}, {world} process(es) on {machines} machine(s), device {accelerator.device.type}, "
            f"precision {accelerator.mixed_precision}")


def _weights_hash(model: torch.nn.Module) -> str:
    """A digest of the full weights (collective for a sharded model: every process gathers them)."""
    digest = hashlib.sha256()
    weights = sharding.full_state_dict(model, everywhere=True) if sharding.is_sharded(model) else model.state_dict()
    for name, tensor in sorted(weights.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _export_model(accelerator, model, config: PretrainConfig, num_classes: int):
    """A plain module with the full weights on the main process (None elsewhere). Collective under FSDP.

    FSDP2 (this run's CPU sharding, or Accelerate's on GPUs) gathers with ``sharding.full_state_dict``; FSDP1
    through Accelerate."""
    from accelerate.utils import DistributedType

    if sharding.is_sharded(model):
        state_dict = sharding.full_state_dict(model)  # every process takes part in gathering the shards
    elif accelerator.distributed_type == DistributedType.FSDP:
        state_dict = accelerator.get_state_dict(model)
    else:
        return accelerator.unwrap_model(model) if accelerator.is_main_process else None
    if not accelerator.is_main_process:
        return None
    plain = recipes.create_model(config, num_classes)
    plain.load_state_dict(state_dict)
    return plain


@torch.no_grad()
def evaluate(model, loader, accelerator, *, streaming: bool, channels_last: bool) -> tuple[float | None, float | None]:
    """Top-1 and top-5 accuracy (percent) over the whole validation set, all processes together."""
    if loader is None:
        return None, None
    net = accelerator.unwrap_model(model) if streaming else model
    was_training = net.training
    net.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=accelerator.device)
    for images, labels, _ in loader:
        images, labels = images.to(accelerator.device), labels.to(accelerator.device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with accelerator.autocast():
            logits = net(images)
        k = min(5, logits.shape[-1])
        hits = logits.topk(k, dim=-1).indices.eq(labels[:, None])
        correct = torch.stack([hits[:, :1].any(1), hits.any(1)], dim=1).float()
        if not streaming:
            correct = accelerator.gather_for_metrics(correct)
        sums += torch.cat([correct.sum(0).double(), torch.tensor([len(correct)], device=sums.device, dtype=torch.float64)])
    if streaming:
        sums = accelerator.reduce(sums, reduction="sum")
    net.train(was_training)
    top1, top5, count = sums.tolist()
    if count == 0:
        return None, None
    return round(100.0 * top1 / count, 4), round(100.0 * top5 / count, 4)


class CheckpointStep:
    """One scheduled checkpoint, on every process: evaluate, write the timm folder and its card into ``pending/``
    (main process), save the training state, hand the revision to the publisher.

    It also keeps what the card reports about the steps since the previous checkpoint: the training loss and the
    unreadable images skipped (:meth:`observe`).
    """

    def __init__(
        self, *, config: PretrainConfig, accelerator, model, val_loader, data, schedule, state: states.TrainerState,
        batches_per_epoch: int, publisher: Publisher | None, callbacks: list[Callable], wall: Callable[[], float],
        shards: sharding.Shards | None = None,
    ):
        self.config, self.accelerator, self.model, self.val_loader, self.data = config, accelerator, model, val_loader, data
        self.schedule, self.state, self.batches_per_epoch = schedule, state, batches_per_epoch
        self.publisher, self.callbacks, self.wall, self.shards = publisher, list(callbacks), wall, shards
        self.output_dir = Path(config.output_dir)
        self.data_config = recipes.data_config(config)
        self.debug_dir = os.environ.get(DEBUG_DIR_ENV)
        self.revisions: list[str] = []  # written by this run
        self.causes: dict[str, str] = {}  # revision -> why its card failed (staged with a fallback card, held back)
        self._reset_tallies()

    def _reset_tallies(self) -> None:
        self.loss_sum = torch.zeros((), device=self.accelerator.device)
        self.loss_count = 0
        self.skipped: set = set()

    def observe(self, loss: torch.Tensor, skipped=()) -> None:
        """Count one micro-batch's loss (and the images it skipped) towards the next checkpoint's card."""
        self.loss_sum += loss.detach()
        self.loss_count += 1
        self.skipped.update(skipped)

    def __call__(self, step: int) -> tuple[bool, str | None]:
        """Write the checkpoint of optimizer step ``step``; return whether a callback asked to stop, and why."""
        from accelerate.utils import broadcast_object_list

        epoch = self.schedule.checkpoint_steps[step]
        revision = revision_name(epoch)
        facts = self._facts(epoch)  # collective: evaluation and the loss / skipped-image reductions
        exported = _export_model(self.accelerator, self.model, self.config, self.data.num_classes)  # collective under FSDP
        stop, reason = self._stage(revision, epoch, facts, exported) if self.accelerator.is_main_process else (False, None)
        if self.debug_dir:
            Path(self.debug_dir).mkdir(parents=True, exist_ok=True)
            digest = _weights_hash(self.accelerator.unwrap_model(self.model))
            Path(self.debug_dir, f"rank{self.accelerator.process_index}-{revision}.sha256").write_text(digest)
        stop, reason = broadcast_object_list([stop, reason])
        state = self.state
        state.checkpoints.append(revision)
        self.revisions.append(revision)
        if stop:
            state.stopped_early = reason
        state.finished = stop or state.global_step >= self.schedule.total_steps
        state.wall_clock_seconds = self.wall()
        states.save(self.accelerator, self.output_dir, state, self.batches_per_epoch, shards=self.shards)
        if self.publisher is not None and revision not in self.causes and (pending_dir(self.output_dir) / revision).is_dir():
            self.publisher.submit(revision)
        return stop, reason

    def _facts(self, epoch: float) -> dict:
        """The checkpoint's ``hf_transfer_seg.training`` facts (every process takes part)."""
        from accelerate.utils import gather_object

        config, data, state, accelerator = self.config, self.data, self.state, self.accelerator
        top1, top5 = evaluate(self.model, self.val_loader, accelerator, streaming=data.streaming, channels_last=config.channels_last)
        counts = torch.stack([self.loss_sum.double(), torch.tensor(float(self.loss_count), device=self.loss_sum.device, dtype=torch.float64)])
        loss_total, n = accelerator.reduce(counts, reduction="sum").tolist()
        skipped = gather_object(sorted(self.skipped, key=str))
        state.skipped_images += len(set(map(str, skipped)))
        self._reset_tallies()
        return {
            "epoch": epoch,
            "global_step": state.global_step,
            "images_seen": state.images_seen,
            "recipe": config.recipe,
            "top1": top1,  # validation top-1 (%) on top1_dataset; imagenet_top1 only when that is ImageNet
            "top5": top5,
            "top1_dataset": data.dataset_id,
            **({"imagenet_top1": top1, "imagenet_top5": top5} if "imagenet" in str(data.dataset_id).lower() else {}),
            "train_loss": round(loss_total / n, 6) if n else None,
            "wall_clock_hours": round(self.wall() / 3600.0, 6),
            "code_version": code_version(),
            "dataset": data.dataset_id,
            "dataset_kind": data.kind,
            "synthetic": data.synthetic,
            "skipped_images": state.skipped_images,
            "encoder": config.encoder,
            "num_classes": data.num_classes,
            "image_size": config.image_size,
            "batch_size": config.batch_size,
            "peak_lr": config.peak_lr,
            "num_processes": accelerator.num_processes,
            "seed": config.seed,
            "normalize": config.normalize,
            "mean": list(self.data_config["mean"]),
            "std": list(self.data_config["std"]),
        }

    def _stage(self, revision: str, epoch: float, facts: dict, exported) -> tuple[bool, str | None]:
        """Main process: the checkpoint folder with its card, atomically into ``pending/`` (unless already pushed).

        Never loses the weights over the card: when the callbacks or the card fail (a plot that cannot be drawn, a
        value a card cannot hold), the folder is staged with a minimal card stating why (``card.fallback_card``),
        the cause is kept in :attr:`causes` and the revision is held back from the publisher: it stays in
        ``pending/`` for ``push-pending``. A full disk is not a card failure: :class:`DiskFullError`, with the
        training state and the checkpoints staged before left as they were."""
        config, data = self.config, self.data
        if config.repo_id and revision in read_ledger(self.output_dir, config.repo_id):
            log.info("%s is already on %s (ledger); not writing it again", revision, config.repo_id)
            return False, None
        decision: list = [False, None]

        def build(folder: Path) -> None:
            label_names = data.class_names if data.class_names and len(data.class_names) <= 100_000 else None
            save_checkpoint(
                exported,
                folder,
                data_config=self.data_config,
                extra_config={"label_names": label_names} if label_names else None,
                tag=revision,
            )
            try:
                extra, decision[0], decision[1] = run_callbacks(self.callbacks, folder, epoch, revision, facts)
                card = cards.apply_extra(cards.revision_card(config.repo_id, revision, facts), extra)
                text = cards.checked_text(card, f"the card of {revision}")
            except BaseException as exc:  # noqa: BLE001 - the weights are complete: keep them, say why the card is not
                if is_disk_full(exc):
                    raise
                if not isinstance(exc, Exception):  # interrupted (SystemExit, KeyboardInterrupt): staged, then raised
                    interrupted.append(exc)
                said = public_text(f"{type(exc).__name__}: {exc}", 300)
                self.causes[revision] = card_failure(said)
                log.debug("the card of %s failed", revision, exc_info=True)
                log.error("checkpoint %s: %s", revision, self.causes[revision])
                text = cards.fallback_card(config.repo_id, revision, facts, said)
            (folder / "README.md").write_text(text, encoding="utf-8")

        interrupted: list[BaseException] = []
        try:
            stage_checkpoint(self.output_dir, revision, build)
        except DiskFullError as exc:
            raise DiskFullError(f"{exc} {self._kept()}") from None
        except BaseException:
            discard_partial(self.output_dir, revision)  # a half-written folder is never left for push-pending
            raise
        if interrupted:
            raise interrupted[0]
        log.info(
            "checkpoint %s: step %d, top-1 %s, top-5 %s, loss %s", revision, self.state.global_step,
            facts["top1"], facts["top5"], facts["train_loss"],
        )
        return decision[0], decision[1]

    def _kept(self) -> str:
        """What a checkpoint that could not be written leaves as it was: the saved state and the staged checkpoints."""
        saved = states.latest_state(self.output_dir)
        staged = list_pending(self.output_dir)
        return (f"Kept as they were: {'the training state ' + saved.name if saved else 'no training state yet'} in "
                f"{states.state_root(self.output_dir)}, and {len(staged)} checkpoint(s) staged in "
                f"{pending_dir(self.output_dir)}{' (' + ', '.join(staged) + ')' if staged else ''}.")


def _check_run(config: PretrainConfig, accelerator) -> Path | None:
    """Refuse to clobber or misuse an existing run, and check the Hub before any work; the saved state, if any."""
    from accelerate.utils import broadcast_object_list

    output_dir = Path(config.output_dir)
    saved = states.latest_state(output_dir)
    if saved is not None and not config.resume:
        raise ConfigError(
            f"{output_dir} already holds a training state ({saved.name}); pass --resume to continue it, or choose "
            "another --output-dir"
        )
    if config.resume:
        check_resume_compatible(config, output_dir / "run_config.json")
    problem = None
    if accelerator.is_main_process and config.repo_id:
        try:
            try:
                ensure_repo(config.repo_id, private=config.private)  # created private when asked
            except Exception:  # noqa: BLE001 - check_write_access below names the problem and the fix
                pass
            check_write_access(config.repo_id)
        except Exception as exc:  # noqa: BLE001 - every process must learn about it
            problem = f"{type(exc).__name__}: {redact(exc)}"
    problem = broadcast_object_list([problem])[0]
    if problem:
        raise ConfigError(f"cannot push checkpoints to {config.repo_id}: {problem}")
    return saved


def _start_publisher(config: PretrainConfig) -> Publisher | None:
    """The background publisher of the main process (None without --repo-id), with earlier pending pushes queued."""
    output_dir = Path(config.output_dir)
    if not config.repo_id:
        log.warning(
            "no --repo-id: checkpoints stay local in %s; push them later with `hf-transfer-seg push-pending "
            "--output-dir %s --repo-id <namespace/name>`", pending_dir(output_dir), output_dir,
        )
        return None
    publisher = Publisher(output_dir, config.repo_id, attempts=config.push_attempts, delay=config.push_retry_delay)
    earlier = publisher.submit_pending()  # push-pending, run automatically at every start
    if earlier:
        log.info("pushing %d checkpoint(s) left pending by an earlier run: %s", len(earlier), ", ".join(earlier))
    return publisher


def run_pretraining(config: PretrainConfig, callbacks: list[Callable] = ()) -> PretrainResult:
    """Train ``config.encoder`` as the config says; see the module docstring and ``hooks`` for callbacks.

    The publisher is a context manager: however training ends (done, stopped, or an exception), its exit
    delivers the queued pushes, and what it cannot deliver stays in ``pending/`` for ``push-pending``.
    """
    from accelerate.utils import set_seed

    accelerator = _make_accelerator(config)
    main = accelerator.is_main_process
    quiet_libraries("accelerate", "huggingface_hub")
    if not main:
        logging.getLogger("hf_transfer_seg").setLevel(logging.WARNING)
    cpu_fsdp = sharding.cpu_mode(accelerator)  # FSDP asked for on CPU: shard here (or refuse in one line)
    log.info("%s", describe_launch(accelerator, cpu_fsdp))
    output_dir = Path(config.output_dir)
    world = accelerator.num_processes
    micro = micro_batch(config, world)
    set_seed(config.seed)  # the same initial weights on every process
    saved = _check_run(config, accelerator)

    # ---- data, model, optimisation
    with accelerator.main_process_first():  # one process downloads/prepares a Hub dataset, the others reuse the cache
        data = build_data(config, accelerator)
    for note in data.notes:
        log.warning(note)
    model = recipes.create_model(config, data.num_classes)
    set_seed(config.seed, device_specific=True)  # but different dropout/drop-path/Mixup draws per process
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.FSDP:  # Accelerate shards it in prepare: refuse what it cannot wrap
        sharding.check_model(accelerator.state.fsdp_plugin, model, config.encoder)
    shards = None
    if cpu_fsdp:  # sharded before the optimizer sees its parameters; neither goes through prepare (that would be DDP)
        from accelerate.optimizer import AcceleratedOptimizer

        model = sharding.shard(accelerator, model, config.encoder)
        optimizer = recipes.optimizer(config, model)
        shards = sharding.Shards(model, optimizer)  # saved and resumed by state.save/load with its shards
        optimizer = AcceleratedOptimizer(optimizer, device_placement=False)  # steps only when gradients sync
    else:
        optimizer = recipes.optimizer(config, model)
    train_dl, val_dl, streaming_batches = build_loaders(config, data, micro, accelerator)
    dali = config.data_path == "dali"  # its loader shards, shuffles and resumes itself (data.dali.EpochLoader)
    if data.streaming or dali:
        if not cpu_fsdp:
            model, optimizer = accelerator.prepare(model, optimizer)
        batches_per_epoch = streaming_batches if data.streaming else len(train_dl)
        if dali and val_dl is not None:
            val_dl = accelerator.prepare(val_dl)
    else:
        if cpu_fsdp:
            train_dl = accelerator.prepare(train_dl)
        else:
            model, optimizer, train_dl = accelerator.prepare(model, optimizer, train_dl)
        val_dl = accelerator.prepare(val_dl) if val_dl is not None else None
        batches_per_epoch = len(train_dl)
    prep = batch_prep(config, accelerator.device)  # fast data path: uint8 batches normalised/erased on the device
    val_dl = prepared_val(val_dl, prep)
    schedule = recipes.plan_schedule(config, math.ceil(batches_per_epoch / config.grad_accum))
    scheduler = recipes.scheduler(config, optimizer, schedule)
    accelerator.register_for_checkpointing(scheduler)
    mixup = recipes.mixup(config, data.num_classes)
    criterion = recipes.criterion(config)

    state = states.TrainerState()
    if config.resume and saved is not None:
        state = states.load(accelerator, saved, shards=shards)
    elif config.resume:
        log.warning("--resume: no saved state in %s, starting from scratch", output_dir)
    if main:
        save_run_config(config, output_dir / "run_config.json")
    result = PretrainResult(global_step=state.global_step)

    publisher = _start_publisher(config) if main else None
    with publisher if publisher is not None else contextlib.nullcontext():
        if state.finished:
            log.info("the run in %s already finished at step %d; nothing to train", output_dir, state.global_step)
        elif main:
            log.info(
                "%s, %s recipe, %s data (%s, data path %s), %d classes; %d process(es) x %d images x %d accumulation = batch %d; "
                "%d steps/epoch, %d steps, checkpoints at epochs %s",
                config.encoder, config.recipe, "synthetic" if data.synthetic else "real", data.dataset_id, config.data_path, data.num_classes,
                world, micro, config.grad_accum, config.batch_size, schedule.updates_per_epoch, schedule.total_steps,
                ", ".join(f"{e:g}" for e in schedule.checkpoint_steps.values()),
            )

        step_delay = float(os.environ.get(STEP_DELAY_ENV) or 0)
        started = time.monotonic()
        wall_base = state.wall_clock_seconds

        def wall() -> float:
            return wall_base + time.monotonic() - started

        checkpoint = CheckpointStep(
            config=config, accelerator=accelerator, model=model, val_loader=val_dl, data=data, schedule=schedule,
            state=state, batches_per_epoch=batches_per_epoch, publisher=publisher, callbacks=callbacks, wall=wall,
            shards=shards,
        )
        result.revisions = checkpoint.revisions
        scheduler.step_update(state.global_step)
        model.train()
        images_at_start = state.images_seen
        loop_started, loop_cpu_started = time.perf_counter(), time.process_time()
        progress = tqdm(total=schedule.total_steps, initial=state.global_step, disable=not main, desc="pretrain", unit="step")
        stop = state.finished  # a finished run (resumed) trains nothing
        with states.StopSignals() as signals:
            while state.global_step < schedule.total_steps and not stop:
                if data.streaming:
                    data.train.set_epoch(state.epoch)
                else:
                    train_dl.set_epoch(state.epoch)
                if dali:  # a mid-epoch resume starts its file list at the first batch not trained on
                    loader = train_dl.from_batch(state.batch_in_epoch)
                elif state.batch_in_epoch and not data.streaming:
                    loader = accelerator.skip_first_batches(train_dl, state.batch_in_epoch)
                else:
                    loader = train_dl
                to_skip = state.batch_in_epoch if data.streaming else 0
                for images, labels, skipped in loader:
                    if to_skip:
                        to_skip -= 1
                        continue
                    if data.streaming:
                        if state.batch_in_epoch >= batches_per_epoch:
                            break
                        if torch.is_tensor(images):  # an encoded batch (--decode gpu) is moved by prep
                            images = images.to(accelerator.device, non_blocking=True)
                        labels = labels.to(accelerator.device, non_blocking=True)
                    if prep is not None:  # fast data path: uint8 -> normalised (+ erased) on the device
                        images = prep(images)
                        skipped = [*(skipped or ()), *prep.take_skipped()]
                    state.batch_in_epoch += 1
                    state.images_seen += len(images) * world
                    if config.channels_last:
                        images = images.contiguous(memory_format=torch.channels_last)
                    targets = labels
                    if mixup is not None:
                        images, targets = mixup(images, labels)
                    with accelerator.accumulate(model):
                        with accelerator.autocast():
                            loss = criterion(model(images), targets)
                        accelerator.backward(loss)
                        if config.clip_grad and accelerator.sync_gradients:
                            accelerator.clip_grad_norm_(model.parameters(), config.clip_grad)
                        optimizer.step()
                        optimizer.zero_grad(set_to_none=True)
                    checkpoint.observe(loss, ((state.epoch, s) if data.streaming else s for s in skipped or ()))
                    if not accelerator.sync_gradients:
                        continue
                    state.global_step += 1
                    scheduler.step_update(state.global_step)
                    progress.update(1)
                    if step_delay:
                        time.sleep(step_delay)
                    if main and config.log_every and state.global_step % config.log_every == 0:
                        progress.set_postfix(loss=f"{loss.item():.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
                    if state.global_step in schedule.checkpoint_steps:
                        tick, cpu_tick = time.perf_counter(), time.process_time()
                        stop, reason = checkpoint(state.global_step)
                        result.checkpoint_seconds += time.perf_counter() - tick
                        result.checkpoint_cpu_seconds += time.process_time() - cpu_tick
                        if stop:
                            result.stopped_early = reason
                            log.warning("stopping after %s: %s", revision_name(schedule.checkpoint_steps[state.global_step]), reason)
                    if not stop and (world == 1 or state.global_step % STOP_SYNC_EVERY == 0):
                        flag = torch.tensor([1.0 if signals.requested else 0.0], device=accelerator.device)
                        if world > 1:
                            flag = accelerator.reduce(flag, reduction="sum")
                        if flag.item() > 0:
                            state.wall_clock_seconds = wall()
                            states.save(accelerator, output_dir, state, batches_per_epoch, shards=shards)
                            result.exit_code = signals.exit_code or 143
                            stop = True
                            log.warning("state saved at step %d; continue with --resume", state.global_step)
                    if stop or state.global_step >= schedule.total_steps:
                        break
                if not stop and state.global_step < schedule.total_steps:  # the epoch's data is used up
                    state.epoch, state.batch_in_epoch = state.epoch + 1, 0
        progress.close()
        result.loop_seconds = time.perf_counter() - loop_started
        result.loop_cpu_seconds = time.process_time() - loop_cpu_started
        result.images_trained = state.images_seen - images_at_start
        if main and result.images_trained:
            log.info(
                "trained on %d images in %.1fs (%.1f images/s; %.1fs of it in checkpoints)",
                result.images_trained, result.loop_seconds, result.images_per_second, result.checkpoint_seconds,
            )

        if not state.finished and not result.exit_code:
            state.finished = True
            state.wall_clock_seconds = wall()
            states.save(accelerator, output_dir, state, batches_per_epoch, shards=shards)
        result.global_step, result.finished = state.global_step, state.finished
        accelerator.wait_for_everyone()
        accelerator.end_training()  # the other processes may exit now; only the main one waits for the network
        if publisher is not None:
            log.info("waiting for checkpoint pushes to finish")
    return _finish(accelerator, publisher, result, config, checkpoint.causes)


def _finish(accelerator, publisher: Publisher | None, result: PretrainResult, config: PretrainConfig,
            card_causes: dict[str, str]) -> PretrainResult:
    """The result, with the checkpoints not on the Hub (the publisher has closed: its exit delivered what it could)
    and why: a failed push, or a card that failed (``card_causes``; those were held back from the publisher)."""
    output_dir = Path(config.output_dir)
    if publisher is not None:
        result.pending = publisher.pending
        causes = {**publisher.causes, **card_causes}
        result.causes = {r: c for r, c in causes.items() if r in result.pending}
        if result.pending:
            log.error(
                "%d checkpoint(s) are not on the Hub yet: %s. They are safe in %s; %s",
                len(result.pending), ", ".join(result.pending), pending_dir(output_dir),
                delivery_hint(output_dir, config.repo_id, result.causes),
            )
    elif accelerator.is_main_process:
        result.pending = list_pending(output_dir)
        result.causes = {r: c for r, c in card_causes.items() if r in result.pending}
    return result
