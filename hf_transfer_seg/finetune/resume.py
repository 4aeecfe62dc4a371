"""Resume a fine-tune inside a run: the state after each epoch, in safetensors, in the output folder.

``<output-dir>/resume/epoch-NNNN/`` holds ``model.safetensors`` (every tensor of the U-Net),
``optimizer.safetensors`` (SGD's momentum buffers, by parameter position), ``rng.safetensors``
(torch's global generator and the loader's shuffling generator) and ``state.json`` (epoch, scheduler,
history, metrics so far, and the run's identity). Each epoch's folder is written under a temporary name and
renamed when complete, so a process killed while saving leaves the previous epoch intact; older epochs
are removed after the rename. Nothing here is pickled (accelerate's ``save_state`` pickles the optimizer and
the random states, which is why it is not used).

A resume refuses state written by another run (other recipe, seed, encoder commit, target or split): it
would silently mix two experiments.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from hf_transfer_seg.errors import ConfigError

log = logging.getLogger(__name__)

FOLDER = "resume"


def run_identity(config, encoder: dict[str, Any], target_key: str, split: dict[str, Any]) -> dict[str, Any]:
    """What must match for a saved state to continue this run."""
    return {
        "recipe": json.loads(json.dumps(config.recipe(), default=str)), "seed": config.seed,
        "encoder_sha": encoder.get("sha"), "architecture": encoder.get("architecture"), "target": target_key,
        "val": list(split.get("val") or []),
    }


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
    tensors, plain = {}, {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                plain[f"{index}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "plain": plain}


def save(output_dir: str | Path, *, epoch: int, model: torch.nn.Module, optimizer, scheduler, generator: torch.Generator,
         identity: dict[str, Any], progress: dict[str, Any]) -> Path:
    """Write the state after ``epoch`` (atomically, by folder rename) and drop older epochs."""
    from safetensors.torch import save_file

    root = Path(output_dir) / FOLDER
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"epoch-{epoch:04d}"
    tmp = root / f".epoch-{epoch:04d}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(weights, tmp / "model.safetensors")
    opt_tensors, opt_rest = _optimizer_tensors(optimizer)
    save_file(opt_tensors, tmp / "optimizer.safetensors")
    save_file({"torch": torch.get_rng_state(), "loader": generator.get_state()}, tmp / "rng.safetensors")
    (tmp / "state.json").write_text(json.dumps({
        "epoch": epoch, "identity": identity, "optimizer": opt_rest, "scheduler": scheduler.state_dict(), **progress,
    }, default=str))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in root.glob("epoch-*"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest(output_dir: str | Path) -> Path | None:
    """The newest complete state folder under ``output_dir``, None when there is none."""
    root = Path(output_dir) / FOLDER
    done = sorted(p for p in root.glob("epoch-*") if (p / "state.json").is_file()) if root.is_dir() else []
    return done[-1] if done else None


def load(folder: Path, *, model: torch.nn.Module, optimizer, scheduler, generator: torch.Generator,
         identity: dict[str, Any]) -> dict[str, Any]:
    """Restore a saved state into the given objects; returns the saved progress (epoch, history, metrics...)."""
    from safetensors.torch import load_file

    state = json.loads((folder / "state.json").read_text())
    saved = state.get("identity") or {}
    differ = sorted(k for k in identity if saved.get(k) != identity[k])
    if differ:
        raise ConfigError(
            f"the resume state in {folder.parent} was written by another run (different {', '.join(differ)}); "
            "use the same flags as the interrupted run, or another --output-dir to start afresh"
        )
    model.load_state_dict(load_file(folder / "model.safetensors"), strict=True)
    tensors = load_file(folder / "optimizer.safetensors")
    per_param: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        per_param.setdefault(int(index), {})[name] = value
    for key, value in state["optimizer"]["plain"].items():
        index, name = key.split(".", 1)
        per_param.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": per_param, "param_groups": state["optimizer"]["param_groups"]})
    scheduler.load_state_dict(state["scheduler"])
    rng = load_file(folder / "rng.safetensors")
    torch.set_rng_state(rng["torch"])
    generator.set_state(rng["loader"])
    return state


def clear(output_dir: str | Path) -> None:
    """Remove the resume state once the run's results are written."""
    shutil.rmtree(Path(output_dir) / FOLDER, ignore_errors=True)
