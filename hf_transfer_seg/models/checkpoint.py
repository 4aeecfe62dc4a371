"""Checkpoints in timm Hub format: ``config.json`` (architecture, num_classes, pretrained_cfg) + ``model.safetensors``.

Such a folder, pushed as a revision, loads with ``timm.create_model("hf-hub:REPO@REV", pretrained=True)``
and with ``transformers.AutoModel.from_pretrained(REPO, revision=REV)`` (timm wrapper). Nothing is
ever unpickled: a folder without ``model.safetensors`` is refused.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from hf_transfer_seg.errors import WeightsError

WEIGHTS_NAME = "model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# what a checkpoint revision is downloaded with: never a pickle file
CHECKPOINT_FILES = ["config.json", WEIGHTS_NAME, "README.md"]


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return getattr(model, "module", model)  # DDP / DataParallel


def save_checkpoint(
    model: torch.nn.Module,
    folder: str | Path,
    *,
    model_args: dict[str, Any] | None = None,
    data_config: dict[str, Any] | None = None,
    extra_config: dict[str, Any] | None = None,
    tag: str | None = None,
) -> Path:
    """Write ``model`` (a timm classifier) to ``folder`` in timm Hub format; return the folder.

    ``data_config`` (mean, std, input_size, interpolation, crop_pct...) goes into ``pretrained_cfg``
    so that everything loading the checkpoint preprocesses the same way. ``tag`` (the revision, e.g.
    ``epoch-0005``) replaces timm's default tag of the architecture (``r160_in1k``...), which would name
    weights these are not.
    """
    from timm.models import save_for_hf

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = _unwrap(model)
    save_for_hf(model, str(folder), model_args=model_args, data_config=data_config, safe_serialization=True)
    path = folder / "config.json"
    config = json.loads(path.read_text())
    # timm repeats num_classes inside model_args; transformers' timm wrapper passes its own num_classes too and
    # fails with "multiple values for keyword argument". The top-level num_classes is what both read.
    (config.get("model_args") or {}).pop("num_classes", None)
    if not config.get("model_args"):
        config.pop("model_args", None)
    if tag is not None:
        cfg = config.setdefault("pretrained_cfg", {})
        cfg["tag"] = tag
        for key in ("hf_hub_id", "url", "file", "source"):  # provenance of timm's published weights, not of these
            cfg.pop(key, None)
    config.update(extra_config or {})
    path.write_text(json.dumps(config, indent=2))
    return folder


def read_config(folder: str | Path) -> dict[str, Any]:
    """``config.json`` of a checkpoint folder, checked for the fields timm needs."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise WeightsError(f"{folder} has no config.json; is it a timm checkpoint (architecture + model.safetensors)?")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise WeightsError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise WeightsError(f"{path} is not a JSON object; expected timm's Hub format (architecture, model_args...)")
    if "architecture" not in config:
        raise WeightsError(f"{path} has no 'architecture' field; expected timm's Hub format")
    architecture = config["architecture"]
    if not isinstance(architecture, str) or not architecture.strip():
        raise WeightsError(f"{path}: 'architecture' must be a timm model name (a string), got {architecture!r:.80}")
    for key in ("model_args", "pretrained_cfg"):
        value = config.get(key)
        if value is not None and not (isinstance(value, dict) and all(isinstance(k, str) for k in value)):
            raise WeightsError(f"{path}: '{key}' must be a JSON object, got {type(value).__name__}")
    return config


def load_state_dict(folder: str | Path) -> dict[str, torch.Tensor]:
    """The safetensors weights of a checkpoint folder; pickle files are never read."""
    folder = Path(folder)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES) if folder.is_dir() else []
        hint = (
            f" It holds only pickle weights ({', '.join(pickles)}), which are never loaded because unpickling "
            "runs arbitrary code; convert them to safetensors and push again."
            if pickles
            else ""
        )
        raise WeightsError(f"no {WEIGHTS_NAME} in {folder}.{hint}")
    try:
        return load_file(str(weights), device="cpu")
    except Exception as exc:  # noqa: BLE001 - corrupt file: say which
        raise WeightsError(f"cannot read {weights}: {exc}") from exc


def missing_weights_reason(repo_id: str, sha: str, *, what: str | None = None, api: Any = None) -> str:
    """Why the revision at ``sha`` cannot be loaded: no ``model.safetensors`` (naming any pickle files it holds)."""
    from huggingface_hub import HfApi

    what = what or f"{repo_id}@{sha[:10]}"
    try:
        files = (api or HfApi()).list_repo_files(repo_id, revision=sha)
    except Exception:  # noqa: BLE001 - only used to word the reason
        files = []
    pickles = sorted(f for f in files if f.endswith(PICKLE_SUFFIXES))
    if pickles:
        return (
            f"{what} has no {WEIGHTS_NAME}, only pickle weights ({', '.join(pickles)}), which are never "
            "downloaded or unpickled; convert them to safetensors and push the revision again"
        )
    return f"{what} has no {WEIGHTS_NAME}; push the checkpoint in timm Hub format (config.json + {WEIGHTS_NAME})"


def download_checkpoint(
    repo_id: str,
    sha: str,
    *,
    what: str | None = None,
    allow_patterns: list[str] | None = None,
    cache_dir: str | Path | None = None,
    api: Any = None,
) -> Path:
    """Local folder with the checkpoint of ``repo_id`` at commit ``sha`` (safetensors only; pickles never fetched).

    :class:`WeightsError` when the revision has no ``model.safetensors``, naming its pickle files if any.
    """
    from hf_transfer_seg import hub

    folder = hub.download_revision(repo_id, sha, allow_patterns=allow_patterns or CHECKPOINT_FILES, cache_dir=cache_dir)
    if not (folder / WEIGHTS_NAME).is_file():
        raise WeightsError(missing_weights_reason(repo_id, sha, what=what, api=api))
    return folder


def load_encoder(
    folder: str | Path,
    *,
    features_only: bool = True,
    out_indices: tuple[int, ...] | None = None,
    check_finite: bool = True,
    **kwargs: Any,
) -> torch.nn.Module:
    """Build the timm model of a checkpoint folder and load its weights.

    With ``features_only`` (default) the model returns the list of feature stages, as a U-Net
    encoder or the robustness score needs. ``pretrained_cfg`` of the checkpoint is kept on the
    model (``model.pretrained_cfg``), including the normalisation it was trained with.
    """
    import timm

    config = read_config(folder)
    state_dict = load_state_dict(folder)
    if check_finite:
        bad = [k for k, v in state_dict.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise WeightsError(f"weights of {folder} contain NaN/Inf in {len(bad)} tensors (first: {bad[0]})")
    pretrained_cfg = dict(config.get("pretrained_cfg") or {})
    # Load from the in-memory state dict only: no URL, no hub id, no file that timm might unpickle.
    pretrained_cfg.update(state_dict=state_dict, source="", file=None, url=None, hf_hub_id=None)
    model_args = dict(config.get("model_args") or {})
    model_args.update(kwargs)
    if features_only:
        model_args["features_only"] = True
        if out_indices is not None:
            model_args["out_indices"] = out_indices
        # An encoder has no classifier: build it without one (num_classes=0) and drop exactly the classifier
        # tensors the checkpoint names (pretrained_cfg["classifier"]), so timm loads strictly: any other missing
        # or unexpected key fails (WeightsError below) instead of timm's "Missing keys (fc.weight, fc.bias)" line.
        classifiers = pretrained_cfg.get("classifier")
        if classifiers and int(config.get("num_classes") or pretrained_cfg.get("num_classes") or 0) > 0:
            for name in (classifiers,) if isinstance(classifiers, str) else classifiers:
                state_dict.pop(f"{name}.weight", None)
                state_dict.pop(f"{name}.bias", None)
            model_args["num_classes"] = 0
            pretrained_cfg["num_classes"] = 0
    else:
        model_args.setdefault("num_classes", config.get("num_classes"))
    try:
        model = timm.create_model(
            config["architecture"], pretrained=True, pretrained_cfg_overlay=pretrained_cfg, **model_args
        )
    except RuntimeError as exc:
        raise WeightsError(f"weights in {folder} do not fit {config['architecture']}: {exc}") from exc
    except (TypeError, ValueError, KeyError, AttributeError, AssertionError) as exc:  # e.g. a model_args key timm rejects
        raise WeightsError(
            f"config.json in {folder} cannot build {config['architecture']} "
            f"(model_args {sorted(config.get('model_args') or {})}): {type(exc).__name__}: {exc}"
        ) from exc
    model.pretrained_cfg = {k: v for k, v in pretrained_cfg.items() if k != "state_dict"}
    return model


def normalization(model_or_cfg: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) that a checkpoint was trained with (identity when it records none)."""
    cfg = getattr(model_or_cfg, "pretrained_cfg", model_or_cfg) or {}
    mean = tuple(float(m) for m in cfg.get("mean", (0.0, 0.0, 0.0)))
    std = tuple(float(s) for s in cfg.get("std", (1.0, 1.0, 1.0)))
    if any(not math.isfinite(s) or s <= 0 for s in std):
        raise WeightsError(f"checkpoint records an invalid normalisation std {std}")
    return mean, std
