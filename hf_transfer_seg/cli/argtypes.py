"""argparse types shared by every subcommand: a bad value is refused while the command line is parsed.

Each factory returns a callable for ``add_argument(type=...)``. It raises ``argparse.ArgumentTypeError``
with a message naming the value and the fix; the parser (:class:`Parser`) prints it as ONE line
``error: argument --flag: ...`` and exits 2, before any download, model build or training starts.

Nothing here imports torch or huggingface_hub at module level: ``--device cuda:N`` imports torch (to
count the GPUs) and a repo id imports ``huggingface_hub.utils`` (its own validator) only when such a
flag is given.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import stat
from pathlib import Path
from typing import Callable

Error = argparse.ArgumentTypeError

# Upper bounds: far beyond any real use, low enough that a typo (an extra 0 or a pasted float) is refused
# before it becomes a 60 GB allocation or a run that never ends.
MAX_SEED = 2**32 - 1  # numpy's seeds; torch accepts more, but one seed drives both
MAX_IMAGE_SIDE = 8192
MAX_WORKERS = 512
MAX_CLASSES = 100_000
MAX_BOOTSTRAP = 1_000_000
MAX_COUNT = 10**9


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (``error: ...``) plus where to read the usage; exit 2."""

    def error(self, message: str):  # noqa: D401 - argparse's signature
        text = " ".join(str(message).split())  # one line, whatever the message held
        self.exit(2, f"error: {text} (see `{self.prog} --help`)\n")


def _named(fn: Callable, name: str) -> Callable:
    fn.__name__ = name  # argparse names the type in its own messages ("invalid <name> value")
    return fn


def _number(text: str, kind: str) -> float:
    value = str(text).strip()
    try:
        return float(value) if kind == "float" else _integer(value)
    except ValueError:
        raise Error(f"{text!r} is not {'a number' if kind == 'float' else 'a whole number'}") from None


def _integer(value: str) -> int:
    if len(value) > 30:  # int() of a 5,000-digit string is slow and never a real value
        raise ValueError(value)
    return int(value)


def _range_text(lo, hi, lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None:
        return f"between {lo:g} {'(excluded) ' if lo_open else ''}and {hi:g}{' (excluded)' if hi_open else ''}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo:g}"
    return f"{'<' if hi_open else '<='} {hi:g}"


def finite_float(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False) -> Callable[[str], float]:
    """A finite float in ``[lo, hi]`` (``lo_open``/``hi_open``: that end excluded); NaN and inf are refused."""

    def parse(text: str) -> float:
        value = _number(text, "float")
        if not math.isfinite(value):
            raise Error(f"{text!r} is not a finite number; give a value {_range_text(lo, hi, lo_open, hi_open)}")
        too_low = lo is not None and (value <= lo if lo_open else value < lo)
        too_high = hi is not None and (value >= hi if hi_open else value > hi)
        if too_low or too_high:
            raise Error(f"{text!r} is out of range; give a value {_range_text(lo, hi, lo_open, hi_open)}")
        return value

    return _named(parse, "number")


def bounded_int(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    """A whole number in ``[lo, hi]``."""

    def parse(text: str) -> int:
        value = _number(text, "int")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise Error(f"{text!r} is out of range; give a whole number {_range_text(lo, hi, False, False)}")
        return value

    return _named(parse, "integer")


def float_pair(what: str = "LO,HI", *, ordered: bool = True) -> Callable[[str], str]:
    """Two finite numbers ``A,B`` (with ``ordered``: B > A); the text is passed on unchanged."""

    def parse(text: str) -> str:
        parts = str(text).split(",")
        try:
            a, b = (float(p) for p in parts)
        except ValueError:
            raise Error(f"{text!r} is not two numbers {what} (e.g. 0,4095)") from None
        if not (math.isfinite(a) and math.isfinite(b)):
            raise Error(f"{text!r} holds a value that is not finite; give two finite numbers {what}")
        if ordered and not b > a:
            raise Error(f"{text!r} needs the second number above the first ({what})")
        return str(text).strip()

    return _named(parse, "pair")


def window_spec(text: str) -> str:
    """A CT window: a name (checked by the data layer against its list) or ``WIDTH,LEVEL`` in HU, finite, width > 0."""
    value = str(text).strip()
    if "," not in value:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{0,40}", value):
            raise Error(f"{text!r} is not a window; give a name (soft-tissue, lung, bone, bone-wide, brain) or WIDTH,LEVEL in HU (e.g. 400,40)")
        from hf_transfer_seg.data.intensity import CT_WINDOWS  # only when a name is given

        if value.lower() not in CT_WINDOWS:
            raise Error(f"{text!r} is not a known window; use one of {', '.join(CT_WINDOWS)} or WIDTH,LEVEL in HU (e.g. 400,40)")
        return value
    try:
        width, level = (float(p) for p in value.split(","))
    except ValueError:
        raise Error(f"{text!r} is not WIDTH,LEVEL in HU (e.g. 400,40)") from None
    if not (math.isfinite(width) and math.isfinite(level)):
        raise Error(f"{text!r} holds a value that is not finite; give WIDTH,LEVEL in HU (e.g. 400,40)")
    if width <= 0:
        raise Error(f"{text!r} has width {width:g}; the width must be > 0 (e.g. 400,40)")
    return value


window_spec = _named(window_spec, "window")

_DEVICE = re.compile(r"(cpu|mps|cuda|xpu)(?::(\d{1,3}))?")


def device_spec(text: str) -> str:
    """``cpu``, ``cuda``, ``cuda:N`` (N below the number of visible GPUs), ``mps`` or ``xpu[:N]`` when present."""
    value = str(text).strip().lower()
    match = _DEVICE.fullmatch(value)
    if not match:
        raise Error(f"{text!r} is not a device this command can run on; use cpu, cuda or cuda:N (a visible GPU)")
    kind, index = match.group(1), match.group(2)
    if kind == "cpu":
        if index not in (None, "0"):
            raise Error(f"{text!r}: there is one CPU device; use cpu")
        return value
    import torch  # counting the accelerators needs it (only when one is named)

    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    elif kind == "xpu":
        count = torch.xpu.device_count() if hasattr(torch, "xpu") and torch.xpu.is_available() else 0
    else:
        count = 1 if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available() else 0
    if count == 0:
        raise Error(f"{text!r}: no {kind} device is available here; use cpu (or leave --device out)")
    if index is not None and int(index) >= count:
        raise Error(f"{text!r}: there are {count} {kind} device(s) (0..{count - 1}); use one of them or leave --device out")
    return value


device_spec = _named(device_spec, "device")


def revision_list(text: str) -> str:
    """``all`` or a comma list of branch names / epochs with at least one entry; the text is passed on."""
    value = str(text).strip()
    items = [p.strip() for p in value.split(",")]
    if not value or not any(items):
        raise Error(f"{text!r} names no revision; give 'all' or a comma list such as epoch-0005,20")
    if any(not p for p in items):
        raise Error(f"{text!r} has an empty entry; give 'all' or a comma list such as epoch-0005,20")
    for item in items:
        try:
            number = float(item)
        except ValueError:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", item) or ".." in item:
                raise Error(f"{item!r} is not a branch name or an epoch; give 'all' or a comma list such as epoch-0005,20") from None
            continue
        if not (math.isfinite(number) and number >= 0):
            raise Error(f"{item!r} is not an epoch (a finite number >= 0); give 'all' or a comma list such as epoch-0005,20")
    return value


revision_list = _named(revision_list, "revisions")


def _refuse_special(path: Path, text: str, *, directory_ok: bool = True, file_ok: bool = True) -> None:
    try:
        mode = path.stat().st_mode
    except OSError:
        return  # missing: the caller decides (a Hub id, a folder to create...)
    if stat.S_ISDIR(mode):
        if not directory_ok:
            raise Error(f"{text!r} is a folder; give a file")
        return
    if stat.S_ISREG(mode):
        if not file_ok:
            raise Error(f"{text!r} is a file, not a folder; give a folder (it is created if missing)")
        return
    raise Error(f"{text!r} is not a regular file or folder (a device, pipe or socket); give an image folder or file")


def target_spec(text: str) -> str:
    """A target: a folder, a file, a Hub dataset id or a built-in name. An existing path must be a regular file
    or a folder (``/dev/zero``, a FIFO... are refused: reading them never ends)."""
    value = str(text)
    if not value.strip():
        raise Error("an empty target; give a folder, a file, a Hub dataset id or a built-in name")
    _refuse_special(Path(value).expanduser(), value)
    return value


target_spec = _named(target_spec, "target")


def output_dir(text: str) -> str:
    """A folder that is written: not empty, not an existing file, its nearest existing parent writable."""
    value = str(text)
    if not value.strip():
        raise Error("an empty path; give a folder to write into")
    path = Path(value).expanduser()
    _refuse_special(path, value, file_ok=False)
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise Error(f"{value!r} is inside {str(probe)!r}, which is a file; give a folder")
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        raise Error(f"{value!r} cannot be written ({str(probe)!r} is not writable); give a writable folder")
    return value


output_dir = _named(output_dir, "folder")


def root_dir(text: str) -> str:
    """The local hub's root: a non-empty path that is a folder or can be created."""
    value = str(text)
    if not value.strip():
        raise Error("an empty path; give the folder holding the repositories, e.g. --root ./hub-root")
    return output_dir(value)


root_dir = _named(root_dir, "folder")


def _hub_repo_id(repo_id: str, text: str) -> None:
    if not repo_id or repo_id != repo_id.strip():
        raise Error(f"{text!r} is not a repo id (empty, or spaces around it); write owner/name")
    if any(ord(c) < 32 for c in repo_id):
        raise Error(f"{text!r} holds a control character (a newline?); write owner/name")
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        said = " ".join(str(exc).split())
        raise Error(f"{text!r} is not a valid Hub repo id ({said[:200]}); write owner/name with letters, digits, '-', '_', '.'") from None
    if repo_id.count("/") != 1:
        raise Error(f"{text!r} is not a repo id of the form owner/name")


def repo_id(text: str) -> str:
    """``owner/name`` as the Hub client accepts it (huggingface_hub's own validator), plus: exactly one ``/``."""
    _hub_repo_id(str(text), str(text))
    return str(text)


repo_id = _named(repo_id, "repo id")

# git check-ref-format, simplified: what a branch or tag name can never hold
_BAD_REF = re.compile(r"(^[/.-])|(\.\.)|(//)|([\x00-\x20~^:?*\[\\\x7f])|(@\{)|(/$)|(\.lock$)|(\.$)")


def model_spec(text: str) -> str:
    """``owner/name`` or ``owner/name@revision`` (a branch, tag or sha; not empty, no ``..``)."""
    value = str(text)
    repo, at, revision = value.partition("@")
    _hub_repo_id(repo, value)
    if at:
        if not revision:
            raise Error(f"{value!r} has nothing after '@'; write owner/name@revision (a branch, tag or sha) or owner/name")
        if "@" in revision or _BAD_REF.search(revision):
            raise Error(f"{value!r}: {revision!r} is not a branch, tag or commit sha (no '..', spaces, or ~^:?*[\\)")
    return value


model_spec = _named(model_spec, "model")


def license_id(text: str) -> str:
    """A license setting the Hub accepts (``ID`` or ``other:NAME``), checked by the one function every source of a
    license uses (:func:`hf_transfer_seg.cards.license.parse_license`); the text is passed on."""
    from hf_transfer_seg.cards.license import parse_license
    from hf_transfer_seg.errors import ConfigError

    try:
        parse_license(text, "")
    except ConfigError as exc:
        raise Error(str(exc).strip()) from None
    return str(text).strip()


license_id = _named(license_id, "license")


def _environment_checks() -> dict[str, Callable[[], object]]:
    """Environment variable -> the check its reader runs (the same function, so nothing reads it differently)."""
    from hf_transfer_seg.cards import license
    from hf_transfer_seg.data import limits

    return {
        license.ENV: lambda: os.environ.get(license.ENV) and license.parse_license(os.environ[license.ENV], f"{license.ENV}="),
        limits.ENV: limits.max_voxels,
    }


def check_environment() -> str | None:
    """The one-line error of the first hf-transfer-seg environment variable holding a bad value, None when all
    are fine: run by the command line before any work, as flags are checked while they are parsed."""
    from hf_transfer_seg.errors import ConfigError

    for check in _environment_checks().values():
        try:
            check()
        except ConfigError as exc:
            return f"error: {' '.join(str(exc).split())} (unset it or fix it, then run the command again)"
    return None


def port(text: str) -> int:
    return bounded_int(0, 65535)(text)


port = _named(port, "port")
