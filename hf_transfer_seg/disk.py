"""Local folders the tools write to: checked before work starts, and a full disk turned into a clear error.

A checkpoint or training state that cannot be written because the disk is full is not a bug: the run
stops with :class:`~hf_transfer_seg.errors.DiskFullError` saying how much is free, what to delete and
that ``--resume`` continues from the last state saved (the half-written folder is removed).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path
from typing import Iterator

from hf_transfer_seg.errors import ConfigError, DiskFullError

_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_FULL_TEXT = ("No space left on device", "Disk quota exceeded", "os error 28", "os error 122")


def is_disk_full(exc: BaseException) -> bool:
    """True when ``exc`` or anything it was raised from is a full disk (also safetensors' Rust errors)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
            return True
        if any(text in str(exc) for text in _FULL_TEXT):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_mib(path: str | Path) -> float | None:
    try:
        return shutil.disk_usage(_existing(Path(path))).free / (1 << 20)
    except OSError:
        return None


@contextlib.contextmanager
def disk_full_is_clean(output_dir: str | Path, what: str, *, partial: str | Path | None = None) -> Iterator[None]:
    """Turn a full disk inside the block into :class:`DiskFullError`; remove ``partial`` (a half-written folder)."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - only a full disk is translated; anything else is re-raised
        if not is_disk_full(exc):
            raise
        if partial is not None:
            shutil.rmtree(partial, ignore_errors=True)
        free = free_mib(output_dir)
        free_text = f"{free:.1f} MiB free" if free is not None else "free space unknown"
        raise DiskFullError(
            f"the disk holding {output_dir} is full ({free_text}) while saving {what}; the half-written files were "
            f"removed. Free space there (checkpoints already on the Hub in {output_dir}/checkpoints, old runs, "
            "~/.cache/huggingface) or choose another --output-dir, then run the same command again with --resume: "
            "it continues from the last saved training state and no checkpoint is lost."
        ) from None


def check_writable_dir(path: str | Path, flag: str = "--output-dir") -> Path:
    """Create ``path`` if needed and prove a file can be written in it; ConfigError/DiskFullError otherwise."""
    path = Path(path)
    probe = path / f".write-test-{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFullError(f"{flag} {path}: the disk is full; free space there or choose another folder") from None
        reason = exc.strerror or str(exc)
        if isinstance(exc, (NotADirectoryError, FileExistsError)):
            reason += " (a part of the path is a file, not a folder)"
        raise ConfigError(
            f"{flag} {path} cannot be written: {reason}. Choose a writable folder on a local disk "
            "(not under /proc or /sys, not read-only, not inside a file)."
        ) from None
    return path
