"""Resumable training state: ``accelerator.save_state`` plus the loop's position, and SIGTERM/SIGINT handling.

``<output-dir>/state/step-NNNNNNNN/`` holds what ``accelerator.save_state`` writes (model, optimizer, grad
scaler, registered scheduler, RNG of every process) and ``trainer_state.json`` (epoch, batches consumed in it,
optimizer step, images seen, wall clock...). ``state/LATEST`` names the newest complete one; it is replaced
atomically after a save finished, so a kill in the middle of a save leaves the previous state usable.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import threading
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from hf_transfer_seg.disk import disk_full_is_clean

log = logging.getLogger(__name__)
TRAINER_STATE = "trainer_state.json"
RUN_ID = "RUN_ID"  # <output-dir>/RUN_ID: the run identity (names the Hub staging branches it creates)
_RUN_ID_FORMAT = re.compile(r"run-[0-9a-f]{12}")


@dataclass
class TrainerState:
    global_step: int = 0  # optimizer steps done
    epoch: int = 0  # current epoch (0-based)
    batch_in_epoch: int = 0  # batches of that epoch each process has consumed
    images_seen: int = 0
    wall_clock_seconds: float = 0.0
    skipped_images: int = 0  # unreadable images skipped so far (all processes)
    checkpoints: list[str] = field(default_factory=list)  # revisions written so far
    finished: bool = False
    stopped_early: str | None = None  # reason a callback gave for stopping

    def normalise(self, batches_per_epoch: int) -> None:
        """A position at the very end of an epoch is the start of the next one."""
        if batches_per_epoch and self.batch_in_epoch >= batches_per_epoch:
            self.epoch += 1
            self.batch_in_epoch = 0


def state_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "state"


def latest_state(output_dir: str | Path) -> Path | None:
    """The newest complete saved state, or None."""
    root = state_root(output_dir)
    pointer = root / "LATEST"
    if not pointer.is_file():
        return None
    path = root / pointer.read_text().strip()
    return path if (path / TRAINER_STATE).is_file() else None


def run_identity(output_dir: str | Path) -> str:
    """This run's identity, ``run-<12 hex>``: created once per ``--output-dir`` (kept across ``--resume``).

    Staging branches pushed by this run carry it in their names, so a resumed run (or ``push-pending``) can
    remove exactly the staging branches it left behind, never another run's.
    """
    path = Path(output_dir) / RUN_ID  # beside state/, not in it: state/ existing means "a saved state" to some callers
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        text = None
    if text is not None and _RUN_ID_FORMAT.fullmatch(text):
        return text
    if text is not None:
        log.warning("%s holds %r, not a run identity; writing a new one", path, text[:40])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{RUN_ID}.{os.getpid()}.tmp")
    tmp.write_text(f"run-{uuid.uuid4().hex[:12]}\n")
    try:
        if text is None:
            os.link(tmp, path)  # the first writer wins, also against a concurrent process
        else:
            os.replace(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_text().strip()


def read_trainer_state(path: Path) -> TrainerState:
    return TrainerState(**json.loads((path / TRAINER_STATE).read_text()))


def save(accelerator, output_dir: str | Path, state: TrainerState, batches_per_epoch: int = 0, *, shards=None) -> Path:
    """Save the full state on every process; the main process publishes it and removes older ones.

    ``shards`` (:class:`~hf_transfer_seg.pretrain.sharding.Shards`, a CPU FSDP run): the sharded model and
    optimizer, which Accelerate does not hold, are saved into the same folder, every process its own shards.

    The position is saved normalised (the end of an epoch is stored as the start of the next one); ``state``
    itself is not changed.
    """
    state = replace(state, checkpoints=list(state.checkpoints))
    state.normalise(batches_per_epoch)
    root = state_root(output_dir)
    path = root / f"step-{state.global_step:08d}"
    accelerator.wait_for_everyone()
    with disk_full_is_clean(output_dir, f"the training state at step {state.global_step}", partial=path):
        accelerator.save_state(str(path))
        if shards is not None:
            shards.save(path)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            (path / TRAINER_STATE).write_text(json.dumps(asdict(state), indent=2))
            tmp = root / "LATEST.tmp"
            tmp.write_text(path.name)
            os.replace(tmp, root / "LATEST")
        for old in root.glob("step-*"):
            if old != path:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    log.info("saved training state at step %d to %s", state.global_step, path)
    return path


def load(accelerator, path: Path, *, shards=None) -> TrainerState:
    accelerator.load_state(str(path))
    if shards is not None:
        shards.load(path)
    state = read_trainer_state(path)
    log.info("resumed from %s: step %d, epoch %d, batch %d", path, state.global_step, state.epoch, state.batch_in_epoch)
    return state


class StopSignals:
    """Turn SIGTERM/SIGINT into a flag the loop checks between steps (a second SIGINT interrupts at once)."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def _handle(self, signum, frame) -> None:  # noqa: ARG002 - signal handler signature
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum
        log.warning("received %s: saving the training state at the next step, then stopping", signal.Signals(signum).name)

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signal) if self.signal is not None else 0
