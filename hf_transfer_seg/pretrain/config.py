"""Pretraining options: defaults from the paper, a YAML recipe file, command-line flags, validation.

Precedence: built-in defaults < ``--config recipe.yaml`` < flags given on the command line.
Every option has the same name in the YAML file as the flag (``checkpoint_epochs`` or ``checkpoint-epochs``).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hf_transfer_seg.errors import ConfigError

# Checkpoint epochs of the paper (capped by --epochs).
PAPER_SCHEDULE = (1, 2, 5, 10, 20, 30, 40, 50, 75, 100, 125, 150, 175, 200, 250, 300)
PAPER_PEAK_LR, PAPER_BATCH, PAPER_WARMUP_EPOCHS, PAPER_EPOCHS = 4e-3, 4096, 20, 300
RECIPES = ("simple", "advanced")
NORMALIZATIONS = {"none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)), "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))}


@dataclass
class PretrainConfig:
    # model and recipe
    encoder: str = "resnet50"
    recipe: str = "simple"
    drop_path: float | None = None  # None: 0.1 for advanced, 0 for simple
    normalize: str = "none"  # paper: inputs only divided by 255
    # data
    dataset: str = "synthetic"
    dataset_config: str | None = None
    train_split: str | None = None
    val_split: str | None = None
    image_column: str | None = None
    label_column: str | None = None
    streaming: bool = False
    num_classes: int | None = None
    train_size: int | None = None  # cap on training images (None: all; synthetic default 2560)
    val_size: int | None = None
    image_size: int = 224
    num_workers: int | None = None  # None: the cores available per local process (fast path)
    data_path: str = "fast"  # "fast": uint8 decode/crop in workers, normalise/erase on the device; "legacy": PIL + float;
    # "dali": the simple recipe decoded and cropped by NVIDIA DALI (an extra), normalised on the device
    decode: str = "cpu"  # "gpu": nvJPEG batch decode on CUDA (fast path, simple recipe)
    # schedule
    epochs: float = 300.0
    checkpoint_epochs: list[float] | None = None  # None: the paper's schedule capped by epochs
    batch_size: int = 256  # global: per-process micro batch x processes x grad_accum
    grad_accum: int = 1
    lr: float | None = None  # None: 4e-3 * batch_size / 4096
    min_lr: float = 1e-6
    warmup_lr: float = 1e-6
    warmup_epochs: float | None = None  # None: 20 epochs of 300 kept in proportion (epochs / 15), at most 20
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    clip_grad: float | None = None
    early_stop: str | None = None  # [PREDICTOR:]RULE[=VALUE], see hf_transfer_seg.selection.parse_rule
    # hub and output
    repo_id: str | None = None
    private: bool = False
    output_dir: str = "pretrain-output"
    push_attempts: int = 3  # rounds of (push with its own retries), with push_retry_delay between rounds
    push_retry_delay: float = 30.0
    license: str | None = None  # ID or other:NAME (flag > recipe file > HF_TRANSFER_SEG_LICENSE), checked at start
    # execution
    resume: bool = False
    seed: int = 0
    compile: bool = False
    channels_last: bool = False
    log_every: int = 50

    # ------------------------------------------------------------------ derived values

    @property
    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else PAPER_PEAK_LR * self.batch_size / PAPER_BATCH

    @property
    def warmup(self) -> float:
        if self.warmup_epochs is not None:
            return self.warmup_epochs
        return min(float(PAPER_WARMUP_EPOCHS), self.epochs * PAPER_WARMUP_EPOCHS / PAPER_EPOCHS)

    @property
    def drop_path_rate(self) -> float:
        if self.drop_path is not None:
            return self.drop_path
        return 0.1 if self.recipe == "advanced" else 0.0

    @property
    def schedule(self) -> list[float]:
        if self.checkpoint_epochs is not None:
            return sorted(set(self.checkpoint_epochs))
        # the paper's epochs up to --epochs, and the last epoch itself so the final weights are always kept
        return sorted({float(e) for e in PAPER_SCHEDULE if e <= self.epochs} | {float(self.epochs)})

    @property
    def mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return NORMALIZATIONS[self.normalize]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(PretrainConfig)}
# Options that must not change when a run is resumed (the saved state would not fit).
RESUME_FIXED = ("encoder", "recipe", "dataset", "num_classes", "image_size", "batch_size", "grad_accum", "seed")


def parse_epochs(value: Any) -> list[float]:
    """``"0.5,1,1.5"`` or a YAML list into sorted positive epochs."""
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    epochs = []
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        try:
            epoch = float(text)
        except ValueError as exc:
            raise ConfigError(f"checkpoint epoch {text!r} is not a number; use e.g. --checkpoint-epochs 0.5,1,2") from exc
        if not math.isfinite(epoch) or epoch <= 0:
            raise ConfigError(f"checkpoint epoch {text!r} must be > 0")
        epochs.append(epoch)
    if not epochs:
        raise ConfigError("--checkpoint-epochs is empty; give a comma list such as 1,2,5")
    return sorted(set(epochs))


MAX_RECIPE_BYTES = 1 << 20  # a recipe is a few hundred bytes; anything over 1 MiB is not one


def load_yaml(path: str | Path) -> dict[str, Any]:
    """The options of a recipe file: a UTF-8 YAML mapping of at most :data:`MAX_RECIPE_BYTES` (ConfigError otherwise)."""
    import yaml

    from hf_transfer_seg import safe_yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe file {path} does not exist (or is not a regular file)")
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_RECIPE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"recipe file {path} cannot be read ({exc.strerror or exc}); check its permissions") from None
    if len(raw) > MAX_RECIPE_BYTES:
        raise ConfigError(f"recipe file {path} is over {MAX_RECIPE_BYTES // 1024} KiB: not a recipe (a YAML mapping of "
                          "option: value); check the --config path")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"recipe file {path} is not UTF-8 text (byte {exc.start} is {raw[exc.start:exc.start + 1]!r}): "
                          "is it a binary file? Give a YAML file of option: value lines") from None
    if "\x00" in text:
        raise ConfigError(f"recipe file {path} holds NUL bytes: it is a binary file, not YAML; check the --config path")
    try:
        data = safe_yaml.load(text) or {}
    except yaml.YAMLError as exc:
        said = " ".join(str(exc).split())[:300]
        raise ConfigError(f"recipe file {path} is not valid YAML: {said}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"recipe file {path} must hold a mapping of option: value")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def _field_type(name: str) -> type | None:
    hint = typing.get_type_hints(PretrainConfig)[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def _coerce(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name == "checkpoint_epochs":
        return parse_epochs(value)
    kind = _field_type(name)
    try:
        if kind is bool:
            if isinstance(value, str):
                return value.strip().lower() in ("1", "true", "yes", "on")
            return bool(value)
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        return kind(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"option {name} = {value!r} is not a valid {kind.__name__}") from exc


def build_config(overrides: dict[str, Any] | None = None, yaml_path: str | Path | None = None) -> PretrainConfig:
    """Defaults, then the YAML file, then ``overrides`` (flags given on the command line), validated.

    The license is the one option with a fourth source, the environment variable ``HF_TRANSFER_SEG_LICENSE``
    (below the recipe file); wherever it comes from it is checked here, before any work."""
    from hf_transfer_seg.cards.license import ENV as LICENSE_ENV

    values: dict[str, Any] = {}
    if yaml_path:
        values.update(load_yaml(yaml_path))
    recipe_license = "license" in values and values["license"] is not None
    values.update({k.replace("-", "_"): v for k, v in (overrides or {}).items()})
    flag_license = "license" in (overrides or {}) and overrides["license"] is not None
    if values.get("license") is None and os.environ.get(LICENSE_ENV):
        values["license"] = os.environ[LICENSE_ENV]
    source = "--license" if flag_license else f"license: in recipe file {yaml_path}," if recipe_license else f"{LICENSE_ENV}="
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        close = {u: difflib.get_close_matches(u, FIELDS, n=1) for u in unknown}
        hints = ", ".join(f"{u}" + (f" (did you mean {c[0]}?)" if c else "") for u, c in close.items())
        raise ConfigError(f"unknown pretraining option(s): {hints}. Valid options: {', '.join(FIELDS)}")
    license = values.pop("license", None)
    config = PretrainConfig(**{k: _coerce(k, v) for k, v in values.items()})
    if license is not None:
        from hf_transfer_seg.cards.license import parse_license

        parse_license(license, source)  # a non-string recipe value (license: 0) is refused as it is
        config.license = license.strip()
    validate(config)
    return config


def check_encoder(name: str) -> None:
    """Raise ConfigError naming close timm model names when ``name`` is not a timm architecture."""
    import timm

    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=6, cutoff=0.5)
    hint = f" Close names: {', '.join(close)}." if close else ""
    raise ConfigError(
        f"unknown encoder {name!r}: it is not a timm architecture.{hint} List them with "
        "`python -c \"import timm; print(timm.list_models('resnet*'))\"`."
    )


def _check_schedule(schedule: list[float]) -> None:
    """Every checkpoint epoch is > 0 and has a branch name of its own (names keep 6 decimals)."""
    from hf_transfer_seg.hub.revisions import parse_revision_name, revision_name

    names: dict[str, float] = {}
    for epoch in schedule:
        if not (math.isfinite(epoch) and epoch > 0):
            raise ConfigError(f"--checkpoint-epochs must be > 0, got {epoch:g}")
        name = revision_name(epoch)
        if parse_revision_name(name) <= 0:
            raise ConfigError(f"--checkpoint-epochs {epoch:g} is too small: its branch would be {name} (epoch 0); "
                              "use at least 0.000001")
        if name in names:
            raise ConfigError(f"--checkpoint-epochs {names[name]:g} and {epoch:g} would both be branch {name}; "
                              "epochs must differ in their first 6 decimals")
        names[name] = epoch


# option -> (lowest, highest, lowest excluded, highest excluded): the ONE range of each numeric option. The
# command-line flags get their argparse types from it (hf_transfer_seg.cli.pretrain), and values from a recipe
# file are checked against it (_check_bounds): YAML ``.nan``, ``.inf``, a negative or absurd number are refused
# the same way as on the command line, before any work.
BOUNDS: dict[str, tuple[float, float, bool, bool]] = {
    "drop_path": (0.0, 1.0, False, True), "lr": (0.0, 10.0, True, False), "min_lr": (0.0, 10.0, False, False),
    "warmup_lr": (0.0, 10.0, False, False), "warmup_epochs": (0.0, 100_000.0, False, False),
    "weight_decay": (0.0, 10.0, False, False), "label_smoothing": (0.0, 1.0, False, True),
    "clip_grad": (0.0, 1e6, True, False), "push_retry_delay": (0.0, 86_400.0, False, False),
    "epochs": (0.0, 100_000.0, True, False), "seed": (0, 2**32 - 1, False, False), "num_workers": (0, 512, False, False),
    "num_classes": (2, 100_000, False, False), "image_size": (8, 8192, False, False), "push_attempts": (1, 100, False, False),
    "log_every": (0, 10**9, False, False), "batch_size": (1, 2**20, False, False), "grad_accum": (1, 2**20, False, False),
    "train_size": (1, 10**9, False, False), "val_size": (1, 10**9, False, False),
}


def _check_bounds(config: PretrainConfig) -> None:
    for name, (lo, hi, lo_open, hi_open) in BOUNDS.items():
        value = getattr(config, name)
        if value is None or isinstance(value, bool):
            continue
        ok = isinstance(value, (int, float)) and math.isfinite(value)
        ok = ok and (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
        if not ok:
            ends = f"between {lo:g}{' (excluded)' if lo_open else ''} and {hi:g}{' (excluded)' if hi_open else ''}"
            raise ConfigError(f"--{name.replace('_', '-')} {value!r} is not allowed: give a finite value {ends} "
                              f"(on the command line or as {name}: in the recipe file)")


def _check_dali(config: PretrainConfig) -> None:
    """``--data-path dali``: the simple recipe only, and DALI installed (checked here, before any work)."""
    from hf_transfer_seg.data import dali

    if config.recipe != "simple":
        raise ConfigError(
            "--data-path dali builds the simple recipe only (the advanced recipe's RandAugment is PIL-based and has "
            "no DALI equivalent here); use --data-path fast for the advanced recipe"
        )
    if config.dataset == "synthetic" or config.streaming:
        raise ConfigError(f"--data-path dali reads image files and needs a local ImageNet-style folder (--dataset "
                          f"PATH with train/<class>/*), not {'streaming' if config.streaming else 'the synthetic set'}; "
                          "use --data-path fast")
    if not dali.available():
        raise ConfigError("--data-path dali needs NVIDIA DALI, which is not installed: pip install -e '.[dali]' "
                          "(or train with --data-path fast)")


def validate(config: PretrainConfig) -> None:
    _check_bounds(config)
    if config.recipe not in RECIPES:
        raise ConfigError(f"--recipe must be one of {', '.join(RECIPES)}, got {config.recipe!r}")
    if config.data_path not in ("fast", "legacy", "dali"):
        raise ConfigError(f"--data-path must be fast, legacy or dali, got {config.data_path!r}")
    if config.decode not in ("cpu", "gpu"):
        raise ConfigError(f"--decode must be cpu or gpu, got {config.decode!r}")
    if config.decode == "gpu" and (config.data_path not in ("fast", "dali") or config.recipe != "simple"):
        raise ConfigError(
            "--decode gpu needs --data-path fast or dali and the simple recipe (the advanced recipe's RandAugment is "
            "PIL-based and runs in the loader workers after decoding); use --decode cpu"
        )
    if config.data_path == "dali":
        _check_dali(config)
    if config.normalize not in NORMALIZATIONS:
        raise ConfigError(f"--normalize must be one of {', '.join(NORMALIZATIONS)}, got {config.normalize!r}")
    if not (config.epochs > 0 and math.isfinite(config.epochs)):
        raise ConfigError(f"--epochs must be > 0, got {config.epochs}")
    if config.batch_size < 1 or config.grad_accum < 1:
        raise ConfigError("--batch-size and --grad-accum must be >= 1")
    if config.image_size < 8:
        raise ConfigError(f"--image-size {config.image_size} is too small (>= 8)")
    if config.peak_lr <= 0 or config.min_lr < 0 or config.weight_decay < 0:
        raise ConfigError("learning rates must be > 0 and weight decay >= 0")
    if config.warmup < 0 or config.warmup >= config.epochs:
        raise ConfigError(f"--warmup-epochs ({config.warmup:g}) must be >= 0 and below --epochs ({config.epochs:g})")
    for name in ("train_size", "val_size"):
        value = getattr(config, name, None)
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1 (leave it out to use every image), got {value}")
    _check_schedule(config.schedule)
    late = [e for e in config.schedule if e > config.epochs + 1e-9]
    if late:
        raise ConfigError(f"checkpoint epochs {late} are after the last epoch ({config.epochs:g}); raise --epochs")
    if config.num_classes is not None and config.num_classes < 2:
        raise ConfigError("--num-classes must be >= 2")
    if config.push_attempts < 1:
        raise ConfigError("--push-attempts must be >= 1")
    check_encoder(config.encoder)


def micro_batch(config: PretrainConfig, num_processes: int) -> int:
    """Per-process batch of one forward pass; the global batch must split evenly."""
    per_step = num_processes * config.grad_accum
    if config.batch_size % per_step:
        raise ConfigError(
            f"--batch-size {config.batch_size} (global) must be divisible by processes x --grad-accum = "
            f"{num_processes} x {config.grad_accum}"
        )
    micro = config.batch_size // per_step
    if config.recipe == "advanced" and micro % 2:
        raise ConfigError(
            f"the advanced recipe's Mixup/CutMix needs an even per-process batch, got {micro}; change --batch-size"
        )
    return micro


def save_run_config(config: PretrainConfig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config.to_dict(), indent=2))


def check_resume_compatible(config: PretrainConfig, path: Path) -> None:
    """Refuse to resume with options that do not fit the saved state."""
    if not path.is_file():
        return
    try:
        saved = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"--resume: {path} (the saved run's options) is not readable ({type(exc).__name__}); "
                          "restore it, or start a new run in another --output-dir") from None
    if not isinstance(saved, dict):
        raise ConfigError(f"--resume: {path} does not hold the saved run's options; start a new run in another --output-dir")
    changed = [f"{k}: saved {saved.get(k)!r}, now {getattr(config, k)!r}" for k in RESUME_FIXED if saved.get(k) != getattr(config, k)]
    if changed:
        raise ConfigError(
            "--resume with options that differ from the saved run (" + "; ".join(changed) + "). Use the same "
            "options, or a new --output-dir to start a new run"
        )
